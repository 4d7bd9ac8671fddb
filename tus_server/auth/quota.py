"""Per-user quota, decided at creation from the Upload rows, before a single byte is sent.

Counting from the rows (the declared ``Upload-Length``, or the bytes so far while the length is
deferred) rather than from the disk means an upload that has only just started already counts in
full, so two devices cannot both start an upload that only fits once.

- bytes per day: what the user's uploads created since 00:00 UTC declare, final (concatenated)
  uploads included: a final is a server-side copy of its partials, and the server writes and
  keeps those bytes a second time (the partials stay until they expire). Not counting it let one
  small partial, listed many times or in many finals, store any amount. Uploads terminated with
  DELETE no longer count.
- bytes in total: what the user occupies now: unfinished uploads, finished partial uploads (kept
  until they expire), and finished uploads whose media item still exists.

The check and the reservation are one step (``reserve``): it runs in the transaction that
inserts the new upload's row, after that insert, and counts the user's rows with the new one
among them, under a lock that makes every other creation by the same user wait for the commit.
On SQLite the insert itself takes the database's single write lock; on PostgreSQL a
transaction-scoped advisory lock keyed by the user does (a row lock needs a row, and a user's
first two uploads have none to lock). Two uploads started at the same instant therefore see
each other, and the second is refused if both do not fit.

Admins and services are not limited; a per-user ``max_upload_size`` (JWT claim) lowers the
global ``[uploads] max_size`` for that user only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, or_, text
from sqlmodel import Session, select

from models.tables import Media, Upload
from models.clock import utcnow
from tus_server.auth.errors import ERR_QUOTA_DAY, ERR_QUOTA_TOTAL, ERR_TOO_LARGE
from tus_server.auth.principal import Principal


@dataclass(frozen=True)
class Usage:
    today: int
    total: int


@dataclass(frozen=True)
class Limits:
    max_size: int = 0  # global [uploads] max_size; 0 = none
    per_day: int = 0
    total: int = 0


def human(n: int) -> str:
    """Sizes in reasons people read: 1.5 GiB, not 1610612736."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def effective_max_size(principal: Principal, global_max: int) -> int:
    """The smaller of the global limit and the principal's own; 0 = no limit at all."""
    limits = [v for v in (global_max, principal.max_upload_size or 0) if v > 0]
    return min(limits) if limits else 0


def check_size(principal: Principal, length: int, global_max: int) -> None:
    limit = effective_max_size(principal, global_max)
    if limit and length > limit:
        raise ERR_TOO_LARGE(f"upload of {human(length)} is larger than the {human(limit)} you may upload")


def check_quota(principal: Principal, usage: Usage, length: int, limits: Limits) -> None:
    """Refuse (413 with the numbers) when this upload would take the user past a quota."""
    if principal.privileged:
        return
    if limits.per_day and usage.today + length > limits.per_day:
        raise ERR_QUOTA_DAY(f"daily upload quota exceeded: {human(usage.today)} uploaded today, "
                            f"{human(length)} more would pass the {human(limits.per_day)} per day")
    if limits.total and usage.total + length > limits.total:
        raise ERR_QUOTA_TOTAL(f"storage quota exceeded: {human(usage.total)} used, {human(length)} more "
                              f"would pass the {human(limits.total)} allowed")


def day_start(now: datetime) -> datetime:
    now = now.astimezone(timezone.utc)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def usage_of(session: Session, user: str, now: datetime | None = None) -> Usage:
    counted = func.coalesce(Upload.length, Upload.offset)
    today = session.exec(
        select(func.coalesce(func.sum(counted), 0))
        .where(Upload.owner == user, Upload.created_at >= day_start(now or utcnow()))
    ).one()
    occupying = or_(Upload.completed_at.is_(None), Upload.concat == "partial", Media.id.is_not(None))  # type: ignore[union-attr]
    total = session.exec(
        select(func.coalesce(func.sum(counted), 0))
        .select_from(Upload).outerjoin(Media, Media.id == Upload.id)  # type: ignore[arg-type]
        .where(Upload.owner == user, occupying)
    ).one()
    return Usage(today=int(today), total=int(total))


# Namespace of the per-user advisory locks (two-int4 key space, apart from the migrations'
# single bigint key): "tq" for tusflow quota.
_PG_LOCK_NAMESPACE = 0x7471


def lock_user(session: Session, user: str) -> None:
    """Make every other transaction that calls this for ``user`` wait until this one ends.
    SQLite needs nothing here: the caller has already written, which holds the write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:ns, hashtext(:user))"),
                        {"ns": _PG_LOCK_NAMESPACE, "user": user})


def reserve(session: Session, principal: Principal, length: int, limits: Limits) -> None:
    """The atomic quota check: call it in the transaction that has just inserted (flushed) the
    row of an upload of ``length`` bytes owned by ``principal.user``. Raises the quota's
    AuthError when the user's uploads, this one among them, pass a quota; the caller's
    transaction then rolls back and the row is gone."""
    if principal.privileged or not (limits.per_day or limits.total):
        return
    lock_user(session, principal.user)
    usage = usage_of(session, principal.user)
    check_quota(principal, Usage(today=usage.today - length, total=usage.total - length), length, limits)
