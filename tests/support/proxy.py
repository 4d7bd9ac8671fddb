"""Loopback TCP proxies the tests put between a client and a real server.

- ``CuttingProxy`` cuts connections mid-upload, to test resuming after network drops: it
  forwards bytes both ways and, after every ``cut_every`` bytes sent upstream by the client,
  closes both sides of that connection abruptly (a lost network, as the client and server see
  it). At most ``max_cuts`` cuts, so every test finishes.
- ``FaultProxy`` is an HTTP/1.1 proxy for `tusflow upload` tests that can be slow, closed, or
  corrupting:

  - ``rate``: bytes per second forwarded upstream, so an upload is reliably still running
    when a test kills the client;
  - ``gate``: connections wait until ``open()`` (a test can act between discovery and upload);
  - ``corrupt_patches``: flips the first body byte of the first N PATCH requests, so the
    server's checksum check (and the client's retry after 460) is exercised.

  Requests are parsed by Content-Length, which is what requests/tuspy always send.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from urllib.parse import urlsplit


class LoopbackProxy:
    """A TCP server on 127.0.0.1 port 0 running its own event loop in a thread, so synchronous
    tests can put it between a client and a server. Subclasses implement ``_handle``."""

    def __init__(self, target_url: str):
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.origin = f"http://127.0.0.1:{self.port}"

    def url_for(self, url: str) -> str:
        parts = urlsplit(url)
        return f"{self.origin}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    async def _on_start(self) -> None:
        """Runs on the proxy's loop before it accepts connections."""

    async def _on_stop(self) -> None:
        """Runs on the proxy's loop when the test closes it."""

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            await self._on_start()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self._ready.set()
        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            await self._on_stop()
            current = asyncio.current_task()
            open_connections = [t for t in asyncio.all_tasks() if t is not current]
            for task in open_connections:  # end them, quietly: wait until each has unwound
                task.cancel()
            if open_connections:
                await asyncio.wait(open_connections, timeout=2)
            for task in open_connections:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved, so asyncio does not report it at exit
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class CuttingProxy(LoopbackProxy):
    def __init__(self, target_url: str, cut_every: int, max_cuts: int = 5):
        self.cut_every = cut_every
        self.max_cuts = max_cuts
        self.cuts = 0
        self.bytes_up = 0
        super().__init__(target_url)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        cut = asyncio.Event()
        budget = [self.cut_every if self.cuts < self.max_cuts else None]

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
            try:
                while not cut.is_set():
                    data = await reader.read(65536)
                    if not data:
                        break
                    if upstream:
                        self.bytes_up += len(data)
                        if budget[0] is not None:
                            if len(data) >= budget[0]:
                                writer.write(data[: budget[0]])
                                await writer.drain()
                                self.cuts += 1
                                cut.set()
                                break
                            budget[0] -= len(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if cut.is_set():
                    for w in (client_w, up_w):
                        _abort(w)
                else:
                    try:
                        writer.write_eof()
                    except (OSError, RuntimeError):
                        pass

        await asyncio.gather(pump(client_r, up_w, True), pump(up_r, client_w, False))
        for w in (client_w, up_w):
            w.close()


class FaultProxy(LoopbackProxy):
    def __init__(self, target_url: str, rate: float | None = None, gate_open: bool = True,
                 corrupt_patches: int = 0):
        self.rate = rate
        self.corrupt_left = corrupt_patches
        self.corrupted = 0
        self.bytes_up = 0
        self.patches = 0
        self.checksum_headers: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (method, lower-cased headers)
        self._gate: asyncio.Event | None = None
        self._gate_open = gate_open
        super().__init__(target_url)

    def open(self) -> None:
        self._loop.call_soon_threadsafe(self._gate.set)  # type: ignore[union-attr]

    async def _on_start(self) -> None:
        self._gate = asyncio.Event()
        if self._gate_open:
            self._gate.set()

    async def _on_stop(self) -> None:
        if self._gate is not None:
            self._gate.set()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        step = 16384 if self.rate else len(data) or 1
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            writer.write(piece)
            await writer.drain()
            self.bytes_up += len(piece)
            if self.rate:
                await asyncio.sleep(len(piece) / self.rate)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        assert self._gate is not None
        await self._gate.wait()
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return

        async def upstream() -> None:
            try:
                while True:
                    head = await client_r.readuntil(b"\r\n\r\n")
                    method = head.split(b" ", 1)[0].upper()
                    headers: dict[str, str] = {}
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip():
                            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
                    self.requests.append((method.decode("latin-1"), headers))
                    length = int(headers.get("content-length", "0"))
                    if "upload-checksum" in headers:
                        self.checksum_headers.append(headers["upload-checksum"])
                    if method == b"PATCH":
                        self.patches += 1
                    await self._send(up_w, head)
                    first = True
                    while length > 0:
                        data = await client_r.read(min(65536, length))
                        if not data:
                            return
                        if first and method == b"PATCH" and self.corrupt_left > 0:
                            self.corrupt_left -= 1
                            self.corrupted += 1
                            data = bytes([data[0] ^ 0xFF]) + data[1:]
                        first = False
                        length -= len(data)
                        await self._send(up_w, data)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
                pass
            finally:
                try:
                    up_w.write_eof()
                except (OSError, RuntimeError):
                    pass

        async def downstream() -> None:
            try:
                while True:
                    data = await up_r.read(65536)
                    if not data:
                        break
                    client_w.write(data)
                    await client_w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    client_w.write_eof()
                except (OSError, RuntimeError):
                    pass

        await asyncio.gather(upstream(), downstream())
        for w in (client_w, up_w):
            w.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a dropped network looks to the peer."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    writer.transport.abort()
