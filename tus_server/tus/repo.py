"""Upload rows: the database side of the tus handlers, run off the event loop."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, TypeVar

import anyio.to_thread
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from models.db import session_scope
from models.tables import Upload, utcnow

T = TypeVar("T")


class UploadRepo:
    def __init__(self, engine: Engine, expiration: int):
        self.engine = engine
        self.expiration = expiration

    async def run(self, fn: Callable[[Session], T]) -> T:
        def _call() -> T:
            with session_scope(self.engine) as session:
                return fn(session)
        return await anyio.to_thread.run_sync(_call)

    def next_expiry(self, now: datetime | None = None) -> datetime | None:
        if self.expiration <= 0:
            return None
        return (now or utcnow()) + timedelta(seconds=self.expiration)

    async def get(self, upload_id: str) -> Upload | None:
        return await self.run(lambda s: s.get(Upload, upload_id))

    async def get_many(self, ids: list[str]) -> dict[str, Upload]:
        def _many(s: Session) -> dict[str, Upload]:
            return {u.id: u for u in s.exec(select(Upload).where(Upload.id.in_(ids)))}  # type: ignore[attr-defined]
        return await self.run(_many)

    async def add(self, upload: Upload) -> Upload:
        def _add(s: Session) -> Upload:
            s.add(upload)
            s.flush()
            s.refresh(upload)
            return upload
        return await self.run(_add)

    async def update(self, upload_id: str, **values: Any) -> None:
        values.setdefault("updated_at", utcnow())

        def _update(s: Session) -> None:
            s.exec(update(Upload).where(Upload.id == upload_id).values(**values))  # type: ignore[call-overload]
        await self.run(_update)

    async def complete(self, upload_id: str, offset: int, expires_at: datetime | None,
                       hook: Callable[[Session], None] | None) -> bool:
        """Record completion; True for exactly one caller, however many requests or processes
        race to complete. ``hook`` runs inside the same transaction (the publishing seam), so
        the completion and what it starts commit together or not at all."""
        now = utcnow()

        def _complete(s: Session) -> bool:
            result = s.exec(update(Upload)  # type: ignore[call-overload]
                            .where(Upload.id == upload_id, Upload.completed_at.is_(None))  # type: ignore[union-attr]
                            .values(completed_at=now, updated_at=now, offset=offset, expires_at=expires_at))
            if result.rowcount != 1:
                return False
            if hook is not None:
                hook(s)
            return True
        return await self.run(_complete)

    async def expired(self, now: datetime, limit: int = 500) -> list[Upload]:
        """Uploads whose expiry passed: unfinished ones, and finished partials."""
        def _expired(s: Session) -> list[Upload]:
            query = (select(Upload).where(Upload.expires_at.is_not(None), Upload.expires_at < now)  # type: ignore[union-attr]
                     .order_by(Upload.expires_at).limit(limit))  # type: ignore[arg-type]
            return list(s.exec(query))
        return await self.run(_expired)

    async def delete(self, upload_id: str) -> None:
        def _delete(s: Session) -> None:
            row = s.get(Upload, upload_id)
            if row is not None:
                s.delete(row)
        await self.run(_delete)
