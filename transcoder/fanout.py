"""Hand the ladder of one video to part jobs: chunks on every free worker, the audio once.

Called by the generation's own job (``transcoder.jobs``) right after the stand-in is published,
through ``progressive.run``'s fan-out hook. It writes the plan every part reads
(``plan.json`` in the generation's staging in the media store, see ``transcoder.chunks``;
older generations' staging is removed first), records the
parts in Redis, then enqueues the audio part and the first window of chunks. The generation's
job then ends; the media stays ``playable`` (or ``processing``) under the same job id, and the
join (``transcoder.partjobs``) moves it to ``ready``.
"""

from __future__ import annotations

import logging
import time

from models.config import Settings, TranscodeConfig
from models.layout import Layout
from models.logs import event
from models.mediastore import open_media_store
from models.redis_conn import connect
from transcoder import chunks, extras, fastpath
from transcoder.ladder import RenditionPlan
from transcoder.probe import ProbeResult
from transcoder.progressive import Remaining
from transcoder.queue import enqueue_part

log = logging.getLogger("tusflow.fanout")

MIN_CHUNKS = 2


def fan_out(settings: Settings, media_id: str, job_id: str, info: ProbeResult,
            plans: list[RenditionPlan], ladder_cfg: TranscodeConfig,
            remaining: Remaining) -> bool:
    """True when the ladder now belongs to part jobs; False to encode it in this job (one
    chunk's worth of video, audio only). Raises RedisError (the job's try is retried)."""
    cfg = settings.transcode
    if info.video is None or not plans or cfg.chunk_seconds <= 0:
        return False
    if info.audio is not None and not cfg.audio_group:
        return False  # audio in every rung would mean cutting the audio: never (notes C2.7)
    cuts = chunks.plan_chunks(info.duration, cfg.chunk_seconds, ladder_cfg.segment_duration,
                              ladder_cfg.keyframe_interval)
    if len(cuts) < MIN_CHUNKS:
        return False
    store = open_media_store(settings, Layout(settings.data_dir))
    store.delete_staging(media_id, keep=job_id)  # a retried media's older generations
    audio = info.audio is not None
    parts = ([chunks.AUDIO_PART] if audio or _has_extras(info, plans, cfg) else []) + \
        [chunks.chunk_part(c.index) for c in cuts]
    plan = {
        "media": media_id, "job": job_id, "duration": info.duration,
        "chunks": [[c.start, c.end] for c in cuts], "seek_leads": _seek_leads(cfg, info, cuts),
        "plans": [chunks.plan_to_json(p) for p in plans],
        "keyframe_interval": ladder_cfg.keyframe_interval,
        "segment_duration": ladder_cfg.segment_duration,
        "audio": audio, "parts": parts, "remaining": remaining.as_json(),
    }
    store.put_staged(media_id, job_id, chunks.PLAN_FILE, plan)
    conn = connect(settings)
    try:
        wide = chunks.window(conn, settings.redis.queue)
        chunks.record_fan_out(conn, job_id, parts, min(wide, len(cuts)), time.time())
        if parts[0] == chunks.AUDIO_PART:
            enqueue_part(settings, conn, media_id, job_id, chunks.AUDIO_PART, info.duration)
        for c in cuts[:wide]:
            enqueue_part(settings, conn, media_id, job_id, chunks.chunk_part(c.index),
                         c.length(info.duration))
    finally:
        conn.close()
    event(log, "transcode.chunked", media_id, job=job_id, chunks=len(cuts),
          chunk_seconds=round(cuts[0].length(info.duration), 3), window=wide,
          rungs=",".join(p.name for p in plans))
    return True


def _has_extras(info: ProbeResult, plans: list[RenditionPlan], cfg: TranscodeConfig) -> bool:
    return extras.plan_poster(info, plans) is not None or \
        extras.plan_storyboard(info, cfg) is not None


def _seek_leads(cfg: TranscodeConfig, info: ProbeResult, cuts: list[chunks.Chunk]) -> list[float] | None:
    """Where each chunk's input seek must land for a source whose demuxer seeks inexactly
    (``chunks.INEXACT_SEEK``), from one demux-only pass over its video packets; None for the
    others, which seek to a keyframe by their index. Keyframes move to the chunks' timeline
    (``-start_at_zero``: the earliest stream start is 0)."""
    if info.demuxer not in chunks.INEXACT_SEEK or info.video is None:
        return None
    starts = [s.start_time for s in (info.video, info.audio) if s is not None and s.start_time is not None]
    origin = min(starts, default=0.0)
    keyframes = [k - origin for k in fastpath.scan_source(cfg, info).keyframes]
    return chunks.seek_leads(cuts, keyframes)
