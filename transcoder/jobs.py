"""The RQ job: one media, one attempt, from the original file to a published HLS ladder.

Plain function, one plain argument (``media_id``), so any RQ worker on any host can run it
and nothing but ids travels through Redis. Each attempt

1. claims the media (state ``processing``, ``attempts`` + 1) only if ``Media.job_id`` still
   names this job: a superseded, cancelled or deleted media makes the job stand down (every
   change of the row is a move of ``models.lifecycle``);
2. probes the original once and tightens its own time limit to ``max(timeout_min, duration *
   timeout_factor)``;
3. gets the original into this worker's own scratch (``scratch/<id>.<attempt>``; the file store
   hands out its own path, S3 is downloaded), transcodes there (from that probe) and publishes
   through the media store (``models.mediastore``: one rename onto ``media/<id>`` on the file
   store, every object then the master on S3; an older ladder is replaced), so players never
   see half a ladder, and a killed worker leaves only scratch behind, removed at the next
   claim on its host;
4. records ``ready`` with what was produced, or the failure with a sentence a person can read.

Retries are RQ's: the job is enqueued with ``Retry`` for ``[worker] tries``; a transient error
is re-raised so RQ schedules the next try with backoff, a rejected input sets the job's
``retries_left`` to 0 before re-raising so it fails at once. A worker asked to shut down
(SIGTERM to the horse, see ``transcoder/worker.py``) stops ffmpeg and puts the job
back at the front of the queue without using up a try.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from rq import Retry, get_current_job
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from models import lifecycle
from models.config import CONFIG_ENV, Settings, load_settings
from models.db import make_engine
from models.layout import Layout
from models.lifecycle import default_job_id
from models.logs import event
from models.mediastore import Scratch, open_media_store, publish_dir
from models.tables import Media
from transcoder import fanout, fastpath, progressive, webhooks
from transcoder.errors import FfmpegFailed, InputRejected, TranscodeCancelled, report_failure
from transcoder.pipeline import TranscodeResult, transcode
from transcoder.probe import ProbeResult, probe

log = logging.getLogger("tusflow.jobs")

PROGRESS_EVERY_S = 1.0
# Requeue after a shutdown without counting a try; RQ counts returned Retry objects separately
# from exception retries, so this never eats into ``[worker] tries``.
SHUTDOWN_REQUEUES = 1000
ORPHAN_EXIT_CODE = 70


def transcode_media(media_id: str, _enqueued_with: object = None) -> Any:
    """RQ entry point. The job carries the media id only: the worker running it loads its own
    Settings (the config file it was started with, exported as ``CONFIG_ENV``, and its own
    ``TUSFLOW_*`` environment), so a worker on another host, with other paths, can run it.
    ``_enqueued_with``: the config path jobs enqueued before ids-only carried; ignored."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    engine = make_engine(settings)
    try:
        return Attempt(settings, engine, media_id).run()
    finally:
        engine.dispose()


class StopFlag:
    """Why this attempt should stop early, if it should: checked by the pipeline each second."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.parent = os.getppid()

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def should_stop(self) -> bool:
        if self.reason is None and os.getppid() != self.parent:
            self.reason = "orphaned"  # our worker died; its abandoned job will be re-run
        return self.reason is not None


class Attempt:
    def __init__(self, settings: Settings, engine: Engine, media_id: str):
        self.settings = settings
        self.engine = engine
        self.media_id = media_id
        self.layout = Layout(settings.data_dir)
        self.store = open_media_store(settings, self.layout)
        self.scratch = Scratch(self.layout.scratch)
        self.rq_job = get_current_job()
        # Outside RQ (called directly) the job id is the media's own, read by _claim.
        self.job_id: str = self.rq_job.id if self.rq_job is not None else ""
        self.stop = StopFlag()
        self.attempt = 0
        self._last_progress = float("-inf")

    # ------------------------------------------------------------------------------ flow
    def run(self) -> Any:
        media = self._claim()
        if media is None:
            return {"media": self.media_id, "skipped": True}
        event(log, "transcode.start", self.media_id, job=self.job_id, attempt=self.attempt)
        scratch = self.scratch.attempt(self.media_id, self.attempt)
        restore_signal = self._on_sigterm(lambda: self.stop.request("shutdown"))
        started = time.monotonic()
        try:
            self._clear_scratch()
            scratch = self.scratch.start(self.media_id, self.attempt)
            source = self._source(media, scratch)
            cfg = self.settings.transcode
            info = probe(source, cfg)
            budget = max(float(cfg.timeout_min), info.duration * cfg.timeout_factor)
            _tighten_rq_timeout(budget + 60)
            event(log, "transcode.probed", self.media_id, duration=info.duration,
                  container=info.container, timeout=round(budget))
            staged: Path | None = scratch / "out" if not cfg.progressive else None
            if cfg.fast_path or cfg.progressive:
                target: Path | progressive.Target = staged if staged is not None else \
                    progressive.StoreTarget(self.store, self.media_id)
                result = progressive.run(source, info, cfg, scratch, target,
                                         time.monotonic() + budget, self.stop.should_stop,
                                         self._progressive_hooks(), self._fan_out(info))
                if result is None:  # the chunked ladder's part jobs finish it (partjobs.py)
                    event(log, "transcode.fanned_out", self.media_id, job=self.job_id)
                    return {"media": self.media_id, "chunked": True}
            else:  # the baseline: one ffmpeg for the whole ladder, published at the end
                staged = scratch / "out"
                staged.mkdir()
                result = transcode(source, staged, cfg, on_progress=self._progress,
                                   timeout=budget, should_stop=self.stop.should_stop,
                                   probed=info)
            # Finished work is published even when a shutdown arrived meanwhile (it takes
            # milliseconds); only a deleted or superseded media makes us discard it.
            if not lifecycle.is_current(self.engine, self.media_id, self.job_id):
                return self._stood_down()
            if staged is not None:
                self.store.publish_ladder(self.media_id, staged)
            self._mark_ready(result)
            event(log, "transcode.ready", self.media_id, job=self.job_id, attempt=self.attempt,
                  seconds=round(time.monotonic() - started, 2), duration=result.duration,
                  renditions=len(result.renditions))
            return {"media": self.media_id, "duration": result.duration,
                    "renditions": [r.get("name") for r in result.renditions]}
        except Exception as exc:  # a TranscodeError, RQ's timeout, or a bug: see failure_of
            if isinstance(exc, TranscodeCancelled):
                if self.stop.reason == "shutdown":
                    return self._requeue_for_shutdown()
                if self.stop.reason == "cancelled":
                    return self._stood_down()
                if self.stop.reason == "orphaned":
                    self._orphaned()
            report_failure(self._failed, exc)
            raise
        finally:
            restore_signal()
            self.scratch.remove(scratch)

    # ------------------------------------------------------------------------------ database
    def _claim(self) -> Media | None:
        """Mark processing and count the try, only if this job is still the media's job."""
        media = lifecycle.get(self.engine, self.media_id)
        if media is None:
            event(log, "transcode.skipped", self.media_id, job=self.job_id, why="media deleted")
            return None
        if not self.job_id:  # called directly, outside RQ
            self.job_id = media.job_id or default_job_id(self.media_id)
        if media.job_id not in (None, self.job_id):
            event(log, "transcode.skipped", self.media_id, job=self.job_id,
                  why=f"superseded by {media.job_id}")
            return None
        if not lifecycle.allowed(lifecycle.Move.CLAIM, media.state):
            event(log, "transcode.skipped", self.media_id, job=self.job_id,
                  why=f"already {media.state}")
            return None
        claimed = lifecycle.claim(self.engine, self.media_id, self.job_id)
        if claimed is None:  # changed between the read and the claim
            return None
        self.attempt = claimed.attempts
        return claimed

    def _progress(self, percent: float, eta: float | None,
                  renditions: list[dict] | None = None) -> None:
        """Called by the pipeline; one database write a second at most, never raises."""
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S and percent < 100.0:
            return
        self._last_progress = now
        try:
            current = lifecycle.progress(
                self.engine, self.media_id, self.job_id, percent, eta,
                renditions_json=json.dumps(renditions) if renditions is not None else None)
        except SQLAlchemyError as exc:
            event(log, "progress.not_saved", self.media_id, level=logging.WARNING, error=str(exc))
            return
        if not current:  # deleted, cancelled, or retried as a new generation: stop the CPU
            self.stop.request("cancelled")

    def _fan_out(self, info: ProbeResult) -> progressive.FanOut | None:
        """With ``[transcode] chunk_seconds`` the rungs after the stand-in become part jobs
        (``transcoder.fanout``) that any worker sharing the storage can run."""
        if self.settings.transcode.chunk_seconds <= 0:
            return None
        return lambda plans, ladder_cfg, remaining: fanout.fan_out(
            self.settings, self.media_id, self.job_id, info, plans, ladder_cfg, remaining)

    def _progressive_hooks(self) -> progressive.Hooks:
        return progressive.Hooks(progress=self._progress, verdict=self._verdict,
                                 playable=self._playable)

    def _verdict(self, verdict: fastpath.Verdict) -> None:
        """Every fast-path decision is logged with its reason and kept for the media JSON."""
        event(log, "transcode.fast_path", self.media_id, job=self.job_id,
              eligible=verdict.eligible, top_rung=verdict.top_rung, reason=verdict.reason)
        try:
            media = lifecycle.get(self.engine, self.media_id)
            lifecycle.progress(self.engine, self.media_id, self.job_id,
                               media.progress if media else 0.0, None,
                               fast_path_json=json.dumps(verdict.as_json()))
        except SQLAlchemyError as exc:
            event(log, "progress.not_saved", self.media_id, level=logging.WARNING, error=str(exc))

    def _playable(self, renditions: list[dict], duration: float, width: int | None,
                  height: int | None) -> None:
        """A rendition is published and in the master: ``playable``, ``media.playable``."""
        done = lifecycle.mark_playable(self.engine, self.settings, self.media_id, self.job_id,
                                       duration=duration, width=width, height=height,
                                       renditions_json=json.dumps(renditions))
        if not done:
            self.stop.request("cancelled")
            return
        webhooks.enqueue(self.settings, self.engine, done.hooks)  # never raises
        event(log, "transcode.playable", self.media_id, job=self.job_id,
              renditions=[r["name"] for r in renditions if r.get("state") == "ready"])

    def _mark_ready(self, result: TranscodeResult) -> None:
        done = lifecycle.mark_ready(
            self.engine, self.settings, self.media_id, self.job_id, duration=result.duration,
            width=result.width, height=result.height,
            renditions_json=json.dumps(result.renditions), has_poster=bool(result.poster),
            has_storyboard=bool(result.storyboard))
        if done:
            webhooks.enqueue(self.settings, self.engine, done.hooks)  # never raises
            return
        # Deleted while we published: take our output down again. Superseded: leave it, the
        # newer generation replaces it atomically when it publishes.
        if lifecycle.get(self.engine, self.media_id) is None:
            self.store.delete_output(self.media_id)
        self._stood_down()

    def _failed(self, reason: str, *, permanent: bool, detail: str = "") -> None:
        """Record the failure; RQ decides the retry from ``retries_left`` when we re-raise."""
        job = self.rq_job
        if permanent and job is not None:
            job.retries_left = 0  # the same Job object the worker's failure handler reads
        retrying = bool(job is not None and job.retries_left and job.retries_left > 0)
        hooks: tuple[str, ...] = ()
        try:
            if retrying:
                changed = lifecycle.retry_later(self.engine, self.media_id, self.job_id, reason)
            else:
                done = lifecycle.fail(self.engine, self.settings, self.media_id, self.job_id,
                                      reason)
                changed, hooks = done.changed, done.hooks
            if not changed and job is not None:
                job.retries_left = 0  # deleted or superseded: retrying this job helps nobody
                retrying = False
        except SQLAlchemyError as exc:  # the reconciler copies RQ's verdict later
            event(log, "failure.not_saved", self.media_id, level=logging.WARNING, error=str(exc))
        webhooks.enqueue(self.settings, self.engine, hooks)  # never raises; the sweep retries
        event(log, "transcode.retrying" if retrying else "transcode.failed", self.media_id,
              level=logging.WARNING, job=self.job_id, attempt=self.attempt, permanent=permanent,
              reason=reason, retries_left=job.retries_left if job is not None else None,
              detail=detail[-600:] if detail else None)

    def _requeue_for_shutdown(self) -> Any:
        """Worker shutting down: give the try back and go to the front of the queue."""
        lifecycle.requeue_for_shutdown(self.engine, self.media_id, self.job_id)
        event(log, "transcode.requeued", self.media_id, job=self.job_id, why="worker shutdown")
        if self.rq_job is None:
            return {"media": self.media_id, "requeued": True}
        return Retry(max=SHUTDOWN_REQUEUES, interval=0, enqueue_at_front=True)

    def _stood_down(self) -> Any:
        if self.settings.transcode.progressive and lifecycle.get(self.engine,
                                                                 self.media_id) is None:
            # deleted while we were publishing piece by piece into its directory
            self.store.delete_output(self.media_id)
        event(log, "transcode.stood_down", self.media_id, job=self.job_id,
              why="media deleted or transcoded again as a newer job")
        return {"media": self.media_id, "skipped": True}

    def _orphaned(self) -> None:
        """Our worker died under us. Leave the job STARTED: the reconciler sees the dead
        worker and lets RQ retry it; finishing RQ's bookkeeping here would contradict that."""
        event(log, "transcode.orphaned", self.media_id, level=logging.WARNING, job=self.job_id)
        self.scratch.remove(self.scratch.attempt(self.media_id, self.attempt))
        logging.shutdown()
        os._exit(ORPHAN_EXIT_CODE)

    # ------------------------------------------------------------------------------ files
    def _source(self, media: Media, scratch: Path) -> Path:
        """The original as a local file: the file store's own (it finishes an interrupted
        finalize, a crash between commit and rename), or a download into scratch."""
        try:
            return self.store.fetch_original(self.media_id, scratch / "original", media.source_path)
        except FileNotFoundError as exc:
            raise InputRejected("The uploaded file is no longer on the server.",
                                detail=str(exc)) from exc

    def _clear_scratch(self) -> None:
        """Earlier attempts of this media, and attempts on this host whose worker was killed
        (SIGKILL, OOM) before it could clean up after itself."""
        self.scratch.clear(self.media_id)
        for name in self.scratch.sweep():
            event(log, "scratch.removed", self.media_id, leftover=name)

    @staticmethod
    def _on_sigterm(callback: Callable[[], None]) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda signum, frame: callback())
        return lambda: signal.signal(signal.SIGTERM, previous)


def _tighten_rq_timeout(seconds: float) -> None:
    """Bring RQ's death penalty (a SIGALRM the horse armed with the enqueue-time outer bound)
    down to the limit that the probed duration allows, so a hang outside ffmpeg is caught
    too. Only when RQ's alarm handler is the one installed."""
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGALRM)
    owner = getattr(handler, "__self__", None)
    if owner is None or type(owner).__module__ != "rq.timeouts":
        return
    remaining = signal.alarm(0)
    signal.alarm(max(1, min(int(seconds), remaining) if remaining else int(seconds)))


__all__ = ["FfmpegFailed", "InputRejected", "publish_dir", "transcode_media"]
