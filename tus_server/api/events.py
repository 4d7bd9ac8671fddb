"""Server-Sent Events: media state pushed to every open page.

One ``ChangeFeed`` per app (so per process) runs one detector while anybody listens and stops
it when the last listener leaves. The detector reads the shared database (changes.py), so the
feed of every instance also carries what other instances and remote workers changed. Each
subscriber has a bounded queue: a browser that stops reading cannot make the server hold an
ever-growing backlog. When its queue overflows the backlog is dropped and the subscriber is
told to ``resync`` (re-read the list) instead.

With signed playback an item's file URLs are signed for each subscriber's user (links.py), so
the message is made per subscriber; without it one message is shared by all.

A stream is authorized once, when it opens, so it ends itself when the credential it opened with
expires (``Principal.expires_at``): otherwise a token that lapsed, or was deliberately given a
short life, would keep receiving updates for as long as the connection lasts. The browser's
EventSource reconnects, and the page then brings its current token (static/js/live.js).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tus_server.api.access import EVERYONE, Viewer, viewer_of
from tus_server.api.changes import ChangeDetector, Changes
from tus_server.api.errors import json_error
from tus_server.api.ids import is_media_id
from tus_server.api.links import PlaybackLinks, signing_user

log = logging.getLogger("tusflow.events")

RETRY_MS = 2000


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass(eq=False)
class Subscriber:
    only: frozenset[str] | None
    queue: asyncio.Queue[str]
    viewer: Viewer = EVERYONE
    overflowed: bool = False
    user: str = ""  # whom signed playback links are made for

    def wants(self, media_id: str, owner: str | None) -> bool:
        return (self.only is None or media_id in self.only) and self.viewer.sees(owner)

    def offer(self, message: str) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(sse("resync", {}))


@dataclass(eq=False)
class ChangeFeed:
    detector: ChangeDetector
    interval: float = 1.0
    queue_size: int = 256
    subscribers: set[Subscriber] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    links: PlaybackLinks | None = None

    def subscribe(self, only: frozenset[str] | None = None, viewer: Viewer = EVERYONE,
                  user: str = "") -> Subscriber:
        sub = Subscriber(only, asyncio.Queue(self.queue_size), viewer, user=user)
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self.detector.reset()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tusflow-change-feed")
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    def publish(self, changes: Changes) -> None:
        for item in changes.items:
            message = sse("media", item)
            for sub in list(self.subscribers):
                if sub.wants(item["id"], item.get("owner")):
                    sub.offer(sse("media", self.links.sign(item, sub.user)) if self.links else message)
        for media_id, owner in changes.deleted:
            message = sse("delete", {"id": media_id})
            for sub in list(self.subscribers):
                if sub.wants(media_id, owner):
                    sub.offer(message)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                changes = await anyio.to_thread.run_sync(self.detector.poll)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked or briefly unreachable database: keep the feed alive
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.exception("change detection failed (%d in a row)", failures)
                changes = Changes()
            if changes:
                self.publish(changes)
            await asyncio.sleep(self.interval)


class EventStream:
    """``GET /api/events[?ids=a,b]``: the endpoint a page's EventSource connects to."""

    def __init__(self, feed: ChangeFeed, stopping: threading.Event | None = None,
                 heartbeat: float = 15.0, max_age: float = 3600.0):
        self.feed = feed
        self.stopping = stopping
        self.heartbeat = heartbeat
        self.max_age = max_age  # reconnects now and then keep long-lived proxies honest

    async def handle(self, request: Request) -> Response:
        only: frozenset[str] | None = None
        raw = request.query_params.get("ids")
        if raw:
            ids = [i for i in raw.split(",") if i]
            if not ids or len(ids) > 100 or not all(is_media_id(i) for i in ids):
                return json_error(400, "ids must be up to 100 comma-separated 32-hex-digit media ids")
            only = frozenset(ids)
        principal = getattr(request.state, "principal", None)
        expires_at = principal.expires_at if principal is not None else None
        sub = self.feed.subscribe(only, viewer_of(request), signing_user(request))
        return StreamingResponse(self._stream(sub, expires_at), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache, no-transform",
                                          "X-Accel-Buffering": "no",
                                          "X-Content-Type-Options": "nosniff"})

    async def _stream(self, sub: Subscriber, expires_at: float | None = None) -> AsyncIterator[str]:
        """Messages until the server stops, the stream is ``max_age`` old or its credential
        expires (``expires_at``, Unix time; checked at least twice a second)."""
        loop = asyncio.get_running_loop()
        started = last_sent = loop.time()
        try:
            yield f"retry: {RETRY_MS}\n: connected\n\n"
            while (not self._stopping() and loop.time() - started < self.max_age
                   and (expires_at is None or time.time() < expires_at)):
                try:
                    message = await asyncio.wait_for(sub.queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if loop.time() - last_sent >= self.heartbeat:
                        last_sent = loop.time()
                        yield ": heartbeat\n\n"
                    continue
                if sub.overflowed and message.startswith("event: resync"):
                    sub.overflowed = False
                last_sent = loop.time()
                yield message
        finally:
            self.feed.unsubscribe(sub)

    def _stopping(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()


def stopping_flag(ctx: Any) -> threading.Event | None:
    """The app context's shutdown flag when this build has one (see ``AppContext.stopping``)."""
    flag = getattr(ctx, "stopping", None)
    return flag if isinstance(flag, threading.Event) else None


