"""The app's lifespan ends what the tus endpoint started: with ``[locks] backend = "redis"`` a
request starts the locker's pub/sub listener (a task and a Redis connection of its own) and
its command connections; shutting the app down must leave no task pending and no connection
open on the real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import redis

from models.config import load_settings
from tests.support.procs import RedisServer
from tests.support.tushelp import TUS
from tests.support.waiting import wait_until_async
from tus_server.app import create_app


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def other_clients(raw: redis.Redis) -> list[dict[str, Any]]:
    """Every connection redis-server has open but the test's own."""
    me = raw.client_id()
    return [c for c in raw.client_list() if int(c["id"]) != me]


class Lifespan:
    """Drives the ASGI lifespan protocol the way uvicorn does."""

    def __init__(self, app: Any):
        self.app = app
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def _send(self, message: dict[str, Any]) -> None:
        await self.outgoing.put(message)

    async def step(self, event: str) -> None:
        if self.task is None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
            self.task = asyncio.ensure_future(self.app(scope, self._receive, self._send))
        await self.incoming.put({"type": f"lifespan.{event}"})
        answer = await asyncio.wait_for(self.outgoing.get(), 10)
        assert answer["type"] == f"lifespan.{event}.complete", answer


async def test_shutdown_closes_the_redis_locker(make_config: Callable[..., Path], redis_server: RedisServer,
                                                raw: redis.Redis) -> None:
    settings = load_settings(make_config(locks={"backend": "redis"}, redis={"url": redis_server.url}), env={})
    before = {t for t in asyncio.all_tasks()}
    app = create_app(settings)
    lifespan = Lifespan(app)
    await lifespan.step("startup")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        r = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
        assert r.status_code == 201
        r = await client.head(r.headers["location"], headers=TUS)  # takes the upload's Redis lock
        assert r.status_code == 200
    assert any(c.get("cmd") in ("psubscribe", "ping") or int(c.get("psub", 0)) for c in other_clients(raw)), \
        "the locker's listener never subscribed: the test would prove nothing"
    await lifespan.step("shutdown")
    await asyncio.wait_for(lifespan.task, 10)
    pending = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
    assert pending == [], pending
    await wait_until_async(lambda: other_clients(raw) == [],
                           what=f"Redis connections still open: {other_clients(raw)}")
