"""Auth's own API routes.

- ``GET /api/uploads/mine``: the caller's unfinished uploads (id, url, offset, length,
  metadata), so a resume can start on another device: tus-js-client only remembers uploads in
  the browser that started them. Admins and services may add ``?user=<id>``.
- ``GET /api/media/{id}/playback``: the URL a player should load, signed and expiring when
  ``[auth] playback_signing_key`` is set; owner or privileged only (404 for others).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from models.metadata import stored_metadata
from models.config import Settings
from models.db import session_scope
from models.tables import Media, Upload
from models.clock import aware, iso, utcnow
from tus_server.auth.access import can_access
from tus_server.auth.principal import Principal
from tus_server.auth.requires import Style, guarded, identified
from tus_server.auth.signing import PlaybackSigner
from tus_server.tus import headers as H
from tus_server.tus.urls import UrlBuilder

MASTER_PLAYLIST = "master.m3u8"
LIST_LIMIT = 200


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})




class AuthRoutes:
    def __init__(self, settings: Settings, engine: Engine, signer: PlaybackSigner | None):
        self.engine = engine
        self.signer = signer
        self.urls = UrlBuilder(settings)
        self.meta_limit = settings.uploads.max_metadata_size
        self.meta_pairs = settings.uploads.max_metadata_pairs

    @staticmethod
    def _principal(request: Request) -> Principal | None:
        return getattr(request.state, "principal", None)

    def _unfinished(self, user: str) -> list[Upload]:
        now = utcnow()
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(Upload).where(Upload.owner == user, col(Upload.completed_at).is_(None))
                .order_by(col(Upload.created_at).desc()).limit(LIST_LIMIT * 2)).all()
        return [u for u in rows if u.expires_at is None or aware(u.expires_at) > now][:LIST_LIMIT]

    async def mine(self, request: Request) -> Response:
        principal = self._principal(request)
        if principal is None:
            return _error(401, "authentication required")
        user = principal.user
        if "user" in request.query_params:
            if not principal.privileged:
                return _error(403, "only admins and services may list another user's uploads")
            user = request.query_params["user"]
        rows = await anyio.to_thread.run_sync(self._unfinished, user)
        return JSONResponse({"user": user, "uploads": [self._upload_json(request, u) for u in rows]},
                            headers={"Cache-Control": "no-store"})

    def _upload_json(self, request: Request, upload: Upload) -> dict[str, Any]:
        values = stored_metadata(upload.metadata_raw).values
        return {
            "id": upload.id,
            "url": self.urls.upload_url(request, upload.id),
            "offset": upload.offset,
            "length": upload.length,
            "metadata": {k: v.decode("utf-8", "replace") for k, v in values.items()},
            "partial": upload.concat == "partial",
            "created_at": iso(upload.created_at),
            "expires_at": iso(upload.expires_at),
        }

    def _media_owner(self, media_id: str) -> tuple[bool, str | None]:
        with session_scope(self.engine) as session:
            row = session.get(Media, media_id)
            return (row is not None, row.owner if row is not None else None)

    async def playback(self, request: Request) -> Response:
        media_id: str = request.path_params["media_id"]
        principal = self._principal(request)
        if not H.is_valid_id(media_id):
            return _error(404, "media not found")
        exists, owner = await anyio.to_thread.run_sync(self._media_owner, media_id)
        if not exists or not can_access(principal, owner):
            return _error(404, "media not found")
        url = f"{self.urls.origin(request)}/media/{media_id}/{MASTER_PLAYLIST}"
        body: dict[str, Any] = {"url": url, "query": "", "expires_at": None}
        if self.signer is not None:
            params = self.signer.sign(media_id, principal.user if principal and principal.authenticated else "")
            query = urlencode(params, quote_via=quote)
            body.update(url=f"{url}?{query}", query=query,
                        expires_at=datetime.fromtimestamp(int(params["exp"]), timezone.utc).isoformat())
        return JSONResponse(body, headers={"Cache-Control": "no-store"})




def auth_routes(settings: Settings, engine: Engine, signer: PlaybackSigner | None) -> list[BaseRoute]:
    handlers = AuthRoutes(settings, engine, signer)
    return guarded([Route("/api/uploads/mine", handlers.mine, methods=["GET"]),
                    Route("/api/media/{media_id}/playback", handlers.playback, methods=["GET"])],
                   identified, Style.JSON)
