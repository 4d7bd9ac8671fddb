"""Reading a request body so that every byte that arrived can be kept.

The body ends in one of four ways, and the handler saves what came in all of them: the client
finished, the client went away, no byte came for ``idle_timeout`` seconds, or a newer request
for the same upload asked this one to stop. The pending ``receive()`` is never cancelled while
waiting, only re-awaited, so no message is lost between checks.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

from starlette.types import Receive

CHECK_SECONDS = 0.25


class BodyEnd:
    COMPLETE = "complete"
    DISCONNECT = "disconnect"
    IDLE = "idle"
    RELEASED = "released"
    OVERFLOW = "overflow"


class BodyReader:
    def __init__(self, receive: Receive, limit: int, idle_timeout: float,
                 stop_requested: Callable[[], bool]):
        self._receive = receive
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._stop_requested = stop_requested
        self.received = 0
        self.end: str | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield body chunks, never more than ``limit`` bytes in total."""
        pending: asyncio.Task | None = None
        last_data = last_check = time.monotonic()
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(self._receive())
                done, _ = await asyncio.wait({pending}, timeout=CHECK_SECONDS)
                if not done:
                    if self._stop_requested():
                        self.end = BodyEnd.RELEASED
                        return
                    if time.monotonic() - last_data > self._idle_timeout:
                        self.end = BodyEnd.IDLE
                        return
                    continue
                message = pending.result()
                pending = None
                if message["type"] == "http.disconnect":
                    self.end = BodyEnd.DISCONNECT
                    return
                data: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                if data:
                    last_data = time.monotonic()
                    room = self._limit - self.received
                    if len(data) > room:
                        if room > 0:
                            self.received += room
                            yield data[:room]
                        self.end = BodyEnd.OVERFLOW
                        return
                    self.received += len(data)
                    yield data
                if not more:
                    self.end = BodyEnd.COMPLETE
                    return
                if last_data - last_check >= CHECK_SECONDS:
                    last_check = last_data
                    if self._stop_requested():
                        self.end = BodyEnd.RELEASED
                        return
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
