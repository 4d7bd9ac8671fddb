"""Putting transcoding jobs on the RQ queue, exactly once per media and generation.

The database is the source of truth; Redis only carries work. A Media row in state ``queued``
with ``enqueued_at`` empty is the durable intent to transcode, written in the same transaction
that completes the upload. ``enqueue_transcode`` turns the intent into an RQ job and stamps
``enqueued_at``; when Redis is down the stamp stays empty and ``transcoder.reconcile`` tries
again later.

Job ids are derived from the media id (``transcode-<id>``, see ``models.lifecycle``), and RQ's
``unique=True`` enqueue is an atomic check-and-push in Redis, so a completion handled twice, a
reconciler racing the server, or two reconcilers racing each other still leave one job. A
deliberate new run (``retry_media``, or a job Redis lost) moves the media to the next
*generation*, ``transcode-<id>-2``, ``-3``...: the old job, if it still runs somewhere, finds
``Media.job_id`` no longer names it and stands down, and it can never overwrite the new job's
Redis hash. Every change of a Media row goes through ``models.lifecycle``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.command import send_stop_job_command
from rq.exceptions import DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy.engine import Engine

from models import lifecycle
from models.config import Settings
from models.layout import Layout
from models.lifecycle import JOB_PREFIX, default_job_id, job_belongs_to, part_job_id
from models.logs import event
from models.mediastore import open_media_store
from models.redis_conn import connect
from transcoder import chunks

log = logging.getLogger("tusflow.queue")

JOB_FUNC = "transcoder.jobs.transcode_media"
# The chunked ladder's parts (transcoder/partjobs.py); arguments are ids and an index only.
PART_FUNCS = {"chunk": "transcoder.partjobs.transcode_chunk",
              "audio": "transcoder.partjobs.transcode_audio",
              "join": "transcoder.partjobs.join_chunks"}
# How long RQ keeps a finished job (``tusflow jobs status`` shows recent ones).
RESULT_TTL = 24 * 3600
# Outer bound only: the job tightens its own limit to the probed duration (see jobs.py), but
# RQ's worker fixes the limit when the job is enqueued, before anyone knows the duration.
TIMEOUT_MARGIN = 600

ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED,
                   JobStatus.CREATED)
ENDED_STATUSES = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


class MediaNotFound(LookupError):
    """No Media row with that id."""


def get_queue(settings: Settings, connection: Redis) -> Queue:
    return Queue(settings.redis.queue, connection=connection)


def retry_policy(settings: Settings, attempts_used: int = 0) -> Retry | None:
    """RQ Retry for the tries left: ``[worker] tries`` in all, waiting ``retry_backoff``."""
    retries = max(0, settings.worker.tries - max(0, attempts_used) - 1)
    if retries == 0:
        return None
    backoff = list(settings.worker.retry_backoff) or [0]
    # RQ picks interval[len - retries_left]; give it exactly one interval per retry, in order.
    intervals = (backoff + [backoff[-1]] * retries)[:retries]
    return Retry(max=retries, interval=intervals)


def job_timeout(settings: Settings) -> int:
    cfg = settings.transcode
    return int(max(cfg.timeout_min, cfg.max_duration * cfg.timeout_factor) + TIMEOUT_MARGIN)


class _Conn:
    """Use the caller's Redis client, or open (and close) our own.

    Our own fails fast (2 s, no retry): the upload-completion path waits on it while a
    client waits for its final PATCH, and a Redis that does not answer at once is a job for
    the reconciler, not a reason to hold the upload.
    """

    def __init__(self, settings: Settings, connection: Redis | None):
        self.own = connection is None
        self.conn = connection if connection is not None else connect(settings, timeout=2.0,
                                                                      retries=0)

    def __enter__(self) -> Redis:
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        if self.own:
            self.conn.close()


def enqueue_transcode(settings: Settings, engine: Engine, media_id: str, *,
                      connection: Redis | None = None) -> bool:
    """Turn the media's durable intent into an RQ job; True when this call created the job.

    Idempotent: a media that is ready or failed, or whose job is already in Redis, gets no
    new job. Raises RedisError when Redis cannot be reached (callers on the upload path
    swallow it; the reconciler enqueues later).
    """
    media = lifecycle.get(engine, media_id)
    if media is None:
        event(log, "enqueue.skipped", media_id, why="no such media")
        return False
    if media.state not in lifecycle.ACTIVE:
        return False
    job_id = media.job_id or default_job_id(media_id)
    with _Conn(settings, connection) as conn:
        queue = get_queue(settings, conn)
        try:
            # The id only: whichever worker takes it loads its own Settings (jobs.py).
            queue.enqueue(JOB_FUNC, media_id, job_id=job_id, unique=True,
                          retry=retry_policy(settings, media.attempts),
                          job_timeout=job_timeout(settings), result_ttl=RESULT_TTL,
                          description=f"transcode media={media_id}")
            created = True
        except DuplicateJobError:
            created = False
    lifecycle.mark_enqueued(engine, media_id, job_id)
    event(log, "job.enqueued" if created else "job.already_enqueued", media_id, job=job_id)
    return created


def part_timeout(settings: Settings, seconds: float) -> int:
    """A part's outer time limit from the media seconds it covers (the job tightens it)."""
    cfg = settings.transcode
    return int(max(cfg.timeout_min, seconds * cfg.timeout_factor) + TIMEOUT_MARGIN)


def enqueue_part(settings: Settings, conn: Redis, media_id: str, job_id: str, part: str,
                 seconds: float) -> bool:
    """Put one part of a chunked generation (``chunk-<i>``, ``audio``, ``join``) on the queue,
    at the back, with its own retries; True when this call created it (ids are unique)."""
    kind = part.split("-", 1)[0]
    args: tuple[Any, ...] = (media_id, job_id)
    if kind == "chunk":
        args += (int(part.split("-", 1)[1]),)
    try:
        get_queue(settings, conn).enqueue(
            PART_FUNCS[kind], *args, job_id=part_job_id(job_id, part), unique=True,
            retry=retry_policy(settings), job_timeout=part_timeout(settings, seconds),
            result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL,
            description=f"transcode media={media_id} part={part}")
    except DuplicateJobError:
        return False
    event(log, "part.enqueued", media_id, job=part_job_id(job_id, part))
    return True


def chunked_parts(conn: Redis, job_id: str) -> dict[str, Any] | None:
    """A chunked generation's parts and which are done (``chunks.fan_out_info``), for the
    ``tusflow jobs status`` view; None for a whole-video generation."""
    return chunks.fan_out_info(conn, job_id)


def _candidate_job_ids(queue: Queue, media_id: str, known: Iterable[str | None]) -> set[str]:
    """Every job id of this media that Redis may still hold, current generation or not."""
    ids = {job_id for job_id in known if job_id}
    ids.add(default_job_id(media_id))
    listed = list(queue.get_job_ids())
    listed += queue.scheduled_job_registry.get_job_ids(cleanup=False)
    listed += queue.started_job_registry.get_job_ids(cleanup=False)
    listed += queue.failed_job_registry.get_job_ids(cleanup=False)
    ids.update(job_id for job_id in listed if job_belongs_to(job_id, media_id))
    return ids


def discard_jobs(conn: Redis, job_ids: Iterable[str]) -> int:
    """``_discard_jobs`` for the part jobs (a chunk that fails for good stops its siblings)."""
    return _discard_jobs(conn, job_ids)


def media_job_ids(settings: Settings, conn: Redis, media_id: str) -> set[str]:
    """Every job id Redis may still hold for this media: generations and their parts."""
    return _candidate_job_ids(get_queue(settings, conn), media_id, [])


def _discard_jobs(conn: Redis, job_ids: Iterable[str]) -> int:
    """Stop running jobs (the worker kills the horse) and delete the others; returns how many
    jobs were touched. A stopped job is left for RQ to file as STOPPED: deleting its hash
    while the worker still finishes its bookkeeping would only recreate a partial one."""
    touched = 0
    for job_id in job_ids:
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            continue
        touched += 1
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED:
            try:
                send_stop_job_command(conn, job_id)
            except (InvalidJobOperation, NoSuchJobError):
                pass
            continue
        job.delete()
    return touched


def cancel_media(settings: Settings, engine: Engine, media_id: str, *,
                 connection: Redis | None = None) -> bool:
    """Take the media's jobs out of Redis (stopping a running one); used by DELETE.

    A media left in the database is marked failed ("Cancelled.") so the reconciler does not
    enqueue it again. Returns whether any job was found. Raises RedisError when Redis is down;
    a job that survives that way finds its media gone or cancelled and stands down.
    """
    media = lifecycle.cancel(engine, media_id)
    known = [media.job_id] if media is not None else []
    with _Conn(settings, connection) as conn:
        touched = _discard_jobs(conn, _candidate_job_ids(get_queue(settings, conn), media_id, known))
    # A chunked run's finished parts wait in the store's staging for a join that will not come.
    open_media_store(settings, Layout(settings.data_dir)).delete_staging(media_id)
    event(log, "job.cancelled", media_id, jobs=touched)
    return touched > 0


def retry_media(settings: Settings, engine: Engine, media_id: str, *,
                connection: Redis | None = None) -> None:
    """Transcode again from scratch, whatever the media's state, as a new generation.

    The reset is committed first, so it is durable even when Redis is down (the reconciler
    enqueues it then) and a still-running old job stands down at its next progress tick.
    The published output of an earlier run stays visible until the new one replaces it.
    """
    generation = lifecycle.retry(engine, media_id)
    if generation is None:
        raise MediaNotFound(media_id)
    old_job, new_job = generation.previous, generation.current
    event(log, "media.retry", media_id, job=new_job, previous=old_job)
    try:
        with _Conn(settings, connection) as conn:
            queue = get_queue(settings, conn)
            stale = _candidate_job_ids(queue, media_id, [old_job]) - {new_job}
            _discard_jobs(conn, stale)
            enqueue_transcode(settings, engine, media_id, connection=conn)
    except RedisError as exc:
        event(log, "enqueue.deferred", media_id, level=logging.WARNING, error=str(exc))


def queue_position(settings: Settings, media_id: str, *,
                   connection: Redis | None = None) -> int | None:
    """1 for the job that starts next, 2 for the one after...; None when the media has no job
    waiting in the queue (running, waiting for a retry, done, or not in Redis yet)."""
    return queue_positions(settings, [media_id], connection=connection)[media_id]


def queue_positions(settings: Settings, media_ids: Iterable[str], *,
                    connection: Redis | None = None) -> dict[str, int | None]:
    """``queue_position`` for many media with one Redis round trip (list pages)."""
    wanted = {media_id: None for media_id in media_ids}  # type: dict[str, int | None]
    if not wanted:
        return wanted
    with _Conn(settings, connection) as conn:
        for index, job_id in enumerate(get_queue(settings, conn).get_job_ids()):
            # a chunk's job (``transcode-<id>-chunk-3``) counts as its video's place in line
            rest = job_id[len(JOB_PREFIX):] if job_id.startswith(JOB_PREFIX) else ""
            media_id = rest.split("-", 1)[0]
            if media_id in wanted and wanted[media_id] is None and job_belongs_to(job_id, media_id):
                wanted[media_id] = index + 1
    return wanted


__all__ = ["MediaNotFound", "RedisError", "cancel_media", "enqueue_transcode", "queue_position",
           "queue_positions", "retry_media"]
