"""The chunked ladder's plan and bookkeeping: where the chunks are cut, which frames and
keyframes each one gets, where its files go, and what Redis knows about the parts in flight.

One generation of a media (``transcode-<id>[-N]``) whose ladder is chunked runs as *parts*:
``chunk-<i>`` (every remaining rung of one stretch of the video), ``audio`` (the shared audio
group for the whole file, plus poster and storyboard) and, once every other part is done,
``join``. Their plan and finished parts live in the media store's staging (``MediaStore``
``put_staged``/``commit_part``/``fetch_part``/``delete_staging``), so a part runs on any worker
that shares the store: on the file store ``scratch/<id>.parts[-N]/`` of the shared data_dir, on
the S3 store ``<prefix>staging/<id>/<generation>/``:

    plan.json      what the generation's job planned (written once)
    c00003/        a finished chunk (committed whole, with its done.json marker)
    audio/         the finished audio part

A part is encoded in a work folder on its own worker's disk (``local_work_dir``) and committed
only when complete; the original is fetched once per worker and generation (``source_cache``).

Redis holds, per generation, the set of finished parts (the join is enqueued by the part whose
``SADD`` completes the set, in the same transaction as the count), how many chunks have been
handed to the queue (chunks are released a window at a time, see ``window``), and each part's
progress. The database stays the source of truth for the media; losing these keys only costs
the reconciler a new generation.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from models import lifecycle
from models.layout import Layout
from models.mediastore import DONE
from models.lifecycle import default_job_id
from models.logs import media_from_job_id
from transcoder.ladder import RenditionPlan

PLAN_FILE = "plan.json"
DONE_FILE = DONE  # a committed part's marker (the media store writes it)
AUDIO_PART = "audio"
JOIN_PART = "join"
KEY_PREFIX = "tusflow:parts"
KEY_TTL_S = 7 * 24 * 3600
AUDIO_WEIGHT = 0.03      # share of the ladder's progress bar the audio part covers
GRID_SEARCH = 60         # keyframe intervals tried when looking for a common multiple
EPS = 1e-6


@dataclass(frozen=True)
class Chunk:
    index: int
    start: float          # seconds, absolute, on the segment/keyframe grid
    end: float | None     # None: to the end of the file (the last chunk)

    def length(self, duration: float) -> float:
        return (self.end if self.end is not None else duration) - self.start


def chunk_part(index: int) -> str:
    return f"chunk-{index}"


# ---------------------------------------------------------------------------------- planning
def grid_step(segment_duration: float, keyframe_interval: float) -> float:
    """The shortest length that is a whole number of keyframe intervals *and* of segments,
    so each chunk's hls muxer cuts where one pass over the whole file would have; when the
    two never meet (a copied rung's 2.002 s GOP against 6 s segments), whole GOPs of at least
    one segment."""
    for n in range(1, GRID_SEARCH + 1):
        length = n * keyframe_interval
        ratio = length / segment_duration
        if length >= segment_duration - EPS and abs(ratio - round(ratio)) < 1e-4:
            return length
    return keyframe_interval * math.ceil(segment_duration / keyframe_interval - EPS)


def plan_chunks(duration: float, chunk_seconds: float, segment_duration: float,
                keyframe_interval: float) -> list[Chunk]:
    """Cut ``[0, duration)`` into chunks of about ``chunk_seconds`` on the grid; a last piece
    shorter than one grid step joins the chunk before it."""
    step = grid_step(segment_duration, keyframe_interval)
    length = max(step, round(chunk_seconds / step) * step)
    starts = []
    t = 0.0
    while t < duration - EPS:
        starts.append(t)
        t += length
    if len(starts) > 1 and duration - starts[-1] < step - EPS:
        starts.pop()
    return [Chunk(i, s, starts[i + 1] if i + 1 < len(starts) else None)
            for i, s in enumerate(starts)]


def first_frame(t: float, fps: Fraction) -> int:
    """The first frame of a CFR grid at ``fps`` whose time is at or after ``t``."""
    return math.ceil(t * fps - EPS)


def frame_ranges(chunk: Chunk, plans: Sequence[RenditionPlan]) -> list[tuple[int, int | None]]:
    """Each rung's ``[first, end)`` output frames of the chunk, on that rung's own grid: the
    chunks of a rung share every boundary frame exactly, so the join has no gap or overlap."""
    out = []
    for plan in plans:
        assert plan.fps is not None
        out.append((first_frame(chunk.start, plan.fps),
                    first_frame(chunk.end, plan.fps) if chunk.end is not None else None))
    return out


# Demuxers whose input -ss lands on whatever packet is near the time, not on a keyframe:
# ffmpeg 5.1's mpegts demuxer marks every packet a keyframe while it bisects for a seek, so
# the decoder then starts at the NEXT keyframe (a chunk of 3 s GOPs froze for 2 s after its
# join; with one keyframe in the file, chunks decoded nothing). FLV and Ogg seek by search
# too. Chunks of these seek to before the source keyframe instead (``seek_leads``).
INEXACT_SEEK = frozenset({"mpegts", "flv", "ogg"})
SEEK_MARGIN_S = 0.5


def seek_leads(cuts: Sequence[Chunk], keyframes: Sequence[float]) -> list[float]:
    """For a demuxer in ``INEXACT_SEEK``: per chunk, an input seek that lands before the last
    source keyframe at or before the chunk's start (``keyframes`` on the chunks' timeline), so
    decoding starts on that keyframe; the frames before the chunk are cut by the filters as
    for any seek. ``SEEK_MARGIN_S`` absorbs where such a demuxer really lands."""
    leads = []
    for chunk in cuts:
        before = [k for k in keyframes if k <= chunk.start + EPS]
        leads.append(max(0.0, (before[-1] if before else 0.0) - SEEK_MARGIN_S))
    return leads


def input_window(chunk: Chunk, plans: Sequence[RenditionPlan],
                 lead: float | None = None) -> tuple[float, float | None]:
    """Accurate input seek and stop around the chunk: half a frame before its first frame
    (or at ``lead`` when that is earlier: see ``seek_leads``), a frame and a half past its end
    (``fps`` emits a frame only once it sees the next)."""
    fastest = max(float(p.fps) for p in plans if p.fps is not None)
    seek = chunk.start - 0.5 / fastest
    if lead is not None:
        seek = min(seek, lead)
    stop = chunk.end + 1.5 / fastest if chunk.end is not None else None
    return seek, stop


def keyframe_times(chunk: Chunk, duration: float, keyframe_interval: float) -> list[float]:
    """Absolute IDR times inside the chunk: one grid for every rung and chunk."""
    end = chunk.end if chunk.end is not None else duration
    first = math.ceil(chunk.start / keyframe_interval - EPS)
    times = []
    n = first
    while n * keyframe_interval < end - EPS:
        times.append(round(n * keyframe_interval, 6))
        n += 1
    return times or [chunk.start]


def plan_to_json(plan: RenditionPlan) -> dict[str, Any]:
    return {"name": plan.name, "width": plan.width, "height": plan.height,
            "fps": f"{plan.fps.numerator}/{plan.fps.denominator}" if plan.fps else None,
            "video_kbps": plan.video_kbps, "audio_kbps": plan.audio_kbps,
            "quality": plan.quality}


def plan_from_json(data: dict[str, Any]) -> RenditionPlan:
    return RenditionPlan(data["name"], data["width"], data["height"],
                         Fraction(data["fps"]) if data["fps"] else None, data["video_kbps"],
                         data["audio_kbps"], data["quality"])


# ---------------------------------------------------------------------------------- files
def staging_dir(layout: Layout, media_id: str, job_id: str) -> Path:
    """The generation's staging directory: ``scratch/<id>.parts`` or ``...parts-<N>``."""
    suffix = job_id[len(default_job_id(media_id)):]
    return layout.scratch / f"{media_id}.parts{suffix}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def part_name(part: str) -> str:
    """The part's folder (file store) or key (S3 store) in the staging: ``c00003``, ``audio``."""
    if part.startswith("chunk-"):
        return f"c{int(part.split('-')[1]):05d}"
    return part


SOURCE_CACHE = "parts-cache"


def source_cache(layout: Layout, job_id: str) -> Path:
    """This worker's copy of a generation's original (S3 store), shared by its parts: fetched
    once per worker and generation, removed when the generation ends (``sweep_cache``)."""
    return layout.scratch / SOURCE_CACHE / job_id


def sweep_cache(layout: Layout, engine: Engine) -> list[str]:
    """Drop this worker's cached originals of generations that are no longer current (ready,
    failed, deleted or retried, wherever their join or failure ran); their job ids. Run by
    each part and by every reconcile pass, so a host that ran no join cleans up too."""
    root = layout.scratch / SOURCE_CACHE
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for folder in root.iterdir():
        media_id = media_from_job_id(folder.name)
        try:
            current = media_id is not None and lifecycle.is_current(engine, media_id, folder.name)
        except SQLAlchemyError:
            continue
        if not current:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def local_work_dir(layout: Layout, media_id: str, part: str, owner: str) -> Path:
    """A fresh folder on this worker's own disk for one run of a part, tagged with its owner
    so ``Scratch.sweep`` removes it after a SIGKILL (``Scratch.clear`` at the next claim)."""
    folder = layout.scratch / f"{media_id}.work-{part}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / ".owner").write_text(owner, encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------- Redis
def _keys(job_id: str) -> tuple[str, str, str]:
    base = f"{KEY_PREFIX}:{job_id}"
    return base, f"{base}:done", f"{base}:progress"


def record_fan_out(conn: Redis, job_id: str, parts: Sequence[str], released: int,
                   started: float) -> None:
    """The generation's parts (before any is enqueued): the reconciler reads it from now on."""
    info, done, progress = _keys(job_id)
    pipe = conn.pipeline(transaction=True)
    pipe.hsetnx(info, "parts", json.dumps(list(parts)))
    pipe.hsetnx(info, "released", released)
    pipe.hsetnx(info, "started", started)
    for key in (info, done, progress):
        pipe.expire(key, KEY_TTL_S)
    pipe.execute()


def fan_out_info(conn: Redis, job_id: str) -> dict[str, Any] | None:
    """``{"parts", "released", "started", "done"}`` of a chunked generation, or None."""
    info, done, _ = _keys(job_id)
    pipe = conn.pipeline(transaction=False)
    pipe.hgetall(info)
    pipe.smembers(done)
    raw, members = pipe.execute()
    if not raw or b"parts" not in raw:
        return None
    return {"parts": json.loads(raw[b"parts"]), "released": int(raw.get(b"released", 0)),
            "started": float(raw.get(b"started", 0.0)),
            "done": {m.decode() for m in members}}


def mark_done(conn: Redis, job_id: str, part: str, total: int) -> tuple[bool, bool]:
    """Count the part as finished: (newly counted, this call completed the set). The one call
    whose part completes the set enqueues the join; the same part twice counts once."""
    _, done, progress = _keys(job_id)
    pipe = conn.pipeline(transaction=True)
    pipe.sadd(done, part)
    pipe.scard(done)
    pipe.hset(progress, part, 1.0)
    added, count, _ = pipe.execute()
    return bool(added), bool(added) and count >= total


def release_next(conn: Redis, job_id: str) -> int:
    """Take the next chunk index to hand to the queue (it may be past the last one)."""
    info, _, _ = _keys(job_id)
    return int(conn.hincrby(info, "released", 1)) - 1


def set_progress(conn: Redis, job_id: str, part: str, fraction: float) -> dict[str, float]:
    """Store this part's progress; every part's, for the sum."""
    _, _, progress = _keys(job_id)
    pipe = conn.pipeline(transaction=False)
    pipe.hset(progress, part, round(min(max(fraction, 0.0), 1.0), 4))
    pipe.hgetall(progress)
    _, raw = pipe.execute()
    return {k.decode(): float(v) for k, v in raw.items()}


def forget(conn: Redis, job_id: str) -> None:
    conn.delete(*_keys(job_id))


def ladder_fraction(progress: dict[str, float], weights: dict[str, float]) -> float:
    """How much of the chunked ladder is done: each part's progress by its weight."""
    total = sum(weights.values()) or 1.0
    return min(1.0, sum(w * progress.get(p, 0.0) for p, w in weights.items()) / total)


def weights(chunks: Sequence[Chunk], duration: float, audio: bool) -> dict[str, float]:
    """Chunks weigh by their length; the audio part by a small fixed share."""
    video = 1.0 - (AUDIO_WEIGHT if audio else 0.0)
    out = {chunk_part(c.index): video * max(c.length(duration), 0.0) / max(duration, EPS)
           for c in chunks}
    if audio:
        out[AUDIO_PART] = AUDIO_WEIGHT
    return out


def window(conn: Redis, queue_name: str, minimum: int = 2) -> int:
    """How many chunks of one video wait in the queue at a time: one per live worker.

    Fair interleaving: a video never has more chunks queued than there are workers, and each
    finished chunk releases the next one *at the back of the queue*. A long lecture thus
    keeps every worker busy while it is alone, but a video uploaded after it waits behind at
    most one window of its chunks, then alternates with it (round robin), instead of behind
    all of them."""
    try:
        live = Worker.count(queue=Queue(queue_name, connection=conn))
    except RedisError:  # a registry we cannot read just means the minimum
        live = 0
    return max(minimum, live)
