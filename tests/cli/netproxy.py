"""A loopback HTTP/1.1 proxy for `tusflow upload` tests that can be slow, closed, or corrupting.

- ``rate``: bytes per second forwarded upstream, so an upload is reliably still running when a
  test kills the client;
- ``gate``: connections wait until ``open()`` (a test can act between discovery and upload);
- ``corrupt_patches``: flips the first body byte of the first N PATCH requests, so the server's
  checksum check (and the client's retry after 460) is exercised.

Requests are parsed by Content-Length, which is what requests/tuspy always send.
"""

from __future__ import annotations

import asyncio

from tests.support.proxy import LoopbackProxy


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
