"""HLS delivery: ``/media/{id}/{path}`` serves a ready video's playlists, segments and images.

Only what a player needs leaves the media directory: a short list of extensions, path parts
made of ``[A-Za-z0-9_.-]`` that do not start with a dot, and a resolved path that is still
inside ``media_dir(id)`` (so a symlink cannot point out of it). Nothing is served until the
media is ``ready``, because the transcoder publishes the whole directory at once and only then
marks the row.

Delivery also decides who may fetch the files (the auth middleware only says who is asking):
- a valid playback signature (``exp``/``sig``, see ``tus_server.auth.signing``) opens the item's
  files for anyone holding the link; a playlist served under it has the same signature carried
  into every URI inside it, so a player (hls.js, or native HLS that cannot send headers) fetches
  variants and segments with it. Such a playlist is read whole, never compressed or answered
  304, and never cached: its URIs expire with the link;
- otherwise the caller must be identified (``requires.identified``) and allowed to see the item
  (owner or privileged; others get 404, never 403, so an id is not confirmed); with
  ``[auth] signed_playback`` on, a caller who has not proved who they are with a credential
  (auth disabled, or a link without a token) needs the signature.
The check comes first, before the path is looked at, so a refused caller learns nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

import anyio.to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from models.layout import Layout
from models.lifecycle import SERVABLE
from models.tables import Media, Upload
from tus_server.api.ids import is_media_id
from tus_server.auth import errors as AE
from tus_server.auth.access import can_access
from tus_server.auth.requires import Style, identified, refusal
from tus_server.auth.signing import PlaybackGrant, PlaybackSigner, playback_signer
from tus_server.context import AppContext

PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
MAX_DEPTH = 4
PLAYLIST = "application/vnd.apple.mpegurl"
SIGNED_PLAYLIST_CACHE = "private, no-store"
_URI_ATTR = re.compile(r'(URI=")([^"]*)(")')


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


@dataclass(frozen=True)
class Item:
    """What delivery needs to know of an id: does it name anything (a media row, or the upload
    it is still being made from), whose is it, and may its files be served yet."""
    exists: bool
    owner: str | None = None
    ready: bool = False


@dataclass(frozen=True)
class Signed:
    grant: PlaybackGrant
    sig: str

    @property
    def query(self) -> str:
        return urlencode(self.grant.query(self.sig), quote_via=quote)


class Delivery:
    def __init__(self, engine: Engine, layout: Layout, signer: PlaybackSigner | None = None,
                 signed_playback: bool = False):
        self.engine = engine
        self.layout = layout
        self.signer = signer
        self.signed_playback = signed_playback

    def _item(self, media_id: str) -> Item:
        with Session(self.engine) as session:
            media = session.get(Media, media_id)
            if media is not None:
                return Item(True, media.owner, media.state in SERVABLE)
            upload = session.get(Upload, media_id)
            return Item(True, upload.owner) if upload is not None else Item(False)

    async def _authorize(self, request: Request, media_id: str) -> tuple[Item, Signed | None]:
        """The item and, when the request carries one, its verified signature; an AuthError
        when the caller may not fetch this item's files."""
        if not is_media_id(media_id):
            identified(request.scope)  # like any other route: nothing for a caller who is nobody
            return Item(False), None
        # blank values count as absent, exactly as the signer's own links are parsed
        params = dict(parse_qsl(request.scope.get("query_string", b"").decode("latin-1")))
        if self.signer is not None and ("sig" in params or "exp" in params):
            grant = self.signer.verify(media_id, params)
            return await anyio.to_thread.run_sync(self._item, media_id), Signed(grant, params["sig"])
        principal = identified(request.scope)
        if self.signed_playback and not principal.authenticated:
            raise AE.ERR_PLAYBACK_REQUIRED()
        item = await anyio.to_thread.run_sync(self._item, media_id)
        if item.exists and not can_access(principal, item.owner):
            raise AE.ERR_NOT_FOUND("media not found")
        return item, None

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
        try:
            item, signed = await self._authorize(request, media_id)
        except AE.AuthError as err:
            return refusal(err, Style.TEXT, request.method)
        if not is_media_id(media_id):
            return _not_found()
        kind = KINDS.get(os.path.splitext(path)[1].lower())
        if kind is None or safe_parts(path) is None:
            return _not_found()
        if not item.ready:
            return _not_found("media not found or not ready")
        target = await anyio.to_thread.run_sync(self._locate, media_id, path)
        if target is None:
            return _not_found()
        if signed is not None and kind.media_type == PLAYLIST:
            return await self._signed_playlist(request, target, signed)
        headers = {**BASE_HEADERS, "Cache-Control": kind.cache}
        if kind.compress:
            return await self._text(request, target, kind, headers)
        return FileResponse(target, media_type=kind.media_type, headers=headers)

    async def _signed_playlist(self, request: Request, target: Path, signed: Signed) -> Response:
        """The playlist with the signature carried into every URI inside it: always the whole
        plain text (no 304, no gzip, no ETag: the body differs per link) and never stored."""
        text = (await anyio.to_thread.run_sync(target.read_bytes)).decode("utf-8")
        body = rewrite_playlist(text, signed.query, f"/media/{signed.grant.media_id}/").encode("utf-8")
        headers = {**BASE_HEADERS, "Cache-Control": SIGNED_PLAYLIST_CACHE, "Content-Length": str(len(body))}
        return Response(b"" if request.method == "HEAD" else body, media_type=PLAYLIST, headers=headers)

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


def _with_query(uri: str, query: str) -> str:
    """Append the signature to a URI that stays inside this media item: relative ones and
    absolute paths under its prefix. Absolute URLs elsewhere and data: URIs are left alone."""
    if not uri or "://" in uri or uri.startswith(("data:", "//", "#")):
        return uri
    path, hash_, fragment = uri.partition("#")
    sep = "&" if "?" in path else "?"
    return f"{path}{sep}{query}{hash_}{fragment}"


def rewrite_playlist(text: str, query: str, prefix: str = "") -> str:
    """Carry the signature into every URI of an m3u8 playlist: URI lines and ``URI="..."``
    attributes (EXT-X-MAP, EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF, EXT-X-KEY, ...). ``prefix``
    limits absolute-path URIs to this media item's own folder."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body):]
        if body.startswith("#"):
            body = _URI_ATTR.sub(lambda m: m.group(1) + _inside(m.group(2), query, prefix) + m.group(3), body)
        elif body.strip():
            body = _inside(body.strip(), query, prefix)
        out.append(body + end)
    return "".join(out)


def _inside(uri: str, query: str, prefix: str) -> str:
    if uri.startswith("/") and not (prefix and uri.startswith(prefix)):
        return uri
    return _with_query(uri, query)


def routes(ctx: AppContext) -> list[BaseRoute]:
    """``/media/{id}/{path}`` only: the bare ``/media/{id}`` is the player page (pages.py)."""
    delivery = Delivery(ctx.engine, ctx.layout, playback_signer(ctx.settings), ctx.settings.auth.signed_playback)
    return [Route("/media/{media_id}/{path:path}", delivery.handle, methods=["GET", "HEAD"])]
