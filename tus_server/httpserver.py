"""The HTTP server under the app: uvicorn's own protocols with limits on the request head.

uvicorn reads a request head for as long as a client cares to send it: httptools (llhttp)
has no size limit at all, and nothing times out a connection that has not finished a head
(``timeout_keep_alive`` only runs *between* requests, and the first byte of a new request
cancels it). One client could therefore hold memory with a huge header, or sockets with silent
or trickling connections. This module closes both, before the app is involved:

- a request line longer than ``[server] max_request_line`` is answered 414 (URI Too Long: in
  practice only the target makes a line long); a head (request line plus headers) longer than
  ``max_request_head`` is answered 431 (Request Header Fields Too Large). Bytes are counted as
  they arrive, so a refused head is never buffered whole;
- a connection that has not sent a complete head ``request_head_timeout`` seconds after it
  opened (or after the first byte of a later request on a kept-alive connection) is closed:
  silently when it sent nothing, with 408 when it sent part of a head;
- at most ``max_connections_per_address`` connections per client address are open at once; one
  more is answered 503 with ``Retry-After`` and closed (503, not 429, because tus clients
  retry a 503).

Refusals are written with ``Connection: close``, then the write side is shut and incoming bytes
are read and dropped for at most ``LINGER_S``: closing a socket that still has unread input
makes the kernel send a reset, which can destroy the answer before the client reads it.

The limits live on the uvicorn ``Config`` (``GuardedConfig``), which every protocol instance
receives, so the per-address registry is per server, never a module global. With
``--workers N`` each worker process has its own registry (the kernel spreads connections over
them), so one address can hold up to N times the cap.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from models.config import ConfigError, Settings
from models.logs import event
from tus_server import informational

log = logging.getLogger("tusflow.http")

LINGER_S = 2.0
"""How long a refused connection keeps draining input after its answer before it is closed."""

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Limits:
    """The ``[server]`` limits on connections and request heads; 0 switches one off."""

    max_request_line: int = 8192
    max_request_head: int = 65536
    request_head_timeout: float = 10.0
    max_connections_per_address: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        s = settings.server
        limits = cls(s.max_request_line, s.max_request_head, s.request_head_timeout,
                     s.max_connections_per_address)
        for name in ("max_request_line", "max_request_head", "request_head_timeout",
                     "max_connections_per_address"):
            if getattr(limits, name) < 0:
                raise ConfigError(f"[server] {name} must be 0 (off) or more")
        return limits


class PeerRegistry:
    """Open connections per client address, for one server (one process)."""

    def __init__(self, cap: int):
        self.cap = cap
        self._open: Counter[str] = Counter()

    def enter(self, address: str) -> bool:
        """Count one more connection from ``address``; False (and not counted) when full."""
        if self.cap and self._open[address] >= self.cap:
            return False
        self._open[address] += 1
        return True

    def leave(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def count(self, address: str) -> int:
        return self._open[address]


class GuardedConfig(uvicorn.Config):
    """A uvicorn Config that carries the limits and the per-address registry to the protocols.

    It is pickled into each worker process with ``--workers N``, so every process starts with
    its own empty registry.
    """

    def __init__(self, app: Any, *, limits: Limits, **options: Any):
        super().__init__(app, **options)
        self.limits = limits
        self.peers = PeerRegistry(limits.max_connections_per_address)


def _answer(status: int, message: str, default_headers: list[tuple[bytes, bytes]],
            extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    body = (message + "\n").encode("ascii")
    phrase = http.HTTPStatus(status).phrase.encode("ascii")
    lines = [b"HTTP/1.1 %d %s" % (status, phrase)]
    for name, value in [*default_headers, *extra,
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode("ascii")),
                        (b"connection", b"close")]:
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class ConnectionGuard:
    """The limits for one connection; both protocol classes delegate to it.

    The protocol says when a head completes (``head_done``) and whether it is waiting for one
    (``head_pending``); the guard counts the bytes that arrive meanwhile. A read that carries
    the end of one head and the start of the next (pipelining) is not counted against the next
    one, so a pipelined head may exceed the limit by up to one read (256 KiB).
    """

    def __init__(self, config: GuardedConfig, server_state: ServerState,
                 loop: asyncio.AbstractEventLoop):
        self.limits = config.limits
        self.peers = config.peers
        self.default_headers = server_state.default_headers
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.address: str | None = None  # set while counted in the registry
        self.refused = False
        self.head_bytes = 0
        self.line_seen = False
        self.heads = 0
        self.timer: asyncio.TimerHandle | None = None
        self.linger: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------------------- lifecycle
    def opened(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None  # unix sockets: none
        if address is not None:
            if not self.peers.enter(address):
                event(log, "http.refused", None, status=503, client=address,
                      reason="too many connections from one address")
                self.refuse(503, "too many connections from your address",
                            ((b"retry-after", str(RETRY_AFTER_S).encode("ascii")),))
                return
            self.address = address
        self._arm()

    def closed(self) -> None:
        self._disarm()
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self.release()

    def release(self) -> None:
        """Stop counting this connection (closed, or handed over to a WebSocket protocol)."""
        if self.address is not None:
            self.peers.leave(self.address)
            self.address = None

    # ---------------------------------------------------------------------------- reading
    def received(self, data: bytes, feed: Callable[[bytes], None],
                 head_pending: Callable[[], bool]) -> None:
        """Pass ``data`` to the parser (``feed``) unless it makes the head too long."""
        if self.refused:
            return  # draining after an answer: drop
        if not head_pending():
            feed(data)
            return
        self._arm()
        limits = self.limits
        if limits.max_request_line and not self.line_seen:
            end = data.find(b"\n")
            line = self.head_bytes + (end if end >= 0 else len(data))
            if line > limits.max_request_line:
                self._too_long(414, f"request line longer than {limits.max_request_line} bytes")
                return
            self.line_seen = end >= 0
        room = limits.max_request_head - self.head_bytes if limits.max_request_head else len(data)
        if len(data) <= room:
            self.head_bytes += len(data)
            feed(data)
            return
        heads = self.heads
        self.head_bytes += room
        if room > 0:
            feed(data[:room])
        if self.heads == heads:  # the head did not end within the limit
            self._too_long(431, f"request head longer than {limits.max_request_head} bytes")
            return
        feed(data[room:])

    def head_done(self) -> None:
        """The parser has a complete request head: stop its clock, count the next one anew."""
        self.heads += 1
        self.head_bytes = 0
        self.line_seen = False
        self._disarm()

    # ---------------------------------------------------------------------------- refusing
    def _too_long(self, status: int, message: str) -> None:
        event(log, "http.refused", None, status=status, client=self.address, reason=message)
        self.refuse(status, message)

    def _timed_out(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or self.refused:
            return
        if self.head_bytes == 0:
            transport.close()  # nothing sent: nothing to answer
            return
        event(log, "http.refused", None, status=408, client=self.address,
              reason="request head not complete in time")
        self.refuse(408, f"request head not complete within {self.limits.request_head_timeout:g} s")

    def refuse(self, status: int, message: str,
               extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer ``status`` and close, draining input for a while so the answer arrives."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.refused = True
        self._disarm()
        transport.write(_answer(status, message, self.default_headers, extra))
        if transport.can_write_eof():
            transport.write_eof()
            self.linger = self.loop.call_later(LINGER_S, transport.close)
        else:  # TLS: no half-close
            transport.close()

    # ---------------------------------------------------------------------------- timer
    def _arm(self) -> None:
        if self.timer is None and self.limits.request_head_timeout and not self.refused:
            self.timer = self.loop.call_later(self.limits.request_head_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _GuardedConnection(asyncio.Protocol):
    """What both guarded protocols do as a connection opens and closes: the guard counts it
    against its address and arms the head timeout, then forgets it. A mixin placed before
    uvicorn's protocol, so ``super()`` reaches uvicorn's own handlers."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.opened(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed()
        super().connection_lost(exc)


class GuardedHttpToolsProtocol(_GuardedConnection, HttpToolsProtocol):
    """uvicorn's httptools protocol with the head limits, timeout and per-address cap."""

    def __init__(self, config: GuardedConfig, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = ConnectionGuard(config, server_state, self.loop)
        self.awaiting_head = True

    def data_received(self, data: bytes) -> None:
        self.guard.received(data, super().data_received, lambda: self.awaiting_head)

    def on_headers_complete(self) -> None:
        self.awaiting_head = False
        self.guard.head_done()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:  # a new request's cycle
            informational.attach(self.cycle, informational.raw_writer(self.cycle))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.awaiting_head = True

    def handle_websocket_upgrade(self) -> None:
        self.guard.closed()  # the WebSocket protocol owns the connection from here
        super().handle_websocket_upgrade()


class GuardedH11Protocol(_GuardedConnection, H11Protocol):
    """uvicorn's h11 protocol with the same limits; h11's own state says when a head is due."""

    def __init__(self, config: GuardedConfig, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = ConnectionGuard(config, server_state, self.loop)

    def _head_pending(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _feed(self, data: bytes) -> None:
        pending = self._head_pending()
        super().data_received(data)
        if pending and not self._head_pending():
            self.guard.head_done()

    def data_received(self, data: bytes) -> None:
        self.guard.received(data, self._feed, self._head_pending)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle.scope is self.scope:  # before its task runs
            informational.attach(self.cycle, informational.h11_writer(self.cycle))

    def handle_websocket_upgrade(self, request: h11.Request) -> None:
        self.guard.closed()
        super().handle_websocket_upgrade(request)


PROTOCOLS: dict[str, type[asyncio.Protocol]] = {
    "httptools": GuardedHttpToolsProtocol,
    "h11": GuardedH11Protocol,
}


def server_config(settings: Settings, app: Any, **options: Any) -> GuardedConfig:
    """The uvicorn Config ``tusflow serve`` runs: ``options`` as given, the HTTP protocol
    chosen by ``[server] http``, wrapped with the ``[server]`` limits."""
    name = settings.server.http
    if name not in PROTOCOLS:
        raise ConfigError(f"[server] http must be one of {sorted(PROTOCOLS)}, not {name!r}")
    limits = Limits.from_settings(settings)
    # h11 refuses heads above its own buffer limit with a 400; let ours answer first.
    h11_limit = limits.max_request_head + 1 if limits.max_request_head else 2**31
    return GuardedConfig(app, limits=limits, http=PROTOCOLS[name],
                         h11_max_incomplete_event_size=h11_limit, **options)
