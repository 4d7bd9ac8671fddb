"""A loopback TCP proxy that cuts connections mid-upload, to test resuming after network drops.

It forwards bytes both ways and, after every ``cut_every`` bytes sent upstream by the client,
closes both sides of that connection abruptly (a lost network, as the client and server see it).
At most ``max_cuts`` cuts, so every test finishes.
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
            for task in asyncio.all_tasks():  # open connections: end them, quietly
                if task is not current:
                    task.cancel()
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


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a dropped network looks to the peer."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    writer.transport.abort()
