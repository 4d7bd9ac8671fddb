"""``/healthz`` and ``/readyz`` for load balancers and orchestrators.

They answer different questions on purpose: ``/healthz`` says the process can answer at all
(restart me if not), so it touches nothing shared - a Redis outage must not make every server
restart at once. ``/readyz`` says this process can do useful work now (database and Redis both
answer), so a balancer stops sending uploads to it without killing it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import anyio
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from tus_server.context import AppContext

CHECK_TIMEOUT = 3.0


def routes(ctx: AppContext) -> list[BaseRoute]:
    checks = Checks(ctx)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> Response:
        results = await checks.run()
        down = sorted(name for name, result in results.items() if result["status"] != "ok")
        body = {"status": "ok" if not down else "unavailable", "down": down, "checks": results}
        return JSONResponse(body, status_code=503 if down else 200, headers={"Cache-Control": "no-store"})

    return [Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"])]


class Checks:
    """Each check runs in a worker thread with its own deadline, so a hung database or Redis
    makes ``/readyz`` answer 503 in ``CHECK_TIMEOUT`` instead of hanging the probe."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        from models.redis_conn import connect as redis_connection  # the URL rule the queue uses
        self.redis = redis_connection(ctx.settings, timeout=CHECK_TIMEOUT)

    async def run(self) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}

        async def one(name: str, probe: Callable[[], None]) -> None:
            results[name] = await self._timed(probe)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "database", self._database)
            tg.start_soon(one, "redis", self._redis)
        return dict(sorted(results.items()))

    async def _timed(self, probe: Callable[[], None]) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            with anyio.fail_after(CHECK_TIMEOUT + 1):
                await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
        except TimeoutError:
            return {"status": "down", "error": f"no answer within {CHECK_TIMEOUT + 1:.0f} s"}
        except Exception as exc:
            return {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"status": "ok", "ms": round((time.perf_counter() - start) * 1000, 1)}

    def _database(self) -> None:
        with self.ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _redis(self) -> None:
        if not self.redis.ping():
            raise RuntimeError("PING was not answered with PONG")
