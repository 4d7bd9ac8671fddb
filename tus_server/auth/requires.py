"""Authorization at the route: what a route needs from the principal the middleware left.

The middleware (``tus_server.auth.middleware``) only says who is asking. Each route says what it
needs, as a *need*: a function of the request scope that returns the principal when it is
enough and raises an ``AuthError`` otherwise. A route is wrapped with ``guarded`` (or an ASGI app
with ``Requires``), which turns the error into the refusal every client already knows: status,
one-line reason, ``Cache-Control: no-store``, ``WWW-Authenticate: Bearer`` on 401 and, for the
tus endpoint, ``Tus-Resumable``. The check runs before the route's own code (and before the
router's 405), so a refused PATCH has read no body byte and the upload's offset is unchanged.

Routes with nothing to protect (health checks, static files, CORS preflight) are simply not
wrapped. Routes whose rule depends on the item (HLS delivery, the player page) call a need and
``refusal`` themselves.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Callable

from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tus_server.auth import errors as E
from tus_server.auth.middleware import SAFE_METHODS, STATE_ERROR, STATE_HEADER, STATE_PRINCIPAL
from tus_server.auth.principal import Principal
from tus_server.tus.headers import TUS_VERSION

Need = Callable[[Scope], Principal | None]  # raises the AuthError to answer with
OPEN_METHODS = ("OPTIONS",)  # CORS preflight and tus discovery never need a credential


class Style(Enum):
    """How a refusal is written, so each client reads it in its own format. JSON routes (the
    API) also get ``X-Content-Type-Options: nosniff`` on every answer, refusal or not: their
    bodies echo user-chosen text (titles, file names), which a browser must never sniff into a
    page; pages, delivery and tus set their own."""
    TEXT = "text"  # pages, delivery, /metrics
    JSON = "json"  # the API
    TUS = "tus"  # the tus endpoint: plain text plus Tus-Resumable


def _state(scope: Scope) -> dict[str, Any]:
    return scope.get("state") or {}


def identified(scope: Scope) -> Principal:
    """A caller who proved who they are (or anyone when auth is off: the anonymous operator).
    Fails closed: a request that reached here without the middleware is nobody's."""
    state = _state(scope)
    principal: Principal | None = state.get(STATE_PRINCIPAL)
    if principal is None:
        raise E.ERR_NO_CREDENTIALS()
    if principal.via == "unidentified":
        raise state.get(STATE_ERROR) or E.ERR_NO_CREDENTIALS()
    return principal


def page_visitor(scope: Scope) -> Principal:
    """A page shell: any GET/HEAD navigation, even one that proves nobody (the platform hands
    the token over in ``#token=``, which no request carries). A bad Authorization header is
    still refused: no navigation sends one, so it comes from an API client that must learn its
    token is wrong. Anything but GET/HEAD needs an identified caller, like the API."""
    if scope["method"] not in SAFE_METHODS:
        return identified(scope)
    state = _state(scope)
    principal: Principal | None = state.get(STATE_PRINCIPAL)
    if principal is None or (principal.via == "unidentified" and state.get(STATE_HEADER)):
        return identified(scope)
    return principal


def public_under(prefixes: tuple[str, ...]) -> Need:
    """Static assets: open under ``[auth] public_paths`` (by default ``/static/``: the pages'
    own JS and CSS, which a credential-less page shell must be able to load); anything the
    operator took out of that list needs an identified caller."""
    def need(scope: Scope) -> Principal | None:
        if str(scope["path"]).startswith(tuple(prefixes)):
            return _state(scope).get(STATE_PRINCIPAL)
        return identified(scope)
    return need


def metrics_reader(protect: bool) -> Need:
    """``/metrics``: open unless ``[auth] protect_metrics``, then an admin or service token."""
    def need(scope: Scope) -> Principal | None:
        state = _state(scope)
        if not protect:
            return state.get(STATE_PRINCIPAL)
        principal = identified(scope)
        if not principal.privileged:
            raise E.ERR_FORBIDDEN("metrics need an admin or service token")
        return principal
    return need


NOSNIFF = (b"x-content-type-options", b"nosniff")


def refusal(err: E.AuthError, style: Style, method: str) -> Response:
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if err.status == 401:
        challenge = 'Bearer realm="tusflow"'
        if err.code != E.ERR_NO_CREDENTIALS.code:
            reason = err.message.replace("\\", "").replace('"', "'")
            challenge += f', error="invalid_token", error_description="{reason}"'
        headers["WWW-Authenticate"] = challenge
    if style is Style.TUS:
        headers["Tus-Resumable"] = TUS_VERSION
    if style is Style.JSON:
        body = json.dumps({"error": err.message, "code": err.code}).encode() + b"\n"
        headers["Content-Type"] = "application/json"
    else:
        body = err.message.encode("utf-8") + b"\n"
        headers["Content-Type"] = "text/plain; charset=utf-8"
    headers["Content-Length"] = str(len(body))
    return Response(b"" if method == "HEAD" else body, status_code=err.status,
                    headers={k: v.encode("latin-1", "replace").decode("latin-1") for k, v in headers.items()})


class Requires:
    """An ASGI app that runs ``app`` only for requests ``need`` accepts."""

    def __init__(self, app: ASGIApp, need: Need, style: Style):
        self.app = app
        self.need = need
        self.style = style

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in OPEN_METHODS:
            try:
                self.need(scope)
            except E.AuthError as err:
                await refusal(err, self.style, scope["method"])(scope, receive, send)
                return
        if self.style is Style.JSON and scope["type"] == "http":
            send = _nosniff(send)
        await self.app(scope, receive, send)


def _nosniff(send: Send) -> Send:
    """``send`` with ``X-Content-Type-Options: nosniff`` added to the response head."""
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(name.lower() == NOSNIFF[0] for name, _ in headers):
                headers.append(NOSNIFF)
            message = {**message, "headers": headers}
        await send(message)
    return wrapped


class Guarded(BaseRoute):
    """A route that checks its need before anything of the route runs, even its method check:
    a caller who may not use a path learns nothing about which methods it has."""

    def __init__(self, route: BaseRoute, need: Need, style: Style):
        self.route = route
        self.app = Requires(route.handle, need, style)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return self.route.matches(scope)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        return self.route.url_path_for(name, **path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:  # path, name, methods... of the wrapped route
        if name == "route":
            raise AttributeError(name)
        return getattr(self.route, name)


def guarded(routes: list[BaseRoute], need: Need = identified, style: Style = Style.TEXT) -> list[BaseRoute]:
    return [Guarded(route, need, style) for route in routes]
