"""Decide which renditions to produce for one source, from ``cfg.ladder``.

Rungs are named and sized by the short side so portrait and landscape sources get the same
quality steps (a 1080x1920 phone video gets "1080p" as 1080x1920). Nothing is ever upscaled:
a rung above the source is dropped, and a source smaller than every rung gets one rendition
at its own size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from models.config import Rung, TranscodeConfig
from transcoder.probe import ProbeResult

MAX_FPS = Fraction(60)
LOW_RUNG_MAX_FPS = Fraction(30)
LOW_RUNG_MAX_LINES = 432          # Apple: <= 30 fps up to 768x432
MAXRATE_FACTOR = 1.5              # peak allowed above the average target
BUFSIZE_FACTOR = 2.0              # VBV buffer, in multiples of maxrate
MIN_VIDEO_KBPS = 100
AUDIO_ONLY_NAME = "audio"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
# Frame rates players and encoders know; a VFR phone clip averaging 29.87 fps becomes 29.97.
_STANDARD_RATES = tuple(Fraction(n, d) for n, d in (
    (24000, 1001), (24, 1), (25, 1), (30000, 1001), (30, 1),
    (48, 1), (50, 1), (60000, 1001), (60, 1)))


@dataclass(frozen=True)
class RenditionPlan:
    name: str                  # also the output sub-directory
    width: int | None          # None for the audio-only rendition
    height: int | None
    fps: Fraction | None
    video_kbps: int | None     # ceiling (rate_control "quality") or target ("bitrate")
    audio_kbps: int
    quality: int | None = None  # x264 CRF under the ceiling

    @property
    def has_video(self) -> bool:
        return self.width is not None

    @property
    def maxrate_kbps(self) -> int:
        return math.ceil((self.video_kbps or 0) * MAXRATE_FACTOR)

    @property
    def bufsize_kbps(self) -> int:
        return math.ceil(self.maxrate_kbps * BUFSIZE_FACTOR)

    @property
    def frame_rate(self) -> float | None:
        return float(self.fps) if self.fps is not None else None


def even(value: float) -> int:
    """Nearest even integer, at least 2 (H.264 4:2:0 needs even dimensions)."""
    return max(2, 2 * round(value / 2))


def even_floor(value: float) -> int:
    return max(2, 2 * math.floor(value / 2))


def output_fps(source: Fraction, short_side: int) -> Fraction:
    """Source rate, capped by dropping every n-th frame evenly (50 -> 25, not 50 -> 30,
    which would judder)."""
    rate = _standardise(source)
    cap = LOW_RUNG_MAX_FPS if short_side <= LOW_RUNG_MAX_LINES else MAX_FPS
    divisor = 1
    while rate / divisor > cap:
        divisor += 1
    return rate / divisor


def _standardise(rate: Fraction) -> Fraction:
    nearest = min(_STANDARD_RATES, key=lambda std: abs(rate - std))
    if abs(rate - nearest) <= nearest / 100:
        return nearest
    return rate.limit_denominator(1001)


def _safe_name(name: str, short_side: int) -> str:
    return name if _SAFE_NAME.match(name) and name != AUDIO_ONLY_NAME else f"{short_side}p"


def plan_ladder(probe: ProbeResult, cfg: TranscodeConfig) -> list[RenditionPlan]:
    """Renditions for ``probe``, largest first."""
    if not cfg.ladder:
        raise ValueError("the transcode ladder is empty")
    if probe.video is None:
        return [RenditionPlan(AUDIO_ONLY_NAME, None, None, None, None,
                              max(r.audio_kbps for r in cfg.ladder))]
    width, height = probe.video.width, probe.video.height
    short_src, long_src = min(width, height), max(width, height)
    portrait = height > width
    rungs: list[Rung] = []
    for rung in sorted(cfg.ladder, key=lambda r: r.height, reverse=True):
        if rung.height <= short_src and all(r.height != rung.height for r in rungs):
            rungs.append(rung)
    if not rungs:
        return [_source_size_plan(probe, cfg)]
    plans, names = [], set()
    for rung in rungs:
        short = min(even(rung.height), even_floor(short_src))
        long = min(even(long_src * rung.height / short_src), even_floor(long_src))
        name = _safe_name(rung.name, short)
        if name in names:
            name = f"{short}p"
        names.add(name)
        w, h = (short, long) if portrait else (long, short)
        plans.append(RenditionPlan(name, w, h, output_fps(probe.video.fps, short),
                                   rung.video_kbps, rung.audio_kbps, rung.quality))
    return plans


def _source_size_plan(probe: ProbeResult, cfg: TranscodeConfig) -> RenditionPlan:
    """One rendition at the (even) source size, its bitrate scaled down from the smallest
    rung by pixel count so a tiny video does not get a big-video budget."""
    assert probe.video is not None
    smallest = min(cfg.ladder, key=lambda r: r.height)
    w, h = even_floor(probe.video.width), even_floor(probe.video.height)
    short = min(w, h)
    kbps = max(MIN_VIDEO_KBPS, round(smallest.video_kbps * (short / smallest.height) ** 2))
    return RenditionPlan(f"{short}p", w, h, output_fps(probe.video.fps, short),
                         min(kbps, smallest.video_kbps), smallest.audio_kbps, smallest.quality)


def lean_ladder(average_bps: Sequence[int], min_saving: float) -> list[bool]:
    """Which rungs to keep (rungs largest first, by their *measured* average video bitrate).

    A rung is worth listing only if it is clearly cheaper than the last kept rung above it: a
    player that can fetch 480p at 90 % of the 720p cost can fetch the 720p, which looks
    better. So a rung is dropped when it saves less than ``min_saving`` of that rung's bits;
    the top rung is always kept, and 0 keeps everything. This happens with capped-CRF on easy
    content (slides), where a small picture needs nearly as many bits per second for its text
    as a larger one.
    """
    keep, above = [], None
    for bps in average_bps:
        drop = above is not None and min_saving > 0 and bps > above * (1.0 - min_saving)
        keep.append(not drop)
        if not drop:
            above = bps
    return keep
