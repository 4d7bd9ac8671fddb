"""Prometheus ``/metrics``: upload traffic, queues and transcoding.

Three sources, each measured where it can be measured correctly:

- Upload traffic is counted by ``UploadMetrics``, an observer of the tus handler's upload
  events (``tus_server.tus.events``), so each count happens where the thing happens: an upload
  row created, body bytes read from the client as they arrive, a request reading a body (the
  active gauge), a completion committed (once per non-partial upload, whichever request or
  process finds it), a termination, and each PATCH answered with its status and wall time
  (4xx/5xx = failed, labelled by status so a 409 resume or 423 lock can be told from a 500).
  These live in this process: with ``[server] workers`` > 1 they need Prometheus' multiprocess
  mode (see ``prepare_multiprocess``), which this module uses when its directory is set.
- Queue length and jobs by state are read from RQ's Redis keys at scrape time, so every
  process reports the same numbers and nothing is kept in between.
- Transcode duration and speed come from the durable ``transcode_run`` log (models/metrics.py),
  into which any scrape folds newly finished Media rows; the histograms are aggregated from
  that log in SQL, so they agree across processes and restarts.

Every metric lives in a ``CollectorRegistry`` owned by the app, never prometheus_client's global
one, so two apps in one process (tests) do not share counts.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from models.config import Settings
from models.metrics import TranscodeRun
from models.lifecycle import MediaState
from models.tables import Media, Upload
from tus_server.auth.requires import guarded, metrics_reader
from tus_server.context import AppContext
from tus_server.tus.events import NoEvents

log = logging.getLogger("tusflow.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TRANSCODE_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
REALTIME_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 32)
# Finished Media rows are looked for this far before the newest one already logged, so a row
# whose commit landed after a scrape that had passed its finished_at is still counted.
FOLD_OVERLAP = timedelta(minutes=10)
QUEUE_STATES = ("queued", "started", "scheduled", "deferred", "failed", "finished", "canceled")


def prepare_multiprocess(settings: Settings) -> Path:
    """For ``tusflow serve --workers N`` with N > 1, call once in the parent before the
    workers start: every worker then writes its counters to files here and any of them
    answers /metrics with the sum. Empties the directory, since files left by a previous
    run would be added to the new one's counts."""
    path = Path(settings.data_dir) / "prometheus"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class Metrics:
    """The registry of one app and the upload instruments ``UploadMetrics`` updates."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.registry = CollectorRegistry()
        multiproc = os.environ.get(MULTIPROC_ENV)
        if multiproc:
            from prometheus_client.multiprocess import MultiProcessCollector
            MultiProcessCollector(self.registry, path=multiproc)
        # In multiprocess mode the instruments write to files; registering them too would
        # report this process's values twice.
        own = None if multiproc else self.registry
        self.created = Counter("tusflow_uploads_created",
                               "Uploads created (plain, partial and final; POST with Location).",
                               registry=own)
        self.completed = Counter("tusflow_uploads_completed",
                                 "Non-partial uploads whose completion was recorded (handed to publishing).",
                                 registry=own)
        self.terminated = Counter("tusflow_uploads_terminated", "Uploads deleted by their client (DELETE).",
                                  registry=own)
        self.failed = Counter("tusflow_uploads_failed",
                              "PATCH requests answered with an error, by HTTP status.",
                              ["status"], registry=own)
        self.bytes = Counter("tusflow_upload_bytes_received",
                             "Upload body bytes read from clients (POST and PATCH).", registry=own)
        self.active = Gauge("tusflow_uploads_active", "Requests currently receiving upload bytes.",
                            registry=own, multiprocess_mode="livesum")
        self.patch_seconds = Histogram("tusflow_upload_patch_duration_seconds",
                                       "Wall time of PATCH requests, from reaching the tus endpoint to the end of the answer.",
                                       buckets=PATCH_BUCKETS, registry=own)
        self.registry.register(StateCollector(ctx.settings, ctx.engine))
        self._scrape_lock = threading.Lock()

    def upload_events(self) -> "UploadMetrics":
        """The observer to give the tus handler (composed with publishing in ``create_app``)."""
        return UploadMetrics(self)

    def routes(self) -> list[BaseRoute]:
        async def metrics(request: Request) -> Response:
            body = await anyio.to_thread.run_sync(self.scrape)
            return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
        return guarded([Route("/metrics", metrics, methods=["GET"])], metrics_reader(self.ctx.settings.auth.protect_metrics))

    def scrape(self) -> bytes:
        # One scrape at a time: collectors query Redis and the database, and two at once
        # would only do the same work twice.
        with self._scrape_lock:
            return generate_latest(self.registry)


class UploadMetrics(NoEvents):
    """Counts the tus handler's upload events; the handler carries no metrics code of its own."""

    def __init__(self, metrics: Metrics):
        self.m = metrics

    async def created(self, upload: Upload) -> None:
        self.m.created.inc()

    def receiving(self, upload: Upload, active: bool) -> None:
        if active:
            self.m.active.inc()
        else:
            self.m.active.dec()

    def progress(self, upload: Upload, nbytes: int) -> None:
        self.m.bytes.inc(nbytes)

    async def completed(self, upload: Upload) -> dict[str, str]:
        self.m.completed.inc()
        return {}

    async def terminated(self, upload: Upload) -> None:
        self.m.terminated.inc()

    def patch_answered(self, status: int | None, seconds: float) -> None:
        self.m.patch_seconds.observe(seconds)
        if status is None or status >= 400:
            self.m.failed.labels(str(status or "none")).inc()


class StateCollector(Collector):
    """Metrics read at scrape time from Redis and the database; nothing is kept in memory."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._database()

    # ------------------------------------------------------------------ RQ
    def _queues(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("tusflow_redis_up", "1 when Redis answered this scrape.")
        length = GaugeMetricFamily("tusflow_queue_length", "Jobs waiting in the queue.", labels=["queue"])
        jobs = GaugeMetricFamily("tusflow_queue_jobs", "RQ jobs by state.", labels=["queue", "state"])
        workers = GaugeMetricFamily("tusflow_queue_workers", "RQ workers listening on the queue.",
                                    labels=["queue"])
        try:
            counts = self._rq_counts()
        except Exception as exc:
            log.debug("metrics: Redis not readable: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        for name, (states, n_workers) in counts.items():
            length.add_metric([name], states["queued"])
            workers.add_metric([name], n_workers)
            for state in QUEUE_STATES:
                jobs.add_metric([name, state], states[state])
        return [up, length, jobs, workers]

    def _rq_counts(self) -> dict[str, tuple[dict[str, int], int]]:
        from rq import Queue, Worker

        from models.redis_conn import connect as redis_connection
        from transcoder.webhooks import queue_name
        conn = redis_connection(self.settings, timeout=2.0)
        try:
            out = {}
            for name in (self.settings.redis.queue, queue_name(self.settings)):
                q = Queue(name, connection=conn)
                registries = {"started": q.started_job_registry, "scheduled": q.scheduled_job_registry,
                              "deferred": q.deferred_job_registry, "failed": q.failed_job_registry,
                              "finished": q.finished_job_registry, "canceled": q.canceled_job_registry}
                # cleanup=False: a scrape must not move jobs between registries.
                states = {k: r.get_job_count(cleanup=False) for k, r in registries.items()}
                states["queued"] = q.count
                out[name] = (states, Worker.count(connection=conn, queue=q))
            return out
        finally:
            conn.close()

    # ------------------------------------------------------------------ database
    def _database(self) -> Iterable[Metric]:
        try:
            with Session(self.engine) as s:
                fold_transcode_runs(s)
                return [*self._state_gauges(s), *transcode_histograms(s)]
        except Exception as exc:
            log.warning("metrics: database not readable: %s", exc)
            return []

    @staticmethod
    def _state_gauges(s: Session) -> list[Metric]:
        incomplete = GaugeMetricFamily("tusflow_uploads_incomplete",
                                       "Uploads started and not finished (not yet expired or deleted).")
        incomplete.add_metric([], s.exec(select(func.count()).select_from(Upload)
                                         .where(col(Upload.completed_at).is_(None))).one())
        media = GaugeMetricFamily("tusflow_media", "Media items by state.", labels=["state"])
        counts = dict(s.exec(select(Media.state, func.count()).group_by(Media.state)).all())
        for state in MediaState:
            media.add_metric([state], counts.get(state, 0))
        return [incomplete, media]


def fold_transcode_runs(s: Session) -> int:
    """Copy Media finishes not yet in the log into it; returns how many were added. Safe to
    run in several processes at once: the primary key turns a second insert into a no-op."""
    newest = s.exec(select(func.max(TranscodeRun.finished_at))).one()
    query = select(Media).where(col(Media.finished_at).is_not(None), col(Media.started_at).is_not(None),
                                col(Media.state).in_((MediaState.READY, MediaState.FAILED)))
    if newest is not None:
        query = query.where(col(Media.finished_at) >= newest - FOLD_OVERLAP)
    candidates = s.exec(query).all()
    if not candidates:
        return 0
    logged = {(mid, _naive(at)) for mid, at in s.exec(
        select(TranscodeRun.media_id, TranscodeRun.finished_at)
        .where(col(TranscodeRun.media_id).in_([m.id for m in candidates]))).all()}
    runs = [TranscodeRun(media_id=m.id, finished_at=m.finished_at, outcome=m.state,
                         seconds=max((m.finished_at - m.started_at).total_seconds(), 0.0),
                         media_seconds=m.duration)
            for m in candidates if (m.id, _naive(m.finished_at)) not in logged]
    try:
        s.add_all(runs)
        s.commit()
        return len(runs)
    except IntegrityError:  # another process logged some first: add the rest one by one
        s.rollback()
    added = 0
    for run in runs:
        try:
            s.add(TranscodeRun.model_validate(run.model_dump()))
            s.commit()
            added += 1
        except IntegrityError:
            s.rollback()
    return added


def _naive(value: Any) -> Any:
    return value.replace(tzinfo=None) if getattr(value, "tzinfo", None) else value


def transcode_histograms(s: Session) -> list[Metric]:
    duration = HistogramMetricFamily("tusflow_transcode_duration_seconds",
                                     "Wall time of finished transcodes, by outcome.", labels=["outcome"])
    for outcome in (MediaState.READY, MediaState.FAILED):
        buckets, total = _histogram(s, col(TranscodeRun.seconds), TRANSCODE_BUCKETS,
                                    col(TranscodeRun.outcome) == outcome)
        duration.add_metric([outcome], buckets, total)
    realtime = HistogramMetricFamily(
        "tusflow_transcode_realtime_factor",
        "Seconds of video transcoded per second of wall time (x real time), ready media only.")
    speed = col(TranscodeRun.media_seconds) / col(TranscodeRun.seconds)
    buckets, total = _histogram(s, speed, REALTIME_BUCKETS, col(TranscodeRun.outcome) == MediaState.READY,
                                col(TranscodeRun.seconds) > 0, col(TranscodeRun.media_seconds) > 0)
    realtime.add_metric([], buckets, total)
    return [duration, realtime, *publish_latency_histograms(s)]


def publish_latency_histograms(s: Session) -> list[Metric]:
    """Seconds from the upload's last byte (the Media row is written by the completion) to
    the first published rendition (playable) and to the whole ladder (ready), per media item
    still in the database: a deleted or re-run item leaves these counts, unlike the durable
    transcode log above."""
    families = []
    dialect = s.get_bind().dialect.name
    for name, stamp, help_text in (
            ("tusflow_time_to_playable_seconds", Media.playable_at,
             "Seconds from the last uploaded byte to the first playable rendition."),
            ("tusflow_time_to_ready_seconds", Media.finished_at,
             "Seconds from the last uploaded byte to the whole ladder being published.")):
        family = HistogramMetricFamily(name, help_text)
        seconds = _seconds_between(dialect, col(Media.created_at), col(stamp))
        where = [col(stamp).is_not(None)]
        if name.endswith("ready_seconds"):
            where.append(col(Media.state) == MediaState.READY)
        buckets, total = _histogram(s, seconds, TRANSCODE_BUCKETS, *where)
        family.add_metric([], buckets, total)
        families.append(family)
    return families


def _seconds_between(dialect: str, start: Any, end: Any) -> Any:
    """end - start in seconds, spelled for the database at hand."""
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _histogram(s: Session, value: Any, bounds: Iterable[float], *where: Any) -> tuple[list[tuple[str, float]], float]:
    """Cumulative bucket counts and the sum, in one aggregate query."""
    bounds = list(bounds)
    columns = [func.sum(case((value <= b, 1), else_=0)) for b in bounds]
    row = s.exec(select(func.count(), func.coalesce(func.sum(value), 0.0), *columns).where(*where)).one()
    count, total, per_bucket = row[0], float(row[1]), [int(v or 0) for v in row[2:]]
    buckets = [(_le(b), float(n)) for b, n in zip(bounds, per_bucket)] + [("+Inf", float(count))]
    return buckets, total


def _le(bound: float) -> str:
    return str(float(bound))
