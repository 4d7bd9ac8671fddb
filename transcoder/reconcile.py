"""Make Redis agree with the database again, so no media waits forever.

Runs in every worker between jobs (``[worker] reconcile_interval``) and is safe to run from
several processes at once. One pass:

1. **Dead workers.** A job in RQ's StartedJobRegistry whose worker is gone (its Redis key
   expired, or it lived on this host, its PID no longer exists and it has missed its
   heartbeats) is handed to RQ's own abandoned-job handling,
   ``StartedJobRegistry.cleanup``, right away instead of after the heartbeat TTL: RQ retries
   it (using a try, with backoff) or files it as failed. A dead worker's scheduler lock is
   released the same way, so the surviving workers can schedule those retries.
2. **Media rows.** Every ``queued``/``processing`` media is compared with its job:
   no ``enqueued_at`` → enqueue (the upload completed while Redis was down); job missing from
   Redis (Redis lost its data) → enqueue again as the next generation; job failed in RQ
   (worker killed on the last try) → media ``failed``; job waiting for a retry while the media
   still says ``processing`` (its worker died) → media back to ``queued``. A chunked
   generation (its job finished after handing the ladder to part jobs, see
   ``transcoder.fanout``) is never started over while its parts are in flight: lost parts are
   enqueued again under their own ids, a part RQ filed as failed fails the media
   (``_sync_parts``).

Every database write is a move of ``models.lifecycle``, conditional on the values just read,
so a job that moves on in the meantime is never overwritten.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Sequence

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError, SchedulerNotFound
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from models import lifecycle
from models.config import Settings
from models.layout import Layout
from models.lifecycle import MediaState, default_job_id, part_job_id
from models.logs import event, media_from_job_id
from models.mediastore import open_media_store
from models.redis_conn import connect
from models.tables import Media
from transcoder import webhooks
from transcoder import chunks
from transcoder.queue import enqueue_part, enqueue_transcode

log = logging.getLogger("tusflow.reconcile")

# A worker whose heartbeat is older than this and whose PID is gone is dead. Busy workers
# heartbeat every job_monitoring_interval (5 s in ``tusflow worker``), idle ones every
# reconcile_interval; requiring a missed heartbeat as well as a missing PID keeps two
# containers that share a hostname from declaring each other dead.
WORKER_STALE_S = 12.0
SCHEDULER_STALE_S = 5.0  # schedulers heartbeat every second
BATCH = 500
SPACING_KEY = "tusflow:reconcile-spacing"

WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.CREATED)
ENDED_BADLY = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


@dataclass
class ReconcileReport:
    enqueued: list[str] = field(default_factory=list)       # intents that had not reached Redis
    reenqueued: list[str] = field(default_factory=list)     # jobs Redis had lost
    abandoned: list[str] = field(default_factory=list)      # jobs of dead workers handed to RQ
    released_schedulers: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)       # media back to queued
    failed: list[str] = field(default_factory=list)         # media marked failed

    def __bool__(self) -> bool:
        return any((self.enqueued, self.reenqueued, self.abandoned, self.released_schedulers,
                    self.requeued, self.failed))


def reconcile(settings: Settings, engine: Engine, connection: Redis | None = None, *,
              queues: Sequence[str] = (), min_spacing: float = 0.0) -> ReconcileReport:
    """One pass; ``queues`` are extra queue names whose dead workers/schedulers to clear.

    With ``min_spacing`` > 0 the pass is skipped when any process started one less than that
    many seconds ago, so twenty workers do not each scan every media row every interval.
    """
    own = connection is None
    conn = connection if connection is not None else connect(settings)
    report = ReconcileReport()
    try:  # this host's cached originals of chunked generations that ended (before the spacing)
        chunks.sweep_cache(Layout(settings.data_dir), engine)
    except OSError as exc:
        event(log, "reconcile.cache_not_swept", None, level=logging.WARNING, error=str(exc))
    try:
        if min_spacing > 0 and not conn.set(f"{SPACING_KEY}:{settings.redis.queue}", 1, nx=True,
                                            px=max(1, int(min_spacing * 1000))):
            return report
        names = list(dict.fromkeys([settings.redis.queue, *queues]))
        for name in names:
            queue = Queue(name, connection=conn)
            recover_abandoned(queue, report)
            release_dead_scheduler(queue, report)
        sync_media(settings, engine, conn, report)
    finally:
        if own:
            conn.close()
    if report:
        event(log, "reconcile.done", None, enqueued=len(report.enqueued),
              reenqueued=len(report.reenqueued), abandoned=len(report.abandoned),
              requeued=len(report.requeued), failed=len(report.failed),
              schedulers=len(report.released_schedulers))
    return report


# ---------------------------------------------------------------------------------- liveness
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _older_than(moment: datetime | None, seconds: float) -> bool:
    if moment is None:
        return True
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc) - moment > timedelta(seconds=seconds)


def worker_is_dead(conn: Redis, worker_name: str | None) -> bool:
    if not worker_name:
        return False
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker_name, connection=conn)
    if worker is None:
        return True  # its key expired: no heartbeat for worker_ttl seconds
    if worker.hostname != socket.gethostname() or not worker.pid:
        return False  # another machine: RQ's heartbeat expiry will catch it
    return not pid_alive(worker.pid) and _older_than(worker.last_heartbeat, WORKER_STALE_S)


def recover_abandoned(queue: Queue, report: ReconcileReport) -> None:
    """Hand jobs of dead workers to RQ's abandoned-job handling now rather than later."""
    registry = queue.started_job_registry
    conn = queue.connection
    dead: list[tuple[str, str, str | None]] = []
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            continue
        if worker_is_dead(conn, job.worker_name):
            dead.append((job_id, execution_id, job.worker_name))
    if not dead or not queue.acquire_maintenance_lock():
        return  # nothing to do, or another process is cleaning this queue right now
    try:
        for job_id, execution_id, _ in dead:
            # Expire the entry; cleanup() then treats it exactly like a missed heartbeat.
            conn.zadd(registry.key, {f"{job_id}:{execution_id}": 0}, xx=True)
        registry.cleanup()
    finally:
        queue.release_maintenance_lock()
    for job_id, _, worker_name in dead:
        report.abandoned.append(job_id)
        event(log, "job.abandoned", media_from_job_id(job_id), level=logging.WARNING,
              job=job_id, worker=worker_name, action="handed to RQ for retry")
    for worker_name in {name for _, _, name in dead if name}:
        worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker_name,
                                    connection=conn)
        if worker is not None:
            worker.register_death()  # so `tusflow jobs status` stops listing it


def release_dead_scheduler(queue: Queue, report: ReconcileReport) -> None:
    """A SIGKILLed worker's scheduler keeps its lock for 61 s, and with it every retry
    waiting for its backoff; free it when its process is provably gone."""
    conn = queue.connection
    lock_key = RQScheduler.get_locking_key(queue.name)
    owner = conn.get(lock_key)
    if not owner:
        return
    name = owner.decode() if isinstance(owner, bytes) else str(owner)
    try:
        scheduler = RQScheduler.fetch(name, conn)
    except (SchedulerNotFound, KeyError, ValueError):
        # gone, or a hash only partly rewritten by its heartbeat after Redis lost its data
        # (KeyError 'name'): not provably dead, and RQ's own lock expiry still frees it
        return
    if scheduler.hostname != socket.gethostname() or not scheduler.pid:
        return
    if pid_alive(scheduler.pid) or not _older_than(scheduler.last_heartbeat, SCHEDULER_STALE_S):
        return
    if release_lock(conn, lock_key, name):
        report.released_schedulers.append(name)
        event(log, "scheduler.released", None, queue=queue.name, scheduler=name,
              pid=scheduler.pid)


# ---------------------------------------------------------------------------------- media
def _job_status(conn: Redis, job_id: str) -> JobStatus | None:
    try:
        return Job.fetch(job_id, connection=conn).get_status(refresh=False)
    except NoSuchJobError:
        return None


def _failure_reason(conn: Redis, job_id: str, status: JobStatus) -> str:
    if status == JobStatus.STOPPED:
        return "The conversion was stopped."
    if status == JobStatus.CANCELED:
        return "Cancelled."
    try:
        text = Job.fetch(job_id, connection=conn).exc_info or ""
    except NoSuchJobError:
        text = ""
    if "AbandonedJobError" in text or "Work-horse terminated" in text or not text:
        return "The worker converting this video stopped unexpectedly, on every try."
    return "The conversion failed."


@dataclass(frozen=True)
class MediaRow:
    """One queued/processing media as this pass read it, with its job's status in RQ."""

    media_id: str
    state: str
    job_id: str
    status: JobStatus | None
    enqueued_at: datetime | None
    started_at: datetime | None


@dataclass(frozen=True)
class Pass:
    """What every step of one pass over the media rows works with."""

    settings: Settings
    engine: Engine
    conn: Redis
    report: ReconcileReport


def sync_media(settings: Settings, engine: Engine, conn: Redis, report: ReconcileReport) -> None:
    with Session(engine) as session:
        rows = session.exec(
            select(Media.id, Media.state, Media.job_id, Media.enqueued_at, Media.started_at)
            .where(col(Media.state).in_(lifecycle.ACTIVE))
            .order_by(col(Media.created_at)).limit(BATCH)).all()
    job_ids = [job_id or default_job_id(media_id) for media_id, _, job_id, _, _ in rows]
    jobs = Job.fetch_many(job_ids, connection=conn) if job_ids else []  # one round trip
    step = Pass(settings, engine, conn, report)
    for (media_id, state, _, enqueued_at, started_at), job_id, job in zip(rows, job_ids, jobs):
        status = job.get_status(refresh=False) if job is not None else None
        try:
            _sync_one(step, MediaRow(media_id, state, job_id, status, enqueued_at, started_at))
        except RedisError:
            raise
        except Exception:  # one odd row must not stop the others
            log.exception("event=reconcile.media_error media=%s", media_id)


def _sync_one(step: Pass, row: MediaRow) -> None:
    """Decide what the media needs from how its row and its job disagree."""
    if row.enqueued_at is None:
        _enqueue_intent(step, row)
    elif row.status == JobStatus.STARTED or (row.status in WAITING and
                                             row.state == MediaState.QUEUED):
        return  # the normal cases
    elif row.status in (None, JobStatus.FINISHED) and \
            (fanned := chunks.fan_out_info(step.conn, row.job_id)) is not None:
        _sync_parts(step, row, fanned)  # the generation's job handed its ladder to parts
    elif row.status is None or row.status == JobStatus.FINISHED:
        _replace_lost_job(step, row)
    elif row.status in ENDED_BADLY:
        _fail_ended_job(step, row, row.status)
    elif row.status in WAITING and row.state == MediaState.PROCESSING:
        _requeue_abandoned(step, row, row.status)


def _enqueue_intent(step: Pass, row: MediaRow) -> None:
    """The upload completed while Redis was down: its job never reached the queue."""
    if enqueue_transcode(step.settings, step.engine, row.media_id, connection=step.conn):
        step.report.enqueued.append(row.media_id)


def _replace_lost_job(step: Pass, row: MediaRow) -> None:
    """Redis lost the job (restart without persistence, flushed) or it ended without
    finishing the media: the next generation, so a straggler of the old one can never
    collide with the new job, then enqueue."""
    new_id = lifecycle.new_generation(step.engine, row.media_id, row.job_id, row.enqueued_at)
    if new_id is None:
        return
    event(log, "job.lost", row.media_id, level=logging.WARNING, job=row.job_id, new_job=new_id)
    enqueue_transcode(step.settings, step.engine, row.media_id, connection=step.conn)
    step.report.reenqueued.append(row.media_id)


def _fail_ended_job(step: Pass, row: MediaRow, status: JobStatus, part_job: str = "") -> None:
    """RQ filed the job as failed (its worker was killed on the last try, or it was stopped);
    ``part_job``: the chunked generation's part that did."""
    reason = _failure_reason(step.conn, part_job or row.job_id, status)
    done = lifecycle.fail(step.engine, step.settings, row.media_id, row.job_id, reason,
                          keep_earlier_reason=True)
    if not done:
        return
    webhooks.enqueue(step.settings, step.engine, done.hooks)  # never raises; the sweep retries
    step.report.failed.append(row.media_id)
    event(log, "media.failed", row.media_id, level=logging.WARNING, job=row.job_id,
          job_status=status.value, reason=reason)


def _requeue_abandoned(step: Pass, row: MediaRow, status: JobStatus) -> None:
    """Its worker died and RQ put the job back for another try. Read the status again so a
    worker that picked it up in the meantime is not overwritten."""
    if _job_status(step.conn, row.job_id) not in WAITING:
        return
    if lifecycle.requeue_abandoned(step.engine, row.media_id, row.job_id, row.started_at):
        step.report.requeued.append(row.media_id)
        event(log, "media.requeued", row.media_id, job=row.job_id, job_status=status.value,
              why="its worker stopped; RQ retries the job")


def _sync_parts(step: Pass, row: MediaRow, fanned: dict) -> None:
    """A chunked generation: its own job finished after handing the ladder to part jobs, so
    the media is in hand as long as its parts are. Never a new generation while they run:
    - a part filed as failed (its worker killed on the last try) fails the media;
    - a released part Redis no longer holds, and not done, is enqueued again (same id), as is
      one still marked started whose worker is dead and that RQ no longer lists as started
      (its registry entry lost, so RQ's abandoned-job handling cannot requeue it);
    - every chunk done or released but none in the queue (a release lost in a crash): the
      next one is released; every part done and no join: the join is enqueued."""
    parts: list[str] = fanned["parts"]
    done: set[str] = fanned["done"]
    released = {p for p in parts if not p.startswith("chunk-")} | \
        {chunks.chunk_part(i) for i in range(fanned["released"])}
    wanted = [p for p in parts if p in released and p not in done]
    complete = all(p in done for p in parts)
    if complete:
        wanted.append(chunks.JOIN_PART)
    ids = [part_job_id(row.job_id, p) for p in wanted]
    jobs = Job.fetch_many(ids, connection=step.conn) if ids else []
    in_flight = 0
    for part, job_id, job in zip(wanted, ids, jobs):
        status = job.get_status(refresh=False) if job is not None else None
        if status in ENDED_BADLY:
            _fail_ended_job(step, row, status, part_job=job_id)
            return
        if status is None or (status == JobStatus.FINISHED and part == chunks.JOIN_PART) or \
                (status == JobStatus.STARTED and _orphaned_start(step, job)):
            # lost by Redis, a join that ended without making the media ready, or a part whose
            # worker died with RQ never to requeue it (no StartedJobRegistry entry left)
            plan = _plan(step, row)
            if plan is None:
                _replace_lost_job(step, row)  # nothing to resume from: start over
                return
            if job is not None:
                job.delete()
            enqueue_part(step.settings, step.conn, row.media_id, row.job_id, part,
                         plan["duration"])
            step.report.reenqueued.append(row.media_id)
            event(log, "part.lost", row.media_id, level=logging.WARNING, job=job_id)
            in_flight += 1
        elif status != JobStatus.FINISHED:
            in_flight += 1
    pending_chunks = fanned["released"] < sum(1 for p in parts if p.startswith("chunk-"))
    if not in_flight and pending_chunks and not complete:
        index = chunks.release_next(step.conn, row.job_id)
        plan = _plan(step, row)
        if plan is not None and index < len(plan["chunks"]):
            start, end = plan["chunks"][index]
            enqueue_part(step.settings, step.conn, row.media_id, row.job_id,
                         chunks.chunk_part(index),
                         (end if end is not None else plan["duration"]) - start)
            step.report.reenqueued.append(row.media_id)


def _orphaned_start(step: Pass, job: Job) -> bool:
    """A job marked started whose worker is dead and which is not in its queue's
    StartedJobRegistry: ``recover_abandoned`` (run just before) already handed every listed
    one to RQ, so nobody else will ever run this one again."""
    if not worker_is_dead(step.conn, job.worker_name):
        return False
    queue = Queue(job.origin or step.settings.redis.queue, connection=step.conn)
    listed = {j for j, _ in queue.started_job_registry.get_job_and_execution_ids(cleanup=False)}
    return job.id not in listed


def _plan(step: Pass, row: MediaRow) -> dict | None:
    """The chunked generation's plan, from the media store's staging (any host can read it)."""
    store = open_media_store(step.settings, Layout(step.settings.data_dir))
    return store.get_staged(row.media_id, row.job_id, chunks.PLAN_FILE)
