"""``/api/media``: list, read, delete and retry videos.

Handlers only parse, check and answer; reading is ``MediaCatalog``'s job and queue calls are
``JobQueue``'s. Blocking work (SQLite, Redis, deleting files) runs in a thread.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models import lifecycle
from models.layout import Layout
from models.lifecycle import MediaState
from models.mediastore import open_media_store
from models.tables import Media, Upload
from tus_server.api.access import Viewer, viewer_of
from tus_server.api.errors import json_error
from tus_server.api.ids import is_media_id
from tus_server.api.items import DEFAULT_LIMIT, MAX_LIMIT, CursorError, MediaCatalog
from tus_server.api.jobs import JobQueue, QueueUnavailable
from tus_server.api.links import PlaybackLinks, signing_user
from transcoder import webhooks

log = logging.getLogger("tusflow.api")

NO_STORE = {"Cache-Control": "no-store"}
BAD_ID = "media id must be 32 lowercase hexadecimal digits"


class MediaApi:
    def __init__(self, catalog: MediaCatalog, jobs: JobQueue, engine: Engine, layout: Layout,
                 tus_base_path: str, links: PlaybackLinks | None = None):
        self.catalog = catalog
        self.jobs = jobs
        self.engine = engine
        self.layout = layout
        self.store = open_media_store(jobs.settings, layout)  # the original and the output
        self.tus_base_path = tus_base_path.rstrip("/") + "/"
        self.links = links

    def _signed(self, request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items as this caller may load their files (see links.py); unchanged without signing."""
        return self.links.sign_all(items, signing_user(request)) if self.links else items

    async def list(self, request: Request) -> Response:
        q = request.query_params
        if "ids" in q:
            ids = [i for i in q["ids"].split(",") if i]
            if len(ids) > MAX_LIMIT or not all(is_media_id(i) for i in ids):
                return json_error(400, f"ids must be up to {MAX_LIMIT} comma-separated media ids")
            items = await anyio.to_thread.run_sync(self.catalog.many, ids, viewer_of(request))
            return JSONResponse({"items": self._signed(request, items), "next": None}, headers=NO_STORE)
        try:
            limit = int(q.get("limit", DEFAULT_LIMIT))
        except ValueError:
            return json_error(400, "limit must be an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return json_error(400, f"limit must be between 1 and {MAX_LIMIT}")
        uploads = q.get("uploads", "1")
        if uploads not in ("0", "1"):
            return json_error(400, "uploads must be 0 or 1")
        viewer = viewer_of(request)
        try:
            page = await anyio.to_thread.run_sync(
                lambda: self.catalog.page(limit, q.get("cursor") or None, uploads == "1", viewer))
        except CursorError as exc:
            return json_error(400, str(exc))
        next_url = None
        if page.next_cursor:
            next_url = f"{request.url.path}?limit={limit}&cursor={page.next_cursor}" + \
                       ("" if uploads == "1" else "&uploads=0")
        return JSONResponse({"items": self._signed(request, page.items), "next": next_url,
                             "next_cursor": page.next_cursor}, headers=NO_STORE)

    async def get(self, request: Request) -> Response:
        media_id = request.path_params["media_id"]
        if not is_media_id(media_id):
            return json_error(400, BAD_ID)
        item = await anyio.to_thread.run_sync(self.catalog.get, media_id, viewer_of(request))
        if item is None:
            return json_error(404, "no such media")
        return JSONResponse(self._signed(request, [item])[0], headers=NO_STORE)

    async def delete(self, request: Request) -> Response:
        media_id = request.path_params["media_id"]
        if not is_media_id(media_id):
            return json_error(400, BAD_ID)
        return await anyio.to_thread.run_sync(self._delete, media_id, viewer_of(request))

    def _delete(self, media_id: str, viewer: Viewer) -> Response:
        with Session(self.engine) as session:
            media = session.get(Media, media_id)
            upload = session.get(Upload, media_id)
        if media is not None and not viewer.sees(media.owner):
            media = None
        if upload is not None and not viewer.sees(upload.owner):
            upload = None
        if media is None:
            if upload is not None and upload.completed_at is None:
                return json_error(409, "this video is still uploading; stop the upload with "
                                       f"DELETE {self.tus_base_path}{media_id} (tus termination)")
            return json_error(404, "no such media")
        # Cancel first so a running job stops before its outputs are removed; a job that cannot
        # be reached now finds the row gone when it starts.
        self.jobs.cancel(media_id)
        gone = lifecycle.delete(self.engine, self.jobs.settings, media_id, seen=media)
        webhooks.enqueue(self.jobs.settings, self.engine, gone.hooks)  # never raises; the sweep retries
        self._remove_files(media_id, media, upload)
        log.info("media=%s deleted", media_id)
        return Response(status_code=204, headers=NO_STORE)

    def _remove_files(self, media_id: str, media: Media, upload: Upload | None) -> None:
        """The original and every published file, wherever the media store keeps them; a
        failure is logged, not raised: the row is gone, and leftovers are only bytes."""
        try:
            self.store.delete_media(media_id, [media.source_path, upload.storage_path if upload else ""])
        except Exception as exc:  # noqa: BLE001 - S3 unreachable, permissions
            log.warning("media=%s files not removed: %s", media_id, exc)

    async def retry(self, request: Request) -> Response:
        media_id = request.path_params["media_id"]
        if not is_media_id(media_id):
            return json_error(400, BAD_ID)
        viewer = viewer_of(request)
        with_state = await anyio.to_thread.run_sync(self._state_of, media_id, viewer)
        if with_state is None:
            return json_error(404, "no such media")
        if with_state != MediaState.FAILED:
            return json_error(409, f"only a failed video can be retried (this one is {with_state})")
        try:
            await anyio.to_thread.run_sync(self.jobs.retry, media_id)
        except LookupError:
            return json_error(404, "no such media")
        except QueueUnavailable as exc:
            return json_error(503, str(exc), headers={"Retry-After": "10"})
        item = await anyio.to_thread.run_sync(self.catalog.get, media_id, viewer)
        if item is None:
            return json_error(404, "no such media")
        return JSONResponse(self._signed(request, [item])[0], status_code=202, headers=NO_STORE)

    def _state_of(self, media_id: str, viewer: Viewer) -> str | None:
        with Session(self.engine) as session:
            row = session.exec(select(Media.state, Media.owner).where(Media.id == media_id)).first()
        return row[0] if row is not None and viewer.sees(row[1]) else None

