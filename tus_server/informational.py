"""1xx interim responses from the app: a small ASGI extension and its uvicorn side.

ASGI has no message for an interim response but the 103 of the ``http.response.early_hint``
extension, and uvicorn writes none of them; the resumable-upload draft needs
``104 Upload Resumption Supported`` sent *before* the final response, while the request body is
still arriving, so a client whose request is cut knows where to resume. This module defines:

- the extension ``scope["extensions"]["http.response.informational"] = {}``: a server that
  offers it accepts, before ``http.response.start``, messages
  ``{"type": "http.response.informational", "status": 1xx, "headers": [(name, value), ...]}``;
- ``send_informational`` for the app: sends one when the extension is offered, else does
  nothing (in-process test clients, other servers: the interim answer is only a hint);
- ``attach`` for the server (``tus_server.httpserver``'s protocol classes): offers the
  extension on one uvicorn request cycle and writes such messages to its transport.

An interim response is never sent to an HTTP/1.0 client (RFC 9110 section 15.2), nor after
the final response started; 101 is not allowed (it would switch protocols under the app).
"""

from __future__ import annotations

import http
import re
from typing import Any, Callable, Iterable

import h11
from starlette.types import Message, Scope, Send

EXTENSION = "http.response.informational"
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

Header = tuple[bytes, bytes]


def supported(scope: Scope) -> bool:
    return EXTENSION in (scope.get("extensions") or {})


async def send_informational(scope: Scope, send: Send, status: int,
                             headers: Iterable[tuple[str, str]]) -> bool:
    """Send an interim response if the server can; returns whether it was handed over."""
    if not supported(scope):
        return False
    await send({"type": EXTENSION, "status": status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
    return True


def reason(status: int) -> bytes:
    if status == 104:  # not (yet) in http.HTTPStatus everywhere
        return b"Upload Resumption Supported"
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Informational"


def check(message: Message) -> tuple[int, list[Header]]:
    """The status and headers of an informational message; ValueError if it is not one a
    server may write (wrong status, header names or values that could split the response)."""
    status = message.get("status")
    if not isinstance(status, int) or not 100 <= status <= 199 or status == 101:
        raise ValueError(f"informational status must be 1xx but 101, not {status!r}")
    headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
    for name, value in headers:
        if not _NAME.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid header in an informational response: {name!r}")
    return status, headers


def render(status: int, headers: list[Header]) -> bytes:
    """An HTTP/1.1 interim response head."""
    lines = [b"HTTP/1.1 %d %s" % (status, reason(status))]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class InformationalSend:
    """A request cycle's ``send`` that also takes informational messages.

    ``write`` puts one interim head on the wire; ``started`` says whether the final response
    began (then interim messages are dropped: too late to mean anything), ``closing`` whether
    the connection is gone."""

    def __init__(self, send: Send, write: Callable[[int, list[Header]], None],
                 started: Callable[[], bool], closing: Callable[[], bool]):
        self._send = send
        self._write = write
        self._started = started
        self._closing = closing

    async def __call__(self, message: Message) -> None:
        if message["type"] != EXTENSION:
            await self._send(message)
            return
        status, headers = check(message)
        if not self._started() and not self._closing():
            self._write(status, headers)


def attach(cycle: Any, write: Callable[[int, list[Header]], None]) -> None:
    """Offer the extension on a uvicorn ``RequestResponseCycle`` that has not run yet.

    Called by the protocol right after it built the cycle (its ASGI task starts on a later
    loop iteration, so the app sees the patched ``send``). Idempotent; HTTP/1.0 gets nothing.
    """
    scope = cycle.scope
    if supported(scope) or scope.get("http_version") == "1.0":
        return
    scope.setdefault("extensions", {})[EXTENSION] = {}
    cycle.send = InformationalSend(cycle.send, write, lambda: bool(cycle.response_started),
                                   lambda: bool(cycle.disconnected or cycle.transport.is_closing()))


def raw_writer(cycle: Any) -> Callable[[int, list[Header]], None]:
    """For uvicorn's httptools cycle: the interim head straight onto the transport."""
    return lambda status, headers: cycle.transport.write(render(status, headers))


def h11_writer(cycle: Any) -> Callable[[int, list[Header]], None]:
    """For uvicorn's h11 cycle: through h11, so its state machine knows of the interim answer."""
    def write(status: int, headers: list[Header]) -> None:
        event = h11.InformationalResponse(status_code=status, headers=headers, reason=reason(status))
        cycle.transport.write(cycle.conn.send(event))
    return write
