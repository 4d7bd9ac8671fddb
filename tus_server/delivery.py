"""HLS delivery: ``/media/{id}/{path}`` serves a ready video's playlists, segments and images.

Only what a player needs leaves the media directory: a short list of extensions, path parts
made of ``[A-Za-z0-9_.-]`` that do not start with a dot, and a resolved path that is still
inside ``media_dir(id)`` (so a symlink cannot point out of it). Nothing is served until the
media is ``ready``, because the transcoder publishes the whole directory at once and only then
marks the row.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from models.layout import Layout
from models.lifecycle import MediaState
from models.tables import Media
from tus_server.api.ids import is_media_id
from tus_server.context import AppContext

PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
MAX_DEPTH = 4
PLAYLIST = "application/vnd.apple.mpegurl"


@dataclass(frozen=True)
class Kind:
    media_type: str
    cache: str
    compress: bool = False


IMMUTABLE = "public, max-age=31536000, immutable"
KINDS = {
    # A ready VOD playlist never changes, but it is re-published under the same name if a
    # failed video is retried, so it is cached briefly rather than forever.
    ".m3u8": Kind(PLAYLIST, "public, max-age=60", compress=True),
    ".mp4": Kind("video/mp4", IMMUTABLE),
    ".m4s": Kind("video/iso.segment", IMMUTABLE),
    ".ts": Kind("video/mp2t", IMMUTABLE),
    ".aac": Kind("audio/aac", IMMUTABLE),
    ".vtt": Kind("text/vtt; charset=utf-8", "public, max-age=3600", compress=True),
    ".jpg": Kind("image/jpeg", "public, max-age=3600"),
    ".jpeg": Kind("image/jpeg", "public, max-age=3600"),
}
BASE_HEADERS = {"X-Content-Type-Options": "nosniff"}
GZIP_MIN = 256


def _not_found(reason: str = "not found") -> Response:
    return Response(reason + "\n", status_code=404, media_type="text/plain",
                    headers={**BASE_HEADERS, "Cache-Control": "no-store"})


def safe_parts(path: str) -> list[str] | None:
    """The path's parts when every one is a plain name, else None (``..``, ``.x``, ``a//b``)."""
    parts = path.split("/")
    if not 1 <= len(parts) <= MAX_DEPTH:
        return None
    if not all(PART.fullmatch(p) and ".." not in p for p in parts):
        return None
    return parts


def accepts_gzip(header: str | None) -> bool:
    """``gzip`` listed without ``q=0`` (``*`` counts too)."""
    if not header:
        return False
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


class Delivery:
    def __init__(self, engine: Engine, layout: Layout):
        self.engine = engine
        self.layout = layout

    def _is_ready(self, media_id: str) -> bool:
        with Session(self.engine) as session:
            state = session.exec(select(Media.state).where(Media.id == media_id)).first()
        return state == MediaState.READY

    def _locate(self, media_id: str, path: str) -> Path | None:
        parts = safe_parts(path)
        if parts is None:
            return None
        root = self.layout.media_dir(media_id)
        try:
            real_root = root.resolve(strict=True)
            target = root.joinpath(*parts).resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError, RuntimeError, OSError):
            return None
        if not target.is_relative_to(real_root) or not target.is_file():
            return None
        return target

    async def handle(self, request: Request) -> Response:
        media_id: str = request.path_params["media_id"]
        path: str = request.path_params["path"]
        if not is_media_id(media_id):
            return _not_found()
        kind = KINDS.get(os.path.splitext(path)[1].lower())
        if kind is None or safe_parts(path) is None:
            return _not_found()
        if not await anyio.to_thread.run_sync(self._is_ready, media_id):
            return _not_found("media not found or not ready")
        target = await anyio.to_thread.run_sync(self._locate, media_id, path)
        if target is None:
            return _not_found()
        headers = {**BASE_HEADERS, "Cache-Control": kind.cache}
        if kind.compress:
            return await self._text(request, target, kind, headers)
        return FileResponse(target, media_type=kind.media_type, headers=headers)

    async def _text(self, request: Request, target: Path, kind: Kind, headers: dict[str, str]) -> Response:
        """Small text files are read whole, given a strong ETag and gzipped when accepted."""
        body = await anyio.to_thread.run_sync(target.read_bytes)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        compress = len(body) >= GZIP_MIN and accepts_gzip(request.headers.get("accept-encoding"))
        if compress:
            etag = etag[:-1] + '-gz"'  # a different representation needs a different tag
        headers = {**headers, "ETag": etag, "Vary": "Accept-Encoding"}
        if etag in _etags(request.headers.get("if-none-match")):
            return Response(status_code=304, headers=headers)
        if compress:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return Response(status_code=200, media_type=kind.media_type, headers=headers)
        return Response(body, media_type=kind.media_type, headers=headers)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def routes(ctx: AppContext) -> list[BaseRoute]:
    """``/media/{id}/{path}`` only: the bare ``/media/{id}`` is the player page (pages.py)."""
    delivery = Delivery(ctx.engine, ctx.layout)
    return [Route("/media/{media_id}/{path:path}", delivery.handle, methods=["GET", "HEAD"])]
