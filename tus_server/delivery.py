"""HLS delivery: ``/media/{id}/{path}`` serves a ready video's playlists, segments and images.

The files come from the media store (``models.mediastore``): the file store's folder on this
machine (sent from disk, as before) or the S3 bucket every instance shares (streamed through,
with single byte ranges, ETag and Last-Modified from the object), so any instance serves any
video. Only what a player needs leaves the store: a short list of extensions, path parts made
of ``[A-Za-z0-9_.-]`` that do not start with a dot, and, on the file store, a resolved path
that is still inside the media's folder (so a symlink cannot point out of it). Nothing is
served until the media is ``playable`` or ``ready``.

With ``[delivery] public_base_url`` (a CDN or the bucket's website in front of the store) the
playlists served here point their segments, init sections and images there, so the bytes of
video never pass through the app; playlists stay here when playback is signed, because only
the app can check a signature.

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
from email.utils import formatdate, parsedate_to_datetime
from typing import Iterator
from urllib.parse import parse_qsl, quote, urlencode

import anyio.to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from models.lifecycle import SERVABLE
from models.mediastore import MediaStore, StoredFile, open_media_store
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
_RANGE = re.compile(r"(\d*)-(\d*)")


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
    def __init__(self, engine: Engine, store: MediaStore, signer: PlaybackSigner | None = None,
                 signed_playback: bool = False, public_base_url: str = ""):
        self.engine = engine
        self.store = store
        self.signer = signer
        self.signed_playback = signed_playback
        self.public_base = public_base_url.rstrip("/")

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
        stored = await anyio.to_thread.run_sync(self.store.stat, media_id, path)
        if stored is None:
            return _not_found()
        if kind.compress or (signed is not None and kind.media_type == PLAYLIST):
            body = await anyio.to_thread.run_sync(self.store.read, media_id, path)
            if body is None:
                return _not_found()
            if kind.media_type == PLAYLIST and self.public_base:
                body = public_playlist(body.decode("utf-8"), self._public_dir(media_id, path)).encode("utf-8")
            if signed is not None and kind.media_type == PLAYLIST:
                return self._signed_playlist(request, body, signed)
        headers = {**BASE_HEADERS, "Cache-Control": kind.cache}
        if kind.compress:
            return self._text(request, body, kind, headers)
        if stored.path is not None:  # on this machine: from disk, Range and all
            return FileResponse(stored.path, media_type=kind.media_type, headers=headers)
        return self._streamed(request, media_id, path, stored, kind, headers)

    def _public_dir(self, media_id: str, path: str) -> str:
        """The public URL of the folder a playlist is in (its relative URIs' base)."""
        folder = path.rpartition("/")[0]
        return f"{self.public_base}/media/{media_id}/" + (f"{folder}/" if folder else "")

    def _signed_playlist(self, request: Request, raw: bytes, signed: Signed) -> Response:
        """The playlist with the signature carried into every URI inside it: always the whole
        plain text (no 304, no gzip, no ETag: the body differs per link) and never stored."""
        text = raw.decode("utf-8")
        body = rewrite_playlist(text, signed.query, f"/media/{signed.grant.media_id}/").encode("utf-8")
        headers = {**BASE_HEADERS, "Cache-Control": SIGNED_PLAYLIST_CACHE, "Content-Length": str(len(body))}
        return Response(b"" if request.method == "HEAD" else body, media_type=PLAYLIST, headers=headers)

    def _streamed(self, request: Request, media_id: str, path: str, stored: StoredFile, kind: Kind,
                  headers: dict[str, str]) -> Response:
        """A file from a remote store: streamed through in chunks (never whole in memory), one
        byte range when asked, revalidated by the store's ETag and modification time."""
        headers = {**headers, "Accept-Ranges": "bytes", "Last-Modified": formatdate(stored.modified, usegmt=True)}
        if stored.etag:
            headers["ETag"] = stored.etag
        if _not_modified(request, stored):
            return Response(status_code=304, headers=headers)
        status, start, end = 200, 0, stored.size
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if wanted and (not if_range or if_range.strip() == stored.etag):
            try:
                byte_range = parse_range(wanted, stored.size)
            except ValueError:
                return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{stored.size}"})
            if byte_range is not None:
                status, (start, end) = 206, byte_range
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD" or end == start:
            return Response(status_code=status, media_type=kind.media_type, headers=headers)
        chunks: Iterator[bytes] = self.store.chunks(media_id, path, start, end)
        return StreamingResponse(chunks, status_code=status, media_type=kind.media_type, headers=headers)

    def _text(self, request: Request, body: bytes, kind: Kind, headers: dict[str, str]) -> Response:
        """Small text files are read whole, given a strong ETag and gzipped when accepted."""
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


def _not_modified(request: Request, stored: StoredFile) -> bool:
    """If-None-Match decides when present (RFC 9110 13.1.2), else If-Modified-Since."""
    tags = _etags(request.headers.get("if-none-match"))
    if tags:
        return "*" in tags or stored.etag in tags
    since = request.headers.get("if-modified-since")
    if not since:
        return False
    try:
        return int(stored.modified) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as [start, end); None to send the whole file
    (another unit, several ranges, or a malformed header: RFC 9110 lets a server ignore
    those); ValueError when the one range lies wholly past the end (416)."""
    unit, _, spec = header.partition("=")
    match = _RANGE.fullmatch(spec.strip())
    if unit.strip().lower() != "bytes" or match is None or match.group(0) == "-":
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        if int(last) == 0:
            raise ValueError("empty suffix range")
        return max(0, size - int(last)), size
    start, end = int(first), int(last) + 1 if last else size
    if end <= start and last:
        return None  # last before first: not a valid range, ignored
    if start >= size:
        raise ValueError("range starts past the end")
    return start, min(end, size)


def public_playlist(text: str, base: str) -> str:
    """Point a playlist's media URIs (segments, init sections, keys: everything but other
    playlists) at ``base``, the public URL of the playlist's folder. Playlist URIs stay
    relative, served by the app, so a signature can still be carried into them."""
    def move(uri: str) -> str:
        if not uri or "://" in uri or uri.startswith(("/", "data:", "#")):
            return uri
        if uri.split("?", 1)[0].split("#", 1)[0].endswith(".m3u8"):
            return uri
        return base + uri

    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body):]
        if body.startswith("#"):
            body = _URI_ATTR.sub(lambda m: m.group(1) + move(m.group(2)) + m.group(3), body)
        elif body.strip():
            body = move(body.strip())
        out.append(body + end)
    return "".join(out)


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
    delivery = Delivery(ctx.engine, open_media_store(ctx.settings, ctx.layout), playback_signer(ctx.settings),
                        ctx.settings.auth.signed_playback, ctx.settings.delivery.public_base_url)
    return [Route("/media/{media_id}/{path:path}", delivery.handle, methods=["GET", "HEAD"])]
