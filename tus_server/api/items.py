"""What a client sees of a video: one JSON item per media row or unfinished upload.

A video exists for the teacher from its first byte, long before it has a Media row (that is
written on completion), so unfinished uploads are listed too, as state ``uploading``. Items are
ordered newest first by (created_at, id) and paged with an opaque cursor on that key, which
stays correct while rows are added or removed between pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from models.clock import iso
from models.layout import Layout
from models.lifecycle import SERVABLE, WORKING, MediaState, RenditionState
from models.tables import Media, Upload
from tus_server.api.access import EVERYONE, Viewer
from tus_server.api.ids import is_media_id
from tus_server.api.jobs import JobQueue
from tus_server.tus import headers as H

UPLOADING = "uploading"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class CursorError(ValueError):
    """A cursor that was not made by this server."""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None




def encode_cursor(created_at: datetime, item_id: str) -> str:
    raw = json.dumps([_naive(created_at).isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, item_id = json.loads(raw)
        parsed = datetime.fromisoformat(when)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CursorError("cursor is not valid") from exc
    if not isinstance(item_id, str) or not is_media_id(item_id):
        raise CursorError("cursor is not valid")
    # aware UTC: the column type stores it right on SQLite and PostgreSQL alike
    return _naive(parsed).replace(tzinfo=timezone.utc), item_id


def _naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def unfinished_uploads() -> Any:
    """Uploads a teacher is still sending: not complete and not a concatenation part."""
    return and_(Upload.completed_at.is_(None),  # type: ignore[union-attr]
                or_(Upload.concat.is_(None), Upload.concat.not_like("partial%")))  # type: ignore[union-attr]


def _owned(table: type, viewer: Viewer) -> list[Any]:
    return [] if viewer.unrestricted else [table.owner == viewer.owner]  # type: ignore[attr-defined]


class MediaCatalog:
    """Reads items; blocking (SQLite, Redis), so handlers call it from a thread."""

    def __init__(self, engine: Engine, layout: Layout, jobs: JobQueue, root_path: str = ""):
        self.engine = engine
        self.layout = layout
        self.jobs = jobs
        self.root_path = root_path.rstrip("/")
        # Files straight from the CDN or bucket in front of the media store
        # ([delivery] public_base_url), unless playback is signed: only the app can check a
        # signature, so the playlist (which then points its segments there) stays here.
        settings = jobs.settings
        self.public_base = "" if settings.auth.signed_playback else \
            settings.delivery.public_base_url.rstrip("/")

    # ------------------------------------------------------------------ reading
    def page(self, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
             include_uploads: bool = True, viewer: Viewer = EVERYONE) -> Page:
        after = decode_cursor(cursor) if cursor else None
        with Session(self.engine) as session:
            media = self._page_of(session, Media, after, limit + 1, *_owned(Media, viewer))
            uploads = self._page_of(session, Upload, after, limit + 1, unfinished_uploads(),
                                    *_owned(Upload, viewer)) if include_uploads else []
        rows: list[Media | Upload] = sorted([*media, *uploads], key=lambda r: (_naive(r.created_at), r.id),
                                            reverse=True)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return Page(self.describe(rows), next_cursor)

    def _page_of(self, session: Session, table: type, after: tuple[datetime, str] | None, limit: int,
                 *where: Any) -> list[Any]:
        query = select(table).where(*where)
        if after is not None:
            when, item_id = after
            query = query.where(or_(table.created_at < when,
                                    and_(table.created_at == when, table.id < item_id)))
        query = query.order_by(table.created_at.desc(), table.id.desc()).limit(limit)
        return list(session.exec(query))

    def get(self, media_id: str, viewer: Viewer = EVERYONE) -> dict[str, Any] | None:
        items = self.many([media_id], viewer)
        return items[0] if items else None

    def many(self, media_ids: Iterable[str], viewer: Viewer = EVERYONE) -> list[dict[str, Any]]:
        """Items for these ids that the viewer may see, in the order asked."""
        ids = list(dict.fromkeys(media_ids))
        if not ids:
            return []
        with Session(self.engine) as session:
            media = {m.id: m for m in session.exec(
                select(Media).where(Media.id.in_(ids), *_owned(Media, viewer)))}  # type: ignore[attr-defined]
            missing = [i for i in ids if i not in media]
            uploads = {u.id: u for u in session.exec(
                select(Upload).where(Upload.id.in_(missing), unfinished_uploads(),  # type: ignore[attr-defined]
                                     *_owned(Upload, viewer)))} if missing else {}
        rows = [media.get(i) or uploads.get(i) for i in ids]
        return self.describe([r for r in rows if r is not None])

    def queued_ids(self) -> list[str]:
        with Session(self.engine) as session:
            return list(session.exec(select(Media.id).where(Media.state == MediaState.QUEUED)))

    # ------------------------------------------------------------------ shaping
    def describe(self, rows: list[Media | Upload]) -> list[dict[str, Any]]:
        queued = [r.id for r in rows if isinstance(r, Media) and r.state == MediaState.QUEUED]
        positions = self.jobs.positions(queued)
        return [self.media_item(r, positions.get(r.id)) if isinstance(r, Media) else self.upload_item(r)
                for r in rows]

    def _url(self, media_id: str, name: str = "") -> str:
        return f"{self.root_path}/media/{media_id}" + (f"/{name}" if name else "")

    def _file_url(self, media_id: str, name: str) -> str:
        """Where a player fetches one of the media's files: the public base, or this app."""
        if self.public_base:
            return f"{self.public_base}/media/{media_id}/{name}"
        return self._url(media_id, name)

    def media_item(self, media: Media, queue_position: int | None = None) -> dict[str, Any]:
        ready = media.state == MediaState.READY
        servable = media.state in SERVABLE
        working = media.state in WORKING
        return {
            "id": media.id,
            "title": media.title,
            "description": media.description,
            "filename": media.filename,
            "filetype": media.filetype,
            "size": media.size,
            "state": media.state,
            "progress": round(media.progress or 0.0, 1) if working
            else (100.0 if ready else 0.0),
            "eta_seconds": media.eta_seconds if working else None,
            "queue_position": queue_position if media.state == MediaState.QUEUED else None,
            "error": media.error if media.state == MediaState.FAILED else None,
            "duration": media.duration,
            "width": media.width,
            "height": media.height,
            "renditions": _renditions(media) if servable or working else [],
            "versions": _versions(media) if servable or working else None,
            "fast_path": _fast_path(media),
            "poster": self._file_url(media.id, "poster.jpg") if ready and media.has_poster else None,
            "storyboard": self._file_url(media.id, "storyboard.vtt") if ready and media.has_storyboard else None,
            "playlist": self._file_url(media.id, "master.m3u8") if servable else None,
            "page": self._url(media.id),
            "owner": media.owner,
            "upload": None,
            "created_at": iso(media.created_at),
            "updated_at": iso(media.updated_at),
        }

    def upload_item(self, upload: Upload) -> dict[str, Any]:
        meta = H.parse_metadata(upload.metadata_raw, 1 << 20, 1 << 10)
        filename = meta.text("filename") or meta.text("name")
        length = upload.length
        percent = round(100.0 * upload.offset / length, 1) if length else 0.0
        return {
            "id": upload.id,
            "title": meta.text("title") or filename or "",
            "description": meta.text("description"),
            "filename": filename,
            "filetype": meta.text("filetype") or meta.text("type"),
            "size": length,
            "state": UPLOADING,
            "progress": percent,
            "eta_seconds": None,
            "queue_position": None,
            "error": None,
            "duration": None,
            "width": None,
            "height": None,
            "renditions": [],
            "versions": None,
            "fast_path": None,
            "poster": None,
            "storyboard": None,
            "playlist": None,
            "page": self._url(upload.id),
            "owner": upload.owner,
            "upload": {"offset": upload.offset, "length": length, "updated_at": iso(upload.updated_at)},
            "created_at": iso(upload.created_at),
            "updated_at": iso(upload.updated_at),
        }


def _renditions(media: Media) -> list[dict[str, Any]]:
    """Only the fields a client needs, whatever else the transcoder keeps there: every
    planned rendition with its own state (pending, encoding, ready, replaced, dropped) and
    progress. Rows written before renditions had states are ready ones."""
    keep = ("name", "width", "height", "bandwidth", "average_bandwidth", "codecs", "frame_rate")
    try:
        rungs = media.renditions
    except (TypeError, ValueError):
        return []
    return [{**{k: r.get(k) for k in keep}, "role": r.get("role", "ladder"),
             "state": r.get("state", RenditionState.READY.value),
             "progress": r.get("progress", 100.0)}
            for r in rungs if isinstance(r, dict)]


def _versions(media: Media) -> dict[str, int]:
    """"2 of 5 versions": renditions in the master now, and in the master when ready."""
    rows = _renditions(media)
    final = [r for r in rows if r["role"] != "standin" and r["state"] != RenditionState.DROPPED]
    ready = [r for r in rows if r["state"] == RenditionState.READY]
    return {"ready": len(ready), "total": max(len(final), len(ready))}


def _fast_path(media: Media) -> dict[str, Any] | None:
    """The fast path's verdict and its reason, once the job has judged the source."""
    try:
        verdict = json.loads(media.fast_path_json or "{}")
    except ValueError:
        return None
    return verdict if isinstance(verdict, dict) and verdict else None
