"""Reading a request body so that every byte that arrived can be kept.

The body ends in one of eight ways, and the handler saves what came in all of them: the client
finished, the client went away, no byte came for ``idle_timeout`` seconds, bytes came but slower
than the minimum rate (``MinRate``), a newer request for the same upload asked this one to stop,
the server is shutting down, the body ran past the room the upload has, or the server's
``receive()`` itself failed.

The minimum rate exists because idleness alone is easy to dodge: one byte every few seconds
never looks idle, yet holds the request, its connection and the upload's lock for as long as the
sender likes (Slowloris; tus T98, IETF I15). It is an average over a sliding window, so a
client whose network stalls for a moment, or whose TCP window ramps up, is not cut off.

``receive()`` runs in a small pump task and is never cancelled while the body is still wanted,
only when the reader has already decided to stop: not every ASGI server's ``receive`` is safe to
cancel mid-wait, and a lost message would be a lost chunk. Checks for idleness and release
requests run on one timer a few times a second instead of per message, because at disk speed a
per-message timeout (a task plus ``asyncio.wait``) costs a noticeable share of the CPU.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from starlette.types import Message, Receive

CHECK_SECONDS = 0.25
QUEUE_MESSAGES = 4  # uvicorn messages are ~64-256 KiB: the queue holds at most ~1 MiB


class BodyEnd:
    COMPLETE = "complete"
    DISCONNECT = "disconnect"
    IDLE = "idle"
    SLOW = "slow"
    RELEASED = "released"
    SHUTDOWN = "shutdown"
    OVERFLOW = "overflow"
    ERROR = "error"


class TrackedReceive:
    """Wraps ``receive`` to know whether the whole body was consumed, so that a response sent
    before that can ask for the connection to be closed instead of leaving a half-read body on
    a keep-alive connection (T21)."""

    __slots__ = ("_receive", "complete")

    def __init__(self, receive: Receive):
        self._receive = receive
        self.complete = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
        return message


_WAKE = object()


@dataclass(frozen=True)
class MinRate:
    """At least ``bytes_per_second`` on average over the last ``window`` seconds, judged once a
    body has been read for a whole window; ``bytes_per_second = 0`` turns the check off."""

    bytes_per_second: int = 0
    window: float = 60.0

    @property
    def enabled(self) -> bool:
        return self.bytes_per_second > 0 and self.window > 0


class RateWindow:
    """Samples of (time, bytes so far) taken on the reader's timer, enough to tell the average
    rate over the last ``window`` seconds; at most window / CHECK_SECONDS samples are kept."""

    def __init__(self, rule: MinRate, now: float):
        self.rule = rule
        self.samples: deque[tuple[float, int]] = deque([(now, 0)])

    def too_slow(self, now: float, arrived: int) -> bool:
        self.samples.append((now, arrived))
        window = self.rule.window
        while len(self.samples) > 1 and now - self.samples[1][0] >= window:
            self.samples.popleft()  # the oldest sample left still starts a full window
        start, before = self.samples[0]
        if now - start < window:
            return False  # not read for a whole window yet
        return (arrived - before) < self.rule.bytes_per_second * (now - start)


class BodyReader:
    def __init__(self, receive: Receive, limit: int, idle_timeout: float,
                 stop_requested: Callable[[], bool], shutting_down: Callable[[], bool] = lambda: False,
                 min_rate: MinRate = MinRate()):
        self._receive = receive
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._stop_requested = stop_requested
        self._shutting_down = shutting_down
        self._last_data = time.monotonic()
        self._arrived = 0  # bytes the pump has taken from receive(), for the rate check
        self._rate = RateWindow(min_rate, self._last_data) if min_rate.enabled else None
        self._verdict: str | None = None
        self.received = 0
        self.end: str | None = None
        self.error: BaseException | None = None

    async def _pump(self, queue: "asyncio.Queue[object]") -> None:
        """Feed ``receive()`` messages to the reader until the body ends."""
        while True:
            try:
                message = await self._receive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server's receive broke: hand the failure over
                await queue.put(exc)
                return
            if message.get("body"):
                self._last_data = time.monotonic()
                self._arrived += len(message["body"])
            await queue.put(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    def _tick(self, queue: "asyncio.Queue[object]", loop: asyncio.AbstractEventLoop) -> None:
        """Timer: decide whether to stop reading (release request, idle or too slow a body)."""
        if self._verdict is None:
            now = time.monotonic()
            if self._shutting_down():
                self._verdict = BodyEnd.SHUTDOWN
            elif self._stop_requested():
                self._verdict = BodyEnd.RELEASED
            elif now - self._last_data > self._idle_timeout:
                self._verdict = BodyEnd.IDLE
            elif self._rate is not None and self._rate.too_slow(now, self._arrived):
                self._verdict = BodyEnd.SLOW
        if self._verdict is not None:
            if queue.empty():
                queue.put_nowait(_WAKE)
            return
        self._timer = loop.call_later(CHECK_SECONDS, self._tick, queue, loop)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield body chunks, never more than ``limit`` bytes in total."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_MESSAGES)
        pump = loop.create_task(self._pump(queue))
        self._timer = loop.call_later(CHECK_SECONDS, self._tick, queue, loop)
        try:
            while True:
                item = await queue.get()
                if self._verdict is not None:
                    self.end = self._verdict
                    return
                if item is _WAKE:
                    continue
                if isinstance(item, BaseException):
                    self.end, self.error = BodyEnd.ERROR, item
                    return
                message: Message = item  # type: ignore[assignment]
                if message["type"] != "http.request":
                    self.end = BodyEnd.DISCONNECT
                    return
                data: bytes = message.get("body", b"")
                if data:
                    room = self._limit - self.received
                    if len(data) > room:
                        if room > 0:
                            self.received += room
                            yield data[:room]
                        self.end = BodyEnd.OVERFLOW
                        return
                    self.received += len(data)
                    yield data
                if not message.get("more_body", False):
                    self.end = BodyEnd.COMPLETE
                    return
        finally:
            self._timer.cancel()
            if not pump.done():
                pump.cancel()
                try:
                    await pump
                except BaseException:  # noqa: BLE001 - the pump's end is of no interest here
                    pass
