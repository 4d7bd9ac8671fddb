"""Pure ASGI middleware: who is asking, decided once, before any route or body byte.

It only *authenticates*: it finds the credential, checks it and leaves the result in
``scope["state"]``. It never looks at the path and never answers a request itself; whether that
principal is enough is each route's decision (``tus_server.auth.requires``), because only the
route knows whether it is public (``/healthz``, static files), a page shell that must load with
no credential at all, a file opened by a playback signature, or data that needs an identified
caller.

Where credentials come from:
- ``Authorization: Bearer <token>`` on every request; the only way for POST/PATCH/DELETE.
- ``?token=<token>`` and the cookie ``[auth] cookie_name``, on GET and HEAD only: EventSource,
  ``<img>``, ``<video>`` and native HLS cannot send headers. Restricting them to safe methods
  keeps a cookie (sent by the browser on its own) from ever authorizing a change (no CSRF),
  and keeps a token that leaked through a URL from deleting or uploading anything.

What it leaves in ``scope["state"]`` (``STATE_*`` below):
- ``principal``, ``user`` and ``role``: the proved principal; ``principal.anonymous`` for every
  request when ``[auth] enabled`` is off; ``principal.unidentified`` when auth is on and the
  request proved nobody (no credential, or one that failed);
- ``auth_error``: for an unidentified caller, why (``ERR_NO_CREDENTIALS`` or the credential's
  own failure: expired, unknown, wrong scheme), so a route that needs an identified caller
  answers with the precise reason and ``WWW-Authenticate`` challenge;
- ``authorization_header``: whether an Authorization header was sent. A browser navigation
  never sends one, so a page shell forgives a stale cookie or query token (the page itself says
  the session expired) but not a bad header from an API client, which keeps its 401.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from tus_server.auth import errors as E
from tus_server.auth.authenticator import Authenticator
from tus_server.auth.principal import Principal, anonymous, unidentified

SAFE_METHODS = ("GET", "HEAD")
STATE_PRINCIPAL = "principal"
STATE_ERROR = "auth_error"
STATE_HEADER = "authorization_header"


@dataclass(frozen=True)
class AuthOptions:
    enabled: bool
    authenticator: Authenticator
    query_token: bool = True
    cookie_name: str = "tusflow_token"


class AuthMiddleware:
    def __init__(self, app: ASGIApp, options: AuthOptions):
        self.app = app
        self.options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = self._identified(scope)
        await self.app(scope, receive, send)

    def _identified(self, scope: Scope) -> Scope:
        """A copy of the scope whose state names the principal; the lifespan state dict uvicorn
        hands each request is copied, never mutated, so nothing leaks between requests."""
        headers = _headers(scope)
        principal, error = self._principal(scope, headers)
        state = dict(scope.get("state") or {})
        state.update({"user": principal.user, "role": principal.role, STATE_PRINCIPAL: principal,
                      STATE_ERROR: error, STATE_HEADER: "authorization" in headers})
        return {**scope, "state": state}

    def _principal(self, scope: Scope, headers: dict[str, str]) -> tuple[Principal, E.AuthError | None]:
        if not self.options.enabled:
            return anonymous(), None
        try:
            token = self._credential(scope, headers)
            if token is None:
                return unidentified(), E.ERR_NO_CREDENTIALS()
            return self.options.authenticator.authenticate(token), None
        except E.AuthError as err:
            return unidentified(), err

    def _credential(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """The token the request carries, None when it carries none; a malformed header raises."""
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


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
