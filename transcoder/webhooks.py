"""Delivering the webhook outbox (``models.outbox``): RQ jobs with retries for ``max_age`` seconds.

A worker module, not a web one, because the RQ worker must import the delivery job without
Starlette (and ``transcoder`` never imports ``tus_server``); the rows themselves are core.

The order of operations is what makes delivery reliable:

1. ``record`` writes one ``WebhookDelivery`` row per receiver URL, ideally inside the same
   transaction as the change it announces, so an event exists exactly when the change does.
2. ``enqueue`` claims the row's ``enqueued_at`` and puts a wake-up job on
   ``<queue>-webhooks`` (its own queue, so deliveries never wait behind an hour of transcoding).
   If Redis is down the row stays un-enqueued and ``sweep`` enqueues it later.
3. ``attempt`` (run by the job) takes a lease on the row, POSTs, records the answer and, unless
   delivered or too old, schedules the next wake-up with ``Queue.enqueue_at``. A duplicate or
   stale job finds the row delivered, failed or leased and does nothing.

Retry policy (like Stripe and Mux): anything but a 2xx answer - 3xx and 4xx included, timeouts,
refused connections - is retried with exponential backoff until ``max_age`` after the event,
then the delivery is marked failed and waits for ``tusflow webhooks redeliver``. 4xx answers are
not treated as final because a receiver's 401/404 is usually a deploy or config slip on its
side that gets fixed within the day.

RQ scheduling (rq 3.0, see ``rq/scheduler.py``): ``enqueue_at`` only parks the job in the
queue's ScheduledJobRegistry. It is moved back to the queue by the scheduler of a worker that
listens on that queue and runs ``work(with_scheduler=True)``; one such worker holds a per-queue
Redis lock (TTL 61 s) and polls every second. If it dies, another scheduler-enabled worker takes
over at its next maintenance pass (stock RQ: every 10 minutes; ``tusflow worker``: every
``[worker] reconcile_interval``), and a ``--burst`` worker moves due jobs once at start and
never again. RQ stores the due time in whole seconds, so a retry can run up to a second early
and arbitrarily late. ``sweep`` (run by ``tusflow worker`` at each maintenance pass) enqueues
deliveries whose wake-up never reached Redis and re-enqueues those long overdue (Redis lost
its data, or a worker was SIGKILLed mid-attempt).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from models.clock import aware, utcnow
from models.config import CONFIG_ENV, Settings, load_settings
from models.db import make_engine, session_scope
from models.outbox import (DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, backoff, record, sign,
                           upload_data, wanted)
from models.redis_conn import connect
from models.tables import Upload
from models.webhooks import WebhookDelivery as WD

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("tusflow.webhooks")

QUEUE_SUFFIX = "-webhooks"
USER_AGENT = "tusflow-webhooks/1"
# A lease outlives the HTTP timeout by this much, so a slow attempt is never run twice at once.
LEASE_SLACK = 60.0
JOB = "transcoder.webhooks.deliver_webhook"


# ---------------------------------------------------------------------------------- redis
def queue_name(settings: Settings) -> str:
    return settings.redis.queue + QUEUE_SUFFIX


def _wake(settings: Settings, conn: "Redis", delivery_id: str, at: datetime | None = None) -> None:
    from rq import Queue
    queue = Queue(queue_name(settings), connection=conn)
    kwargs = dict(job_timeout=int(settings.webhooks.timeout + LEASE_SLACK), result_ttl=3600,
                  failure_ttl=7 * 86400, description=f"webhook {delivery_id}")
    if at is None or at <= utcnow():  # ids only: the worker brings its own Settings
        queue.enqueue(JOB, delivery_id, **kwargs)  # type: ignore[arg-type]
    else:
        queue.enqueue_at(at, JOB, delivery_id, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- waking
def enqueue(settings: Settings, engine: Engine, ids: Iterable[str]) -> list[str]:
    """Wake the deliveries whose wake-up has not reached Redis yet; returns those enqueued.
    Never raises: callers have already committed the change being announced, and a row left
    un-enqueued is picked up by ``sweep``."""
    try:
        return _enqueue(settings, engine, list(ids))
    except Exception as exc:
        log.warning("webhooks %s not enqueued (the sweep retries): %s", list(ids), exc)
        return []


def _enqueue(settings: Settings, engine: Engine, ids: list[str]) -> list[str]:
    claimed = []
    now = utcnow()
    with session_scope(engine) as s:
        for delivery_id in ids:
            result = s.exec(update(WD).where(WD.id == delivery_id, col(WD.enqueued_at).is_(None))
                            .values(enqueued_at=now))
            if result.rowcount == 1:
                claimed.append(delivery_id)
    if not claimed:
        return []
    try:
        # Short timeout: this runs while a client waits for its POST or final PATCH.
        conn = connect(settings, timeout=2.0)
        try:
            for delivery_id in claimed:
                _wake(settings, conn, delivery_id)
        finally:
            conn.close()
    except Exception:
        with session_scope(engine) as s:  # hand the rows to the sweep at once
            s.exec(update(WD).where(col(WD.id).in_(claimed)).values(enqueued_at=None))
        raise
    return claimed


def enqueue_subject(settings: Settings, engine: Engine, subject: str) -> list[str]:
    """Enqueue every not-yet-enqueued delivery about ``subject`` (after the caller's commit)."""
    if not settings.webhooks.urls:
        return []
    with Session(engine) as s:
        ids = s.exec(select(WD.id).where(WD.subject == subject, col(WD.enqueued_at).is_(None))).all()
    return enqueue(settings, engine, ids)


def emit(settings: Settings, engine: Engine, event: str, data: dict[str, Any],
         subject: str = "") -> list[str]:
    """Record and enqueue in one call, for callers without a transaction of their own.
    Never raises: failing to announce something must not fail the thing itself."""
    if not wanted(settings, event):
        return []
    try:
        with session_scope(engine) as s:
            ids = record(s, settings, event, data, subject)
    except Exception:
        log.exception("webhook %s for %s not recorded", event, subject)
        return []
    enqueue(settings, engine, ids)
    return ids


def announce_upload(settings: Settings, engine: Engine, event: str, upload: Upload) -> list[str]:
    """``emit`` for an upload. Partial uploads (pieces of a parallel upload) are not announced:
    the platform hears about the final upload they are concatenated into."""
    if upload.concat == "partial" or not wanted(settings, event):
        return []
    return emit(settings, engine, event, upload_data(upload), subject=upload.id)


# ---------------------------------------------------------------------------------- delivering
def _post(settings: Settings, row: WD) -> tuple[int | None, str | None]:
    import httpx
    body = row.payload.encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               SIGNATURE_HEADER: sign(settings.webhooks.secret, body, int(time.time())),
               DELIVERY_HEADER: row.id, EVENT_HEADER: row.event}
    try:
        with httpx.Client(timeout=settings.webhooks.timeout, follow_redirects=False) as client:
            response = client.post(row.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:300]}"


def attempt(settings: Settings, engine: Engine, delivery_id: str,
            conn: "Redis | None" = None) -> str:
    """One delivery attempt: ``delivered``, ``retry``, ``failed`` or ``skipped``."""
    now = utcnow()
    lease = now + timedelta(seconds=settings.webhooks.timeout + LEASE_SLACK)
    with session_scope(engine) as s:
        result = s.exec(update(WD).where(
            WD.id == delivery_id, col(WD.delivered_at).is_(None), col(WD.failed_at).is_(None),
            or_(col(WD.locked_until).is_(None), col(WD.locked_until) < now))
            .values(locked_until=lease, attempts=WD.attempts + 1))
        row = s.get(WD, delivery_id) if result.rowcount == 1 else None
    if row is None:
        return "skipped"
    try:
        status, error = _post(settings, row)
    except Exception as exc:  # e.g. RQ's job timeout: an attempt that failed like any other
        status, error = None, f"{type(exc).__name__}: {exc}"[:500]
    except BaseException:  # the worker is being killed: free the lease, the sweep takes over
        with session_scope(engine) as s:
            s.exec(update(WD).where(WD.id == delivery_id).values(locked_until=None))
        raise
    done = utcnow()
    outcome, next_at = "delivered", None
    with session_scope(engine) as s:
        row = s.get(WD, delivery_id)
        if row is None:  # deleted meanwhile
            return "skipped"
        row.last_status, row.last_error, row.locked_until = status, error, None
        if error is None:
            row.delivered_at, row.next_attempt_at = done, None
        else:
            next_at = done + timedelta(seconds=backoff(settings, row.attempts))
            max_age = timedelta(seconds=settings.webhooks.max_age)
            give_up = aware(row.give_up_at or row.created_at + max_age)
            if next_at > give_up:
                outcome, next_at = "failed", None
                row.failed_at, row.next_attempt_at = done, None
            else:
                outcome = "retry"
                row.next_attempt_at, row.enqueued_at = next_at, done
    log.info("webhook delivery=%s event=%s attempt=%d status=%s outcome=%s%s", delivery_id, row.event,
             row.attempts, status, outcome, f" error={error!r}" if error else "")
    if next_at is not None:
        _schedule_retry(settings, engine, delivery_id, next_at, conn)
    return outcome


def _schedule_retry(settings: Settings, engine: Engine, delivery_id: str, at: datetime,
                    conn: "Redis | None") -> None:
    own = conn is None
    try:
        conn = conn or connect(settings)
        _wake(settings, conn, delivery_id, at)
    except Exception as exc:
        log.warning("webhook delivery=%s retry not scheduled (the sweep retries): %s", delivery_id, exc)
        with session_scope(engine) as s:
            s.exec(update(WD).where(WD.id == delivery_id).values(enqueued_at=None))
    finally:
        if own and conn is not None:
            conn.close()


def deliver_webhook(delivery_id: str, _enqueued_with: object = None) -> str:
    """The RQ job. It carries the delivery id only and loads the worker's own Settings (its
    config file, exported as ``CONFIG_ENV``, and environment), so any worker on any host can
    deliver it and its overrides (e.g. a rotated secret) apply at delivery time.
    ``_enqueued_with``: the config path jobs enqueued before ids-only carried; ignored."""
    from rq import get_current_job
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    engine = make_engine(settings)
    job = get_current_job()
    try:
        return attempt(settings, engine, delivery_id, job.connection if job else None)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------- operating
def redeliver(settings: Settings, engine: Engine, ids: Iterable[str] = (),
              all_failed: bool = False) -> list[str]:
    """Send again now, with the same id and body, and a fresh ``max_age`` of retries.
    Works on delivered ones too (the receiver lost it); returns the ids that were reset."""
    now = utcnow()
    give_up = now + timedelta(seconds=settings.webhooks.max_age)
    with session_scope(engine) as s:
        query = select(WD.id)
        if all_failed:
            query = query.where(col(WD.failed_at).is_not(None))
        else:
            query = query.where(col(WD.id).in_(list(ids)))
        reset = list(s.exec(query).all())
        if reset:
            s.exec(update(WD).where(col(WD.id).in_(reset))
                   .values(delivered_at=None, failed_at=None, attempts=0, give_up_at=give_up,
                           next_attempt_at=now, enqueued_at=None))
    enqueue(settings, engine, reset)
    return reset


def sweep(settings: Settings, engine: Engine, grace: float = 600.0) -> list[str]:
    """Re-enqueue pending deliveries whose wake-up never reached Redis or is ``grace`` seconds
    overdue (lost with Redis data, or its worker was killed mid-attempt). Safe to run from
    several processes: each row is claimed by comparing the values it was read with."""
    now = utcnow()
    overdue = now - timedelta(seconds=grace)
    woken: list[str] = []
    with Session(engine) as s:
        rows = s.exec(select(WD).where(
            col(WD.delivered_at).is_(None), col(WD.failed_at).is_(None),
            or_(col(WD.enqueued_at).is_(None), col(WD.next_attempt_at) < overdue),
            or_(col(WD.locked_until).is_(None), col(WD.locked_until) < now)).limit(500)).all()
    if not rows:
        return []
    conn = connect(settings)
    try:
        for row in rows:
            at = max(aware(row.next_attempt_at or now), now)
            with session_scope(engine) as s:
                claim = update(WD).where(WD.id == row.id)
                claim = claim.where(col(WD.enqueued_at).is_(None) if row.enqueued_at is None
                                    else col(WD.enqueued_at) == row.enqueued_at)
                if s.exec(claim.values(enqueued_at=now, next_attempt_at=at)).rowcount != 1:
                    continue
            _wake(settings, conn, row.id, at)
            woken.append(row.id)
    finally:
        conn.close()
    if woken:
        log.info("webhooks swept: %s", woken)
    return woken
