"""Find what changed in the media and upload tables since the last look.

One detector per process reads the database about once a second, whatever the number of
watching browsers, so clients never poll. A row counts as changed when:

- its ``updated_at`` is new (rows are re-read over a look-back window, because a transaction
  that set ``updated_at`` earlier may commit after a later one; the window catches it late
  instead of never);
- or, while it is queued/processing, its state, progress or ETA differs (so a writer that forgets
  to touch ``updated_at`` is still seen);
- or, for an unfinished upload, its offset or length differs.

Deletions are found by counting rows and, only when the count disagrees, diffing the id set.

Everything is read from the database, never from this process's memory, so with several
instances sharing PostgreSQL every instance's feed sees what the others and the workers on
other hosts changed (tests/tus_server/tus/test_instances.py). ``updated_at`` comes from the writer's
clock: instances and workers must keep their clocks within ``LOOKBACK`` of each other (NTP);
state, progress and upload offsets are compared by value and need no clock at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from models.lifecycle import MediaState
from models.tables import Media, Upload
from tus_server.api.items import MediaCatalog, unfinished_uploads

LOOKBACK = timedelta(seconds=10)
_ACTIVE = (MediaState.QUEUED, MediaState.PROCESSING)


@dataclass
class Changes:
    items: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[tuple[str, str | None]] = field(default_factory=list)  # (id, owner)

    def __bool__(self) -> bool:
        return bool(self.items or self.deleted)


class ChangeDetector:
    """Blocking; the feed calls ``poll`` from a thread."""

    def __init__(self, catalog: MediaCatalog, lookback: timedelta = LOOKBACK):
        self.catalog = catalog
        self.engine = catalog.engine
        self.lookback = lookback
        self._primed = False
        self._watermark: datetime | None = None
        self._recent: dict[str, datetime] = {}
        self._active: dict[str, tuple[Any, ...]] = {}
        self._known: dict[str, str | None] = {}  # media id -> owner
        self._uploads: dict[str, tuple[Any, ...]] = {}  # upload id -> (offset, length, owner)

    def reset(self) -> None:
        """Forget everything: the next poll re-baselines and reports nothing."""
        self._primed = False
        self._watermark = None

    def poll(self) -> Changes:
        with Session(self.engine) as session:
            if self._watermark is None:
                self._watermark = session.exec(select(func.max(Media.updated_at))).one()
            touched_q = select(Media.id, Media.updated_at)
            if self._watermark is not None:
                touched_q = touched_q.where(Media.updated_at >= self._watermark - self.lookback)
            touched: dict[str, datetime] = dict(session.exec(touched_q).all())
            active = {row[0]: tuple(row[1:]) for row in session.exec(
                select(Media.id, Media.state, Media.progress, Media.eta_seconds)
                .where(Media.state.in_(_ACTIVE)))}  # type: ignore[attr-defined]
            count = session.exec(select(func.count()).select_from(Media)).one()
            uploads = {row[0]: tuple(row[1:]) for row in session.exec(
                select(Upload.id, Upload.offset, Upload.length, Upload.owner).where(unfinished_uploads()))}
            new_ids = [m for m in touched if m not in self._known]
            known = dict(self._known)
            if new_ids:
                known.update(session.exec(select(Media.id, Media.owner)
                                          .where(Media.id.in_(new_ids))).all())  # type: ignore[attr-defined]
            if not self._primed or count != len(known):
                known = dict(session.exec(select(Media.id, Media.owner)).all())

        if touched:
            newest = max(touched.values())
            self._watermark = max(self._watermark, newest) if self._watermark else newest
        if not self._primed:
            self._recent, self._active, self._known, self._uploads = touched, active, known, uploads
            self._primed = True
            return Changes()

        changed = [m for m, stamp in touched.items() if self._recent.get(m) != stamp]
        changed += [m for m, fingerprint in active.items() if self._active.get(m) != fingerprint]
        left_active = [m for m in self._active if m not in active]
        changed += [m for m in left_active if m in known]
        changed += [m for m in known if m not in self._known]
        queued = {m for m, fingerprint in active.items() if fingerprint[0] == MediaState.QUEUED}
        if queued != {m for m, fingerprint in self._active.items() if fingerprint[0] == MediaState.QUEUED}:
            changed += sorted(queued)  # positions move whenever something enters or leaves the queue
        deleted = [(m, owner) for m, owner in self._known.items() if m not in known]
        upload_changed = [u for u, fingerprint in uploads.items() if self._uploads.get(u) != fingerprint]
        upload_gone = [(u, fp[2]) for u, fp in self._uploads.items() if u not in uploads and u not in known]

        self._recent, self._active, self._known, self._uploads = touched, active, known, uploads

        wanted = list(dict.fromkeys([*upload_changed, *changed]))
        items = self.catalog.many(wanted) if wanted else []
        found = {item["id"] for item in items}
        owners = {**{u: fp[2] for u, fp in uploads.items()}, **known}
        gone = [(m, owners.get(m)) for m in wanted if m not in found]
        return Changes(items=items, deleted=list(dict.fromkeys([*deleted, *upload_gone, *gone])))
