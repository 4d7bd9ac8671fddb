"""The Media lifecycle: its states, the moves between them, and the one place each move is made.

Three kinds of process change a Media row at the same time, each acting on what it read a
moment earlier: the RQ job converting it (claim, progress, ready, failed, requeue), the
reconciler repairing what Redis lost (requeue, new generation, failed), and the web API and
the ``tusflow jobs`` command (cancel, retry, delete). So every move here is one conditional
UPDATE, a compare-and-set on the row:

- it may start only from the states ``MOVES`` lists for it, and
- a move made *for a job* also requires ``Media.job_id`` to still name that job. Each deliberate
  new run (``retry``, or a job Redis lost) is a new *generation* with a new job id
  (``transcode-<id>`` → ``transcode-<id>-2`` → ...), so the old job, wherever it still runs,
  finds every one of its moves refused and stands down.

A refused move is a return value, not an exception: ``False`` (or ``None`` where the move
returns something), and the row is unchanged. In the database an impossible move and a lost
race look the same (the row is gone, superseded, or already moved on), and for the caller they
mean the same thing: this process has nothing more to do for the row. ``allowed(move, state)``
answers the question without touching the database.

Moves that the outside world hears about (``media.ready``, ``media.failed``,
``media.deleted``) record their webhook rows through ``models.outbox`` in the same transaction,
so the event exists exactly when the change does, and return the delivery ids in an
``Outcome``; the caller hands them to ``transcoder.webhooks.enqueue`` after the commit.

States are stored as the plain strings of ``MediaState`` (``Media.state`` is a string column);
``MediaState`` is a ``StrEnum`` so rows, JSON answers and comparisons with ``"ready"`` agree.
``playable`` (issue 10) sits between ``processing`` and ``ready``: at least one rendition is
published and the master lists it, while the job goes on with the rest. It is a working state
(progress, ready and requeue accept it); ``Move.PLAYABLE`` enters it from ``processing`` (and
records ``media.playable``) or stays in it when a later rendition is published. Each rendition
has its own ``RenditionState`` inside ``Media.renditions_json``, written by the same job-owned
moves (``progress`` and ``mark_playable``), so the two can never disagree about who wrote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from models import outbox
from models.clock import utcnow
from models.config import Settings
from models.db import session_scope
from models.tables import Media, Upload


class MediaState(StrEnum):
    """Where a media item is, as stored in ``Media.state`` (like RQ's ``JobStatus``)."""

    QUEUED = "queued"          # waiting for a job (or for its job to reach Redis)
    PROCESSING = "processing"  # a job has claimed it and is converting
    PLAYABLE = "playable"      # one rendition or more is published; the rest is converting
    READY = "ready"            # the ladder is published
    FAILED = "failed"          # given up (after the tries, rejected input, or cancelled)


WORKING = frozenset({MediaState.PROCESSING, MediaState.PLAYABLE})  # a job is converting it
# Its master playlist may be served: some (playable) or all (ready) renditions are out.
SERVABLE = frozenset({MediaState.PLAYABLE, MediaState.READY})
ACTIVE = frozenset({MediaState.QUEUED}) | WORKING  # it has (or wants) a job
EVERY = frozenset(MediaState)


class RenditionState(StrEnum):
    """One rendition's place, as stored in each entry of ``Media.renditions_json``."""

    PENDING = "pending"        # planned, not started
    ENCODING = "encoding"      # being written (copied, or encoded) in scratch
    READY = "ready"            # all segments and its playlist published; in the master
    REPLACED = "replaced"      # was a stand-in (first rung, copied source) and left the master
    DROPPED = "dropped"        # measured to add nothing over the rung above; never published


class Move(StrEnum):
    CLAIM = "claim"
    PROGRESS = "progress"
    PLAYABLE = "playable"
    READY = "ready"
    FAIL = "fail"
    REQUEUE = "requeue"
    NEW_GENERATION = "new_generation"
    ENQUEUED = "enqueued"
    CANCEL = "cancel"
    RETRY = "retry"
    DELETE = "delete"


@dataclass(frozen=True)
class Transition:
    sources: frozenset[MediaState]
    target: MediaState | None  # None: the state stays as it is (DELETE: the row goes)


MOVES: dict[Move, Transition] = {
    # Queued, or still "processing" after its worker died and RQ handed the job out again.
    # Never from failed: a job that survived a cancel (Redis was down) must not resurrect it.
    Move.CLAIM: Transition(ACTIVE, MediaState.PROCESSING),
    Move.PROGRESS: Transition(WORKING, None),
    Move.PLAYABLE: Transition(WORKING, MediaState.PLAYABLE),
    Move.READY: Transition(WORKING, MediaState.READY),
    Move.FAIL: Transition(ACTIVE, MediaState.FAILED),
    # Back in the queue with the job unchanged: a shutdown, a dead worker, a try that failed.
    Move.REQUEUE: Transition(WORKING, MediaState.QUEUED),
    # The job was lost by Redis: the same media again as the next job id.
    Move.NEW_GENERATION: Transition(ACTIVE, MediaState.QUEUED),
    # The job reached Redis; the state is not touched.
    Move.ENQUEUED: Transition(ACTIVE, None),
    Move.CANCEL: Transition(ACTIVE, MediaState.FAILED),
    # Deliberately converting again, from wherever it is.
    Move.RETRY: Transition(EVERY, MediaState.QUEUED),
    Move.DELETE: Transition(EVERY, None),
}

CANCELLED = "Cancelled."
JOB_PREFIX = "transcode-"
RETRY_CONFLICTS = 5  # concurrent retries of one media are rare; give up on a livelock


@dataclass(frozen=True)
class Outcome:
    """What a move did: whether it changed the row, and the webhook deliveries it recorded
    (wake them with ``transcoder.webhooks.enqueue`` once this returns: it has committed)."""

    changed: bool
    hooks: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.changed


def allowed(move: Move, state: str) -> bool:
    """Whether ``move`` may start from ``state`` (a stored value or a ``MediaState``)."""
    return state in MOVES[move].sources


# ---------------------------------------------------------------------------------- job ids
def default_job_id(media_id: str) -> str:
    """The first generation's job id."""
    return f"{JOB_PREFIX}{media_id}"


def next_job_id(current: str | None, media_id: str) -> str:
    """The id of the next generation: ``transcode-<id>`` → ``transcode-<id>-2`` → ``-3``."""
    base = default_job_id(media_id)
    match = re.fullmatch(re.escape(base) + r"-(\d+)", current or "")
    return f"{base}-{int(match.group(1)) + 1 if match else 2}"


# A chunked ladder (issue 10) runs as part jobs of one generation: ``<generation>-chunk-<i>``,
# ``<generation>-audio`` and ``<generation>-join``; they belong to the media like the
# generation's own job, so cancel, retry and queue positions find them.
PART_SUFFIX = re.compile(r"(?:\d+-)?(?:chunk-\d+|audio|join)")


def part_job_id(generation_job_id: str, part: str) -> str:
    """The id of one part (``chunk-3``, ``audio``, ``join``) of a generation's chunked run."""
    return f"{generation_job_id}-{part}"


def generation_of(job_id: str, media_id: str) -> str:
    """The generation job id a job of this media belongs to (itself for a whole-video job)."""
    base = default_job_id(media_id)
    rest = job_id[len(base) + 1:] if job_id.startswith(base + "-") else ""
    number = rest.split("-", 1)[0]
    return f"{base}-{number}" if number.isdigit() else base


def job_belongs_to(job_id: str, media_id: str) -> bool:
    base = default_job_id(media_id)
    if job_id == base:
        return True
    rest = job_id[len(base) + 1:] if job_id.startswith(base + "-") else ""
    return rest.isdigit() or bool(rest and PART_SUFFIX.fullmatch(rest))


# ---------------------------------------------------------------------------------- reading
def get(engine: Engine, media_id: str) -> Media | None:
    with Session(engine) as session:
        return session.get(Media, media_id)


def is_current(engine: Engine, media_id: str, job_id: str) -> bool:
    """Whether ``job_id`` is still converting the media: its job (not deleted, not
    superseded) and in a working state (not cancelled)."""
    media = get(engine, media_id)
    return media is not None and media.job_id == job_id and media.state in WORKING


# ---------------------------------------------------------------------------------- moves of a job
def claim(engine: Engine, media_id: str, job_id: str) -> Media | None:
    """Mark processing and count the try, only if ``job_id`` is the media's job (or the media
    has none yet: the job can start before its enqueue stamp is written). The claimed row, or
    None when refused."""
    now = utcnow()
    with session_scope(engine) as session:
        if not _move(session, Move.CLAIM, media_id, _owned_or_unowned(job_id),
                     attempts=Media.attempts + 1, job_id=job_id, progress=0.0, eta_seconds=None,
                     error=None, started_at=now, playable_at=None, finished_at=None,
                     updated_at=now):
            return None
        return session.get(Media, media_id, populate_existing=True)


def progress(engine: Engine, media_id: str, job_id: str, percent: float,
             eta: float | None, *, renditions_json: str | None = None,
             fast_path_json: str | None = None) -> bool:
    """Record how far the job is (and, when given, each rendition's state and the fast
    path's verdict); False means the job is no longer wanted (deleted, cancelled or
    superseded), so it should stop."""
    extra: dict[str, Any] = {}
    if renditions_json is not None:
        extra["renditions_json"] = renditions_json
    if fast_path_json is not None:
        extra["fast_path_json"] = fast_path_json
    with session_scope(engine) as session:
        return _move(session, Move.PROGRESS, media_id, _owned_by(job_id),
                     progress=round(min(max(percent, 0.0), 100.0), 1),
                     eta_seconds=None if eta is None else round(max(eta, 0.0), 1), **extra)


def mark_playable(engine: Engine, settings: Settings, media_id: str, job_id: str, *,
                  duration: float | None, width: int | None, height: int | None,
                  renditions_json: str) -> Outcome:
    """A rendition (more) is published and in the master. The first time (from
    ``processing``) stamps ``playable_at`` and records ``media.playable``."""
    now = utcnow()
    with session_scope(engine) as session:
        first = _move(session, Move.PLAYABLE, media_id, _owned_by(job_id),
                      col(Media.state) == MediaState.PROCESSING, duration=duration, width=width,
                      height=height, renditions_json=renditions_json, playable_at=now,
                      updated_at=now)
        if first:
            return Outcome(True, tuple(_announce(session, settings, "media.playable", media_id)))
        again = _move(session, Move.PLAYABLE, media_id, _owned_by(job_id),
                      renditions_json=renditions_json, updated_at=now)
    return Outcome(again)


def mark_ready(engine: Engine, settings: Settings, media_id: str, job_id: str, *,
               duration: float | None, width: int | None, height: int | None,
               renditions_json: str, has_poster: bool, has_storyboard: bool) -> Outcome:
    """The job published its ladder; records ``media.ready``."""
    now = utcnow()
    with session_scope(engine) as session:
        changed = _move(session, Move.READY, media_id, _owned_by(job_id), progress=100.0,
                        eta_seconds=0.0, error=None, duration=duration, width=width,
                        height=height, renditions_json=renditions_json, has_poster=has_poster,
                        has_storyboard=has_storyboard, finished_at=now, updated_at=now)
        hooks = _announce(session, settings, "media.ready", media_id) if changed else []
    return Outcome(changed, tuple(hooks))


def fail(engine: Engine, settings: Settings, media_id: str, job_id: str, reason: str, *,
         keep_earlier_reason: bool = False) -> Outcome:
    """Give up on the media (no tries left, input rejected, or RQ filed the job as failed);
    records ``media.failed``. ``keep_earlier_reason``: the reconciler only knows that the job
    ended badly, while the job itself may already have written why."""
    now = utcnow()
    error: Any = reason[:1000]
    if keep_earlier_reason:
        error = func.coalesce(Media.error, error)
    with session_scope(engine) as session:
        changed = _move(session, Move.FAIL, media_id, _owned_or_unowned(job_id), progress=0.0,
                        eta_seconds=None, error=error, finished_at=now, updated_at=now)
        hooks = _announce(session, settings, "media.failed", media_id) if changed else []
    return Outcome(changed, tuple(hooks))


def retry_later(engine: Engine, media_id: str, job_id: str, reason: str) -> bool:
    """A try failed and RQ will run the job again after its backoff: queued, with the reason."""
    with session_scope(engine) as session:
        return _move(session, Move.REQUEUE, media_id, _owned_by(job_id), progress=0.0,
                     eta_seconds=None, error=reason[:1000])


def requeue_for_shutdown(engine: Engine, media_id: str, job_id: str) -> bool:
    """The worker is shutting down: queued again, and the try it used is given back."""
    with session_scope(engine) as session:
        return _move(session, Move.REQUEUE, media_id, _owned_by(job_id),
                     attempts=Media.attempts - 1, progress=0.0, eta_seconds=None, started_at=None)


# ---------------------------------------------------------------------------------- moves of the reconciler
def requeue_abandoned(engine: Engine, media_id: str, job_id: str,
                      started_at: datetime | None) -> bool:
    """The job's worker died and RQ put the job back for another try. ``started_at`` is the
    claim the caller saw: a worker that claimed the job again since is not overwritten."""
    with session_scope(engine) as session:
        return _move(session, Move.REQUEUE, media_id, _owned_by(job_id),
                     col(Media.started_at) == started_at, progress=0.0, eta_seconds=None)


def new_generation(engine: Engine, media_id: str, job_id: str,
                   enqueued_at: datetime | None) -> str | None:
    """Redis lost the job (or it ended without finishing the media): move to the next job id
    and clear the enqueue stamp, so the caller enqueues it again and a straggler of the old
    job can never collide with the new one. ``enqueued_at`` is the stamp the caller saw.
    The new job id, or None when refused."""
    new_id = next_job_id(job_id, media_id)
    with session_scope(engine) as session:
        changed = _move(session, Move.NEW_GENERATION, media_id, _owned_or_unowned(job_id),
                        col(Media.enqueued_at) == enqueued_at, job_id=new_id, enqueued_at=None,
                        progress=0.0, eta_seconds=None)
    return new_id if changed else None


# ---------------------------------------------------------------------------------- moves of the queue, API and CLI
def mark_enqueued(engine: Engine, media_id: str, job_id: str) -> bool:
    """Stamp that ``job_id`` reached Redis (the first stamp stays)."""
    now = utcnow()
    with session_scope(engine) as session:
        return _move(session, Move.ENQUEUED, media_id, _owned_or_unowned(job_id), job_id=job_id,
                     enqueued_at=func.coalesce(Media.enqueued_at, now), updated_at=now)


def cancel(engine: Engine, media_id: str) -> Media | None:
    """Failed with "Cancelled." if it still has (or wants) a job, whichever job that is, so the
    reconciler does not enqueue it again and a job that is still running stands down. The
    row afterwards (cancelled or not), or None when there is none."""
    now = utcnow()
    with session_scope(engine) as session:
        _move(session, Move.CANCEL, media_id, error=CANCELLED, eta_seconds=None,
              finished_at=now, updated_at=now)
        return session.get(Media, media_id, populate_existing=True)


@dataclass(frozen=True)
class Generation:
    previous: str | None
    current: str


def retry(engine: Engine, media_id: str) -> Generation | None:
    """Convert again from scratch as the next generation: queued, no tries used, no enqueue
    stamp (the caller enqueues). None when there is no such media."""
    for _ in range(RETRY_CONFLICTS):
        media = get(engine, media_id)
        if media is None:
            return None
        new_id = next_job_id(media.job_id, media_id)
        with session_scope(engine) as session:
            if _move(session, Move.RETRY, media_id, col(Media.job_id) == media.job_id,
                     job_id=new_id, progress=0.0, eta_seconds=None, error=None, attempts=0,
                     enqueued_at=None, started_at=None, playable_at=None, finished_at=None):
                return Generation(media.job_id, new_id)
        # Someone moved it to another generation between our read and our write: again.
    raise RuntimeError(f"media {media_id}: the job id kept changing under the retry")


def delete(engine: Engine, settings: Settings, media_id: str, *,
           seen: Media | None = None) -> Outcome:
    """Remove the media and the upload it was made from (they share the id); records
    ``media.deleted``, describing ``seen`` (the row as the caller read it before cancelling its
    job, so receivers hear the state it was deleted in) or else the row as it is now. Files
    are the caller's to remove."""
    with session_scope(engine) as session:
        media = session.get(Media, media_id, populate_existing=True)
        if media is None:
            return Outcome(False)
        data = outbox.media_data(seen if seen is not None else media)
        session.delete(media)
        upload = session.get(Upload, media_id)
        if upload is not None:
            session.delete(upload)
        hooks = outbox.record(session, settings, "media.deleted", data, subject=media_id)
    return Outcome(True, tuple(hooks))


# ---------------------------------------------------------------------------------- helpers
def _owned_by(job_id: str) -> ColumnElement[bool]:
    return col(Media.job_id) == job_id


def _owned_or_unowned(job_id: str) -> ColumnElement[bool]:
    return or_(col(Media.job_id) == job_id, col(Media.job_id).is_(None))


def _move(session: Session, move: Move, media_id: str, *conditions: ColumnElement[bool],
          **values: Any) -> bool:
    """The one conditional UPDATE every move is: True when it changed the row."""
    transition = MOVES[move]
    statement = update(Media).where(col(Media.id) == media_id,
                                    col(Media.state).in_([s.value for s in transition.sources]),
                                    *conditions)
    if transition.target is not None:
        values["state"] = transition.target.value
    values.setdefault("updated_at", utcnow())
    return session.exec(statement.values(**values)).rowcount == 1  # type: ignore[call-overload]


def _announce(session: Session, settings: Settings, event: str, media_id: str) -> list[str]:
    """Record a media.* webhook in the transaction that makes it true."""
    if not outbox.wanted(settings, event):
        return []
    media = session.get(Media, media_id, populate_existing=True)
    if media is None:
        return []
    return outbox.record(session, settings, event, outbox.media_data(media), subject=media_id)
