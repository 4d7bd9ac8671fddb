"""Pure ASGI middleware: who is asking, decided once, before any route or body byte.

It runs inside CORSMiddleware so its 401/403/404 answers still carry CORS headers (a browser
must be able to read the 401 to refresh its token), and before the tus handler reads a body, so
a PATCH refused for an expired token leaves the upload's offset exactly where it was; the
client refreshes the token and resumes (uvicorn discards the unread body and keeps the
connection).

Where credentials come from:
- ``Authorization: Bearer <token>`` on every request; the only way for POST/PATCH/DELETE.
- ``?token=<token>`` and the cookie ``[auth] cookie_name``, on GET and HEAD only: EventSource,
  ``<img>``, ``<video>`` and native HLS cannot send headers. Restricting them to safe methods
  keeps a cookie (sent by the browser on its own) from ever authorizing a change (no CSRF),
  and keeps a token that leaked through a URL from deleting or uploading anything.

Paths:
- every OPTIONS (CORS preflight and tus capability discovery), ``/healthz``, ``/readyz`` and
  ``[auth] public_paths`` (static JS/CSS) need nothing; ``/metrics`` needs an admin or service
  token only when ``[auth] protect_metrics`` is on;
- the page shells (``/``, ``/media``, ``/media/<id>``) on GET/HEAD without an Authorization
  header and without a valid query token or cookie are served to an *unidentified* principal
  (``principal.unidentified``): the platform hands the page its token in the URL fragment
  (``#token=``), which a browser never sends, and a page keeps it in sessionStorage, which a
  navigation cannot send either. The shell holds no user data (pages.py renders the player
  page without title or description for it, the same for every id) and every byte of data
  comes from the API, which still needs the token. A stale cookie or query token must not
  turn the page into a bare 401 either: the page itself says the session expired;
- ``/media/<id>`` (the player page) answers 404 to users who may not see the item, when they
  proved who they are;
- ``/media/<id>/<file>`` (HLS, poster, storyboard): a valid playback signature (``exp``/``sig``)
  opens the item's files for anyone holding the link; otherwise the caller must be allowed to
  see the item (owner or privileged; others get 404). With ``[auth] signed_playback`` on, a
  caller who has not proved who they are (auth disabled, or a link without a token) needs the
  signature;
- everything else needs a valid credential when ``[auth] enabled`` is on. When it is off
  every request is the anonymous admin (see ``principal.anonymous``).

What it leaves in ``scope["state"]``: ``user``, ``role``, ``principal`` and, for signed
playback, ``playback`` (the grant).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, quote, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tus_server.auth import errors as E
from tus_server.auth.access import can_access
from tus_server.auth.authenticator import Authenticator
from tus_server.auth.principal import Principal, anonymous, unidentified
from tus_server.auth.signing import PlaybackGrant, PlaybackSigner, rewrite_playlist

TUS_VERSION = "1.0.0"
EXEMPT_PATHS = ("/healthz", "/readyz")
METRICS_PATH = "/metrics"
DELIVERY = re.compile(r"^/media/([0-9a-f]{32})/(.+)$")
PLAYER_PAGE = re.compile(r"^/media/([0-9a-f]{32})/?$")
PAGE_SHELLS = ("/", "/media")
SAFE_METHODS = ("GET", "HEAD")
_PLAYLIST_STRIPPED = (b"accept-encoding", b"if-none-match", b"if-modified-since", b"range", b"if-range")
_PLAYLIST_DROPPED = (b"content-length", b"etag", b"last-modified", b"cache-control", b"content-encoding",
                     b"accept-ranges")

MediaOwnerLookup = Callable[[str], Awaitable[tuple[bool, str | None]]]


@dataclass(frozen=True)
class AuthOptions:
    enabled: bool
    authenticator: Authenticator
    base_path: str = "/files/"
    signer: PlaybackSigner | None = None
    signed_playback: bool = False
    public_paths: tuple[str, ...] = ("/static/", "/favicon.ico")
    protect_metrics: bool = False
    query_token: bool = True
    cookie_name: str = "tusflow_token"
    media_owner: MediaOwnerLookup | None = field(default=None, compare=False)


class AuthMiddleware:
    def __init__(self, app: ASGIApp, options: AuthOptions):
        self.app = app
        self.options = options
        self.tus_root = options.base_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        try:
            scope, send = await self._authorize(scope, send)
        except E.AuthError as err:
            await self._refuse(scope, send, err)
            return
        await self.app(scope, receive, send)

    async def _authorize(self, scope: Scope, send: Send) -> tuple[Scope, Send]:
        """The scope (and send) the app is called with, or an AuthError to answer instead.
        Nothing downstream runs inside this, so a refusal is always the whole response."""
        path: str = scope["path"]
        if path in EXEMPT_PATHS or path.startswith(self.options.public_paths):
            return scope, send
        if path == METRICS_PATH:
            await self._metrics(scope)
            return scope, send
        delivery = DELIVERY.match(path)
        if delivery:
            return await self._delivery(scope, send, delivery.group(1), path)
        player = PLAYER_PAGE.match(path)
        if player or path in PAGE_SHELLS:
            principal = self._page_principal(scope)
            if player and principal.via != "unidentified":  # the page shows the title
                await self._require_owner(principal, player.group(1))
            return _with_principal(scope, principal), send
        return _with_principal(scope, self._principal(scope)), send

    def _page_principal(self, scope: Scope) -> Principal:
        """Who loads a page. A navigation that proves nobody (auth on, no Authorization header
        — a browser navigation never has one, and an API client sending a bad one keeps its
        401 — and no valid query token or cookie) gets the empty shell as ``unidentified``."""
        if not self.options.enabled or scope["method"] not in SAFE_METHODS or "authorization" in _headers(scope):
            return self._principal(scope)
        try:
            principal = self._authenticated(scope)
        except E.AuthError:
            principal = None
        return principal if principal is not None else unidentified()

    # ------------------------------------------------------------------ credentials
    def _credential(self, scope: Scope) -> str | None:
        headers = _headers(scope)
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, value = auth.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise E.ERR_BAD_SCHEME()
            return value.strip()
        if scope["method"] not in SAFE_METHODS:
            return None
        if self.options.query_token:
            for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
                if key == "token" and value:
                    return value
        if self.options.cookie_name and "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers["cookie"])
            except Exception:  # a malformed Cookie header is the same as none
                return None
            morsel = jar.get(self.options.cookie_name)
            if morsel is not None and morsel.value:
                return morsel.value
        return None

    def _authenticated(self, scope: Scope) -> Principal | None:
        """The principal a credential proves, None when none was sent; bad ones raise."""
        token = self._credential(scope)
        return None if token is None else self.options.authenticator.authenticate(token)

    def _principal(self, scope: Scope) -> Principal:
        if not self.options.enabled:
            return anonymous()
        principal = self._authenticated(scope)
        if principal is None:
            raise E.ERR_NO_CREDENTIALS()
        return principal

    # ------------------------------------------------------------------ special paths
    async def _metrics(self, scope: Scope) -> None:
        if not self.options.protect_metrics:
            return
        principal = self._authenticated(scope)
        if principal is None:
            raise E.ERR_NO_CREDENTIALS()
        if not principal.privileged:
            raise E.ERR_FORBIDDEN("metrics need an admin or service token")

    async def _delivery(self, scope: Scope, send: Send, media_id: str, path: str) -> tuple[Scope, Send]:
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        signer = self.options.signer
        if signer is not None and ("sig" in params or "exp" in params):
            grant = signer.verify(media_id, params)
            principal = Principal(user=grant.user or "playback", role="user", via="signed-url")
            scope = _with_principal(scope, principal, playback=grant)
            if path.endswith(".m3u8"):
                return _signed_playlist(scope, send, grant, params["sig"])
            return scope, send
        principal = self._principal(scope)
        if self.options.signed_playback and not principal.authenticated:
            raise E.ERR_PLAYBACK_REQUIRED()
        await self._require_owner(principal, media_id)
        return _with_principal(scope, principal), send

    async def _require_owner(self, principal: Principal, media_id: str) -> None:
        """404 for other users' items; unknown ids go on to the app, which has its own 404."""
        if principal.privileged or self.options.media_owner is None:
            return
        exists, owner = await self.options.media_owner(media_id)
        if exists and not can_access(principal, owner):
            raise E.ERR_NOT_FOUND("media not found")

    # ------------------------------------------------------------------ refusals
    async def _refuse(self, scope: Scope, send: Send, err: E.AuthError) -> None:
        path: str = scope["path"]
        headers: list[tuple[bytes, bytes]] = [(b"cache-control", b"no-store")]
        if err.status == 401:
            challenge = 'Bearer realm="tusflow"'
            if err.code != E.ERR_NO_CREDENTIALS.code:
                reason = err.message.replace("\\", "").replace('"', "'")
                challenge += f', error="invalid_token", error_description="{reason}"'
            headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
        if path == self.tus_root or path.startswith(self.tus_root + "/"):
            headers.append((b"tus-resumable", TUS_VERSION.encode()))
        if path.startswith("/api/"):
            body = json.dumps({"error": err.message, "code": err.code}).encode() + b"\n"
            headers.append((b"content-type", b"application/json"))
        else:
            body = err.message.encode("utf-8") + b"\n"
            headers.append((b"content-type", b"text/plain; charset=utf-8"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _with_principal(scope: Scope, principal: Principal, **extra: Any) -> Scope:
    """A copy of the scope whose state names the principal; the lifespan state dict uvicorn
    hands each request is copied, never mutated, so nothing leaks between requests."""
    state = dict(scope.get("state") or {})
    state.update(user=principal.user, role=principal.role, principal=principal, **extra)
    return {**scope, "state": state}


def _signed_playlist(scope: Scope, send: Send, grant: PlaybackGrant, sig: str) -> tuple[Scope, Send]:
    """Serve the playlist with the signature carried into every URI inside it. The request
    loses its compression and conditional headers so the app answers with the full plain text,
    and the answer is never cached: its URIs expire with the link."""
    scope = dict(scope)
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() not in _PLAYLIST_STRIPPED]
    query = urlencode(grant.query(sig), quote_via=quote)
    prefix = f"/media/{grant.media_id}/"
    method = scope["method"]
    start: Message | None = None
    chunks: list[bytes] = []

    async def send_rewritten(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        original = {k.lower(): v for k, v in start["headers"]}
        headers = [(k, v) for k, v in start["headers"] if k.lower() not in _PLAYLIST_DROPPED]
        body = b"".join(chunks)
        if start["status"] == 200 and method == "GET":
            if original.get(b"content-encoding") == b"gzip":
                body = gzip.decompress(body)
            body = rewrite_playlist(body.decode("utf-8"), query, prefix).encode("utf-8")
            headers.append((b"content-length", str(len(body)).encode()))
        elif method == "GET" or start["status"] != 200:
            headers.append((b"content-length", str(len(body)).encode()))
            if b"content-encoding" in original:
                headers.append((b"content-encoding", original[b"content-encoding"]))
        headers.append((b"cache-control", b"private, no-store"))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return scope, send_rewritten
