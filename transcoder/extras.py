"""Poster and storyboard: planned here, produced as extra branches of the ladder's ffmpeg
(the decode is shared, so they cost almost nothing), and described by the WebVTT file
written here once the sprite exists.

Both branches hold a bounded number of pictures whatever the input: the poster's
``thumbnail`` at most ``POSTER_MAX_BATCH`` poster-sized frames, the storyboard one sprite
sheet (its ``fps`` is cut off by ``trim`` after ``count`` tiles). They read the decoded frames
before the ladder's rate conversion (ffmpeg._filter_graph), so a gap in the source's
timestamps cannot make them wait behind thousands of repeated frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.config import TranscodeConfig
from transcoder.ladder import RenditionPlan, even
from transcoder.probe import ProbeResult

POSTER_FILE = "poster.jpg"
STORYBOARD_FILE = "storyboard.jpg"
STORYBOARD_VTT = "storyboard.vtt"
POSTER_MAX_SIDE = 1280
POSTER_WINDOW = (0.10, 0.30)      # fraction of the duration searched for a representative frame
POSTER_WINDOW_MAX_S = 10.0
POSTER_SAMPLES_PER_S = 2
POSTER_MAX_BATCH = 24             # frames thumbnail may hold: 10 s at 2 a second, + the first
STORYBOARD_TARGET_TILES = 100
STORYBOARD_MAX_TILES = 600
JPEG_MAX_SIDE = 65_000            # JPEG cannot exceed 65535 pixels on a side
_NICE_INTERVALS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300)


@dataclass(frozen=True)
class PosterPlan:
    start: float
    end: float
    every_nth_frame: int
    batch: int
    width: int
    height: int
    filename: str = POSTER_FILE

    def filter(self) -> str:
        """Candidates: the first frame (so a one-frame "slides + audio" video still gets a
        poster) plus ~2 frames a second from 10-30 % in; ``thumbnail`` keeps the one closest
        to their average histogram, so a black intro frame loses to real content. ``select``
        comes first, so only candidates are scaled and held."""
        pick = (f"select='eq(n,0)+between(t,{self.start:.3f},{self.end:.3f})"
                f"*not(mod(n,{self.every_nth_frame}))'")
        return f"{pick},scale={self.width}:{self.height},setsar=1,thumbnail=n={self.batch}"


@dataclass(frozen=True)
class StoryboardPlan:
    interval: float
    count: int
    columns: int
    rows: int
    tile_width: int
    tile_height: int
    filename: str = STORYBOARD_FILE

    def filter(self) -> str:
        """One frame per interval (``fps`` repeats frames across gaps, so tile k always shows
        time k*interval even for variable-rate screen recordings), capped at ``count`` so an
        extra rounding frame can never start a second sheet."""
        return (f"fps=1000/{round(self.interval * 1000)},trim=end_frame={self.count},"
                f"scale={self.tile_width}:{self.tile_height},setsar=1,"
                f"tile={self.columns}x{self.rows}")

    def vtt(self, duration: float) -> str:
        cues = ["WEBVTT", ""]
        for i in range(self.count):
            start = i * self.interval
            end = min((i + 1) * self.interval, duration)
            if end <= start:
                break
            x, y = (i % self.columns) * self.tile_width, (i // self.columns) * self.tile_height
            cues += [f"{_timestamp(start)} --> {_timestamp(end)}",
                     f"{self.filename}#xywh={x},{y},{self.tile_width},{self.tile_height}", ""]
        return "\n".join(cues)


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def plan_poster(probe: ProbeResult, plans: list[RenditionPlan]) -> PosterPlan | None:
    if probe.video is None:
        return None
    top = max((p for p in plans if p.has_video), key=lambda p: p.width * p.height)
    scale = min(1.0, POSTER_MAX_SIDE / max(top.width, top.height))
    start = probe.duration * POSTER_WINDOW[0]
    end = min(probe.duration * POSTER_WINDOW[1], start + POSTER_WINDOW_MAX_S)
    fps = float(probe.video.fps)  # cut from the decoded source frames, at the top rung's size
    nth = max(1, round(fps / POSTER_SAMPLES_PER_S))
    candidates = 1 + math.ceil((end - start) * fps / nth) + 1
    # More candidates than the batch (a source denser than it declares) only means the
    # poster is chosen from the first batch.
    batch = min(POSTER_MAX_BATCH, max(2, candidates + 1))
    return PosterPlan(start, end, nth, batch, even(top.width * scale), even(top.height * scale))


def storyboard_interval(duration: float, cfg: TranscodeConfig) -> float:
    """The configured interval, else a round number giving at most ~100 tiles."""
    if cfg.storyboard_interval > 0:
        wanted = max(cfg.storyboard_interval, duration / STORYBOARD_MAX_TILES, 0.1)
        return math.ceil(wanted * 1000 - 1e-6) / 1000
    wanted = max(1.0, duration / STORYBOARD_TARGET_TILES)
    for step in _NICE_INTERVALS:
        if step >= wanted:
            return float(step)
    return float(60 * math.ceil(wanted / 60))


def plan_storyboard(probe: ProbeResult, cfg: TranscodeConfig) -> StoryboardPlan | None:
    if probe.video is None:
        return None
    tile_w = even(cfg.storyboard_width)
    tile_h = even(tile_w * probe.video.height / probe.video.width)
    interval = storyboard_interval(probe.duration, cfg)
    count = max(1, math.ceil(probe.duration / interval - 1e-6))
    columns = max(1, min(cfg.storyboard_columns, count, JPEG_MAX_SIDE // tile_w))
    rows = math.ceil(count / columns)
    if rows * tile_h > JPEG_MAX_SIDE:  # very tall portrait tiles: fewer, longer intervals
        count = columns * (JPEG_MAX_SIDE // tile_h)
        interval = math.ceil(probe.duration / count * 1000) / 1000
        rows = JPEG_MAX_SIDE // tile_h
    return StoryboardPlan(interval, count, columns, rows, tile_w, tile_h)
