"""The chunked ladder's RQ jobs: ``transcode_chunk``, ``transcode_audio``, ``join_chunks``.

Each takes ids (and a chunk index) only; the worker loads its own Settings and reaches the
original, the plan and the other parts only through the media store (``MediaStore`` staging),
so a worker on any host that shares the store (S3, or the file store's data_dir) can run any
part. A part

- stands down when its generation is no longer the media's (deleted, cancelled, retried) and
  removes that generation's staging;
- reads the original from this worker's cache (fetched once per worker and generation,
  ``chunks.source_cache``; the file store's original in place), encodes into a work folder on
  its own disk and commits it to the store only when complete (``MediaStore.commit_part``), so
  a SIGKILLed worker leaves nothing the join would read, and the part simply runs again (RQ's
  abandoned-job handling, the reconciler, then ``Retry``);
- retries on its own (``[worker] tries`` with ``retry_backoff``); when its last try fails, or
  the input is refused, the media fails with the reason and the part's siblings are stopped;
- reports its progress to Redis; the media's percent and ETA are the sum over all parts;
- on success counts itself done (``chunks.mark_done``): the part completing the set enqueues
  the join, a finished chunk releases the next chunk at the back of the queue (fair
  interleaving, see ``chunks.window``).

The join builds the ladder from the parts (``transcoder.join``), publishes it beside the
stand-in (``progressive.finish_ladder``) and moves the media to ``ready``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from redis import Redis
from rq import Retry, get_current_job
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from models import lifecycle
from models.config import CONFIG_ENV, Settings, load_settings
from models.db import make_engine
from models.layout import Layout
from models.lifecycle import part_job_id
from models.logs import event
from models.mediastore import open_media_store, owner_tag
from models.redis_conn import connect
from transcoder import chunks, extras, webhooks
from transcoder.errors import FfmpegFailed, InputRejected, TranscodeCancelled, \
    report_failure
from transcoder.ffmpeg import AUDIO_GROUP, MEDIA_PLAYLIST, audio_group_command, chunk_command, \
    extras_command
from transcoder.join import join_ladder
from transcoder.ladder import RenditionPlan
from transcoder.loudness import plan_audio
from transcoder.pipeline import StopCheck, run_ffmpeg
from transcoder.playlists import parse_media_playlist
from transcoder.probe import ProbeResult, ladder_limits, probe
from transcoder.progressive import Remaining, StoreTarget, finish_ladder
from transcoder.queue import discard_jobs, enqueue_part, media_job_ids

log = logging.getLogger("tusflow.parts")

PROGRESS_EVERY_S = 1.0
SHUTDOWN_REQUEUES = 1000


def transcode_chunk(media_id: str, job_id: str, index: int) -> Any:
    return _run(media_id, job_id, chunks.chunk_part(index))


def transcode_audio(media_id: str, job_id: str) -> Any:
    return _run(media_id, job_id, chunks.AUDIO_PART)


def join_chunks(media_id: str, job_id: str) -> Any:
    return _run(media_id, job_id, chunks.JOIN_PART)


def _run(media_id: str, job_id: str, part: str) -> Any:
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    engine = make_engine(settings)
    conn = connect(settings)
    try:
        return Part(settings, engine, conn, media_id, job_id, part).run()
    finally:
        conn.close()
        engine.dispose()


class Part:
    def __init__(self, settings: Settings, engine: Engine, conn: Redis, media_id: str,
                 job_id: str, part: str):
        self.settings = settings
        self.engine = engine
        self.conn = conn
        self.media_id = media_id
        self.job_id = job_id          # the generation's id: every media move is made for it
        self.part = part
        self.layout = Layout(settings.data_dir)
        self.store = open_media_store(settings, self.layout)
        self.rq_job = get_current_job()
        self.reason: str | None = None
        self.parent = os.getppid()
        self._last_progress = float("-inf")
        self.plan: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ flow
    def run(self) -> Any:
        if not lifecycle.is_current(self.engine, self.media_id, self.job_id):
            return self._stood_down()
        self._sweep_cache()
        plan = self.store.get_staged(self.media_id, self.job_id, chunks.PLAN_FILE)
        if plan is None:
            raise FfmpegFailed("The plan of this chunked conversion is missing.",
                               detail=f"{self.job_id}/{chunks.PLAN_FILE}")
        self.plan = plan
        if self.part != chunks.JOIN_PART and \
                self.store.part_facts(self.media_id, self.job_id, chunks.part_name(self.part)):
            return self._finished(skipped=True)  # an earlier try got this far
        event(log, "part.start", self.media_id, job=self.job_id, part=self.part)
        restore = _on_sigterm(lambda: self._request("shutdown"))
        work: Path | None = None
        try:
            media = lifecycle.get(self.engine, self.media_id)
            if media is None:
                return self._stood_down()
            source = self._source(media.source_path)
            info = probe(source, self.settings.transcode)
            if self.part == chunks.JOIN_PART:
                return self._join(info)
            work = chunks.local_work_dir(self.layout, self.media_id, self.part, owner_tag())
            if self.part == chunks.AUDIO_PART:
                facts = self._audio(info, work)
            else:
                facts = self._chunk(info, work, int(self.part.split("-", 1)[1]))
            if not lifecycle.is_current(self.engine, self.media_id, self.job_id):
                return self._stood_down()
            (work / ".owner").unlink(missing_ok=True)
            self.store.commit_part(self.media_id, self.job_id, chunks.part_name(self.part),
                                   work, facts)
            return self._finished()
        except Exception as exc:  # a TranscodeError, RQ's timeout, or a bug: see failure_of
            if isinstance(exc, TranscodeCancelled) and self.reason == "shutdown":
                event(log, "part.requeued", self.media_id, job=self.job_id, part=self.part)
                return Retry(max=SHUTDOWN_REQUEUES, interval=0, enqueue_at_front=True)
            if isinstance(exc, TranscodeCancelled) and self.reason == "cancelled":
                return self._stood_down()
            report_failure(self._failed, exc)
            raise
        finally:
            restore()
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)  # gone already when committed

    def _source(self, source_path: str) -> Path:
        """The original on this worker: the file store's own file, or this worker's cached
        download for the generation (``chunks.source_cache``), fetched by the first of its
        parts to run here and renamed into place complete."""
        cache = chunks.source_cache(self.layout, self.job_id)
        cached = cache / "original"
        if cached.is_file():
            return cached
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".download-{uuid.uuid4().hex[:8]}"
        try:
            got = self.store.fetch_original(self.media_id, tmp, source_path)
            if got != tmp:
                return got  # read in place
            os.replace(tmp, cached)
            return cached
        except FileNotFoundError as exc:
            raise InputRejected("The uploaded file is no longer on the server.",
                                detail=str(exc)) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _sweep_cache(self) -> None:
        chunks.sweep_cache(self.layout, self.engine)

    def _drop_generation(self) -> None:
        """The generation ended here: its cached original on this worker goes with it."""
        shutil.rmtree(chunks.source_cache(self.layout, self.job_id), ignore_errors=True)

    def _request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def should_stop(self) -> bool:
        if self.reason is None and os.getppid() != self.parent:
            self.reason = "orphaned"
        return self.reason is not None

    def _deadline(self, seconds: float) -> float:
        cfg = self.settings.transcode
        return time.monotonic() + max(float(cfg.timeout_min), seconds * cfg.timeout_factor)

    # ------------------------------------------------------------------------------ parts
    def _cfg(self) -> Any:
        return dataclasses.replace(self.settings.transcode,
                                   keyframe_interval=self.plan["keyframe_interval"],
                                   segment_duration=self.plan["segment_duration"])

    def _plans(self) -> list[RenditionPlan]:
        return [chunks.plan_from_json(p) for p in self.plan["plans"]]

    def _chunk(self, info: ProbeResult, work: Path, index: int) -> dict[str, Any]:
        """Decode the chunk once, encode every remaining rung; what the join needs to know."""
        cfg = self._cfg()
        plans = self._plans()
        start, end = self.plan["chunks"][index]
        chunk = chunks.Chunk(index, start, end)
        leads = self.plan.get("seek_leads")
        seek, stop = chunks.input_window(chunk, plans, leads[index] if leads else None)
        argv = chunk_command(cfg, info, plans, seek, stop, chunks.frame_ranges(chunk, plans),
                             chunks.keyframe_times(chunk, info.duration, cfg.keyframe_interval))
        for p in plans:
            (work / p.name).mkdir()
        length = chunk.length(info.duration)
        deadline = self._deadline(length)
        run_ffmpeg(argv, work, length, deadline, self._progress, StopCheck(self.should_stop),
                   ladder_limits(cfg, info, [(p.width, p.height) for p in plans],
                                 deadline - time.monotonic()))
        rungs = {}
        for p in plans:
            rungs[p.name] = _rung_facts(work / p.name, p.name)
        return {"part": self.part, "start": start, "end": end, "rungs": rungs}

    def _audio(self, info: ProbeResult, work: Path) -> dict[str, Any]:
        """The shared audio group (loudness measured and applied over the whole file), then
        poster and storyboard from the keyframes."""
        cfg = self._cfg()
        plans = self._plans()
        deadline = self._deadline(info.duration)
        facts: dict[str, Any] = {"part": self.part, "audio": False, "extras": []}
        if info.audio is not None and cfg.audio_group:
            (work / AUDIO_GROUP).mkdir()
            audio_plan = plan_audio(cfg, info, max(1.0, deadline - time.monotonic()))
            kbps = max(p.audio_kbps for p in plans)
            run_ffmpeg(audio_group_command(cfg, info, kbps, audio_plan), work, info.duration,
                       deadline, lambda pc, eta: self._progress(pc * 0.8, None),
                       StopCheck(self.should_stop),
                       ladder_limits(cfg, info, [], deadline - time.monotonic()))
            playlist = parse_media_playlist((work / AUDIO_GROUP / MEDIA_PLAYLIST)
                                            .read_text(encoding="utf-8"))
            if not playlist.segments or not playlist.endlist:
                raise FfmpegFailed("The converter did not produce the complete audio.")
            facts["audio"] = True
        poster = extras.plan_poster(info, plans)
        if poster is not None:
            poster = dataclasses.replace(poster, every_nth_frame=1)  # keyframes only
        storyboard = extras.plan_storyboard(info, cfg)
        argv = extras_command(cfg, info, poster, storyboard)
        if argv is not None:
            try:
                run_ffmpeg(argv, work, info.duration, deadline, None,
                           StopCheck(self.should_stop),
                           ladder_limits(cfg, info, [(plans[0].width, plans[0].height)],
                                         deadline - time.monotonic()))
            except FfmpegFailed as exc:  # a missing poster is no reason to fail the video
                event(log, "part.extras_failed", self.media_id, level=logging.WARNING,
                      error=exc.reason)
            for plan_, key in ((poster, "poster"), (storyboard, "storyboard")):
                if plan_ is not None and _nonempty(work / plan_.filename):
                    facts[key] = plan_.filename
                    facts["extras"].append(plan_.filename)
        return facts

    def _join(self, info: ProbeResult) -> Any:
        """Every part is done: one ladder, published beside the stand-in; the media ready."""
        cfg = self._cfg()
        plans = self._plans()
        remaining = Remaining.from_json(self.plan["remaining"])
        work = chunks.local_work_dir(self.layout, self.media_id, self.part, owner_tag())
        try:
            located, missing = {}, []
            for part in self.plan["parts"]:
                name = chunks.part_name(part)
                folder = self.store.fetch_part(self.media_id, self.job_id, name,
                                               work / "parts" / name)
                facts = chunks.read_json(folder / chunks.DONE_FILE) if folder else None
                if folder is None or facts is None:
                    missing.append(part)
                else:
                    located[part] = (folder, facts)
            if missing:
                raise FfmpegFailed("Parts of the converted video are missing.",
                                   detail=", ".join(missing))
            ladder_dir = work / "ladder"
            result = join_ladder(located, self.plan, plans, info, cfg, ladder_dir,
                                 self._deadline(info.duration), extras.plan_storyboard(info, cfg))
            if not lifecycle.is_current(self.engine, self.media_id, self.job_id):
                return self._stood_down()
            final = finish_ladder(result, ladder_dir, remaining, cfg,
                                  StoreTarget(self.store, self.media_id), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        done = lifecycle.mark_ready(
            self.engine, self.settings, self.media_id, self.job_id, duration=final.duration,
            width=final.width, height=final.height, renditions_json=json.dumps(final.renditions),
            has_poster=bool(final.poster), has_storyboard=bool(final.storyboard))
        if not done:
            if lifecycle.get(self.engine, self.media_id) is None:
                self.store.delete_output(self.media_id)
            return self._stood_down()
        webhooks.enqueue(self.settings, self.engine, done.hooks)
        self.store.delete_staging(self.media_id)
        self._drop_generation()
        chunks.forget(self.conn, self.job_id)
        event(log, "transcode.ready", self.media_id, job=self.job_id, chunked=True,
              chunks=len(self.plan["chunks"]), duration=final.duration,
              renditions=len(final.renditions))
        return {"media": self.media_id, "duration": final.duration,
                "renditions": [r.get("name") for r in final.renditions]}

    # ------------------------------------------------------------------------------ bookkeeping
    def _finished(self, skipped: bool = False) -> Any:
        """Count this part; enqueue the join when it completed the set, else release the
        next chunk (a chunk that finished) at the back of the queue."""
        parts = self.plan["parts"]
        added, complete = chunks.mark_done(self.conn, self.job_id, self.part, len(parts))
        if complete:
            enqueue_part(self.settings, self.conn, self.media_id, self.job_id, chunks.JOIN_PART,
                         self.plan["duration"])
        elif added and self.part.startswith("chunk-"):
            index = chunks.release_next(self.conn, self.job_id)
            if index < len(self.plan["chunks"]):
                start, end = self.plan["chunks"][index]
                length = (end if end is not None else self.plan["duration"]) - start
                enqueue_part(self.settings, self.conn, self.media_id, self.job_id,
                             chunks.chunk_part(index), length)
        event(log, "part.done", self.media_id, job=self.job_id, part=self.part,
              skipped=skipped, join=complete)
        return {"media": self.media_id, "part": self.part, "join": complete}

    def _progress(self, percent: float, eta: float | None) -> None:
        """This part's share into Redis; the media's percent and ETA from all parts."""
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        try:
            every = chunks.set_progress(self.conn, self.job_id, self.part, percent / 100.0)
            info = chunks.fan_out_info(self.conn, self.job_id)
            cuts = [chunks.Chunk(i, s, e) for i, (s, e) in enumerate(self.plan["chunks"])]
            weights = chunks.weights(cuts, self.plan["duration"], chunks.AUDIO_PART
                                     in self.plan["parts"])
            fraction = chunks.ladder_fraction(every, weights)
            remaining = self.plan["remaining"]
            share = float(remaining["stand_share"])
            total = share + (100.0 - share) * fraction
            eta_s = None
            if info is not None and fraction > 0.02:
                elapsed = time.time() - info["started"]
                eta_s = max(0.0, elapsed * (1.0 - fraction) / fraction)
            board = [dict(r) for r in remaining["board"]]
            for row in board:
                if row["name"] in remaining["names"]:
                    row["progress"] = round(min(fraction * 100.0, 99.9), 1)
            current = lifecycle.progress(self.engine, self.media_id, self.job_id, total, eta_s,
                                         renditions_json=json.dumps(board))
        except (SQLAlchemyError, OSError) as exc:
            event(log, "progress.not_saved", self.media_id, level=logging.WARNING,
                  error=str(exc))
            return
        if not current:
            self._request("cancelled")

    def _failed(self, reason: str, *, permanent: bool, detail: str = "") -> None:
        """The last try (or a refused input) fails the media, with which part and why, and
        stops the other parts of the generation; earlier tries only log."""
        job = self.rq_job
        if permanent and job is not None:
            job.retries_left = 0
        retrying = bool(job is not None and job.retries_left and job.retries_left > 0)
        event(log, "part.retrying" if retrying else "part.failed", self.media_id,
              level=logging.WARNING, job=self.job_id, part=self.part, permanent=permanent,
              reason=reason, retries_left=job.retries_left if job is not None else None,
              detail=detail[-600:] if detail else None)
        if retrying:
            return
        where = _describe_part(self.part, len(self.plan.get("chunks", [])))
        try:
            done = lifecycle.fail(self.engine, self.settings, self.media_id, self.job_id,
                                  f"{reason} ({where})")
        except SQLAlchemyError as exc:
            event(log, "failure.not_saved", self.media_id, level=logging.WARNING, error=str(exc))
            return
        webhooks.enqueue(self.settings, self.engine, done.hooks)
        if done:
            stop_parts(self.settings, self.conn, self.media_id, self.job_id,
                       keep=part_job_id(self.job_id, self.part))
            self.store.delete_staging(self.media_id)
            self._drop_generation()

    def _stood_down(self) -> Any:
        event(log, "part.stood_down", self.media_id, job=self.job_id, part=self.part,
              why="media deleted, cancelled or transcoded again as a newer job")
        media = lifecycle.get(self.engine, self.media_id)
        newer = media.job_id if media is not None and media.job_id != self.job_id else ""
        try:  # deleted or cancelled: all of it; retried: all but the newer generation's
            self.store.delete_staging(self.media_id, keep=newer or "")
        except Exception as exc:  # the next generation's fan-out or the join tries again
            event(log, "staging.not_removed", self.media_id, level=logging.WARNING,
                  error=str(exc))
        self._drop_generation()
        return {"media": self.media_id, "part": self.part, "skipped": True}


def stop_parts(settings: Settings, conn: Redis, media_id: str, job_id: str,
               keep: str = "") -> int:
    """Stop or delete every other part job of the generation ``job_id``."""
    prefix = job_id + "-"
    ids = {j for j in media_job_ids(settings, conn, media_id)
           if j.startswith(prefix) and j != keep and not j[len(prefix):].isdigit()}
    return discard_jobs(conn, ids)


def _describe_part(part: str, count: int) -> str:
    if part.startswith("chunk-"):
        return f"part {int(part.split('-', 1)[1]) + 1} of {count} of the video"
    if part == chunks.AUDIO_PART:
        return "the audio track"
    return "joining the parts"


def _rung_facts(folder: Path, name: str) -> dict[str, Any]:
    try:
        playlist = parse_media_playlist((folder / MEDIA_PLAYLIST).read_text(encoding="utf-8"))
        if not playlist.map_uri or not playlist.segments or not playlist.endlist:
            raise ValueError("incomplete playlist")
        if sum(seg.duration for seg in playlist.segments) <= 0:
            raise ValueError("no frame decoded")  # else the join blames the init segments
        init = (folder / playlist.map_uri).read_bytes()
    except (OSError, ValueError) as exc:
        raise FfmpegFailed("The converter did not produce a complete part of the video.",
                           detail=f"{name}: {exc}") from exc
    return {"map": playlist.map_uri, "init_sha256": hashlib.sha256(init).hexdigest(),
            "segments": [[s.uri, s.duration] for s in playlist.segments]}


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _on_sigterm(callback: Callable[[], None]) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: callback())
    return lambda: signal.signal(signal.SIGTERM, previous)
