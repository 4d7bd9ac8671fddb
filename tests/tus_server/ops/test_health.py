"""/healthz and /readyz against a real server, with Redis taken away and brought back."""

from __future__ import annotations

from typing import Callable

import httpx
import pytest

from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_ready_while_redis_answers_unready_while_it_is_down(start_server: Callable, redis_server) -> None:
    server = start_server(redis={"url": redis_server.url})

    live = httpx.get(f"{server.origin}/healthz", timeout=10)
    assert live.status_code == 200 and live.text.strip() == "ok"
    ready = httpx.get(f"{server.origin}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok" and body["down"] == []
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["redis"]["status"] == "ok"

    redis_server.stop()
    down = httpx.get(f"{server.origin}/readyz", timeout=15)
    assert down.status_code == 503
    assert down.headers["content-type"].startswith("application/json")
    assert down.json()["down"] == ["redis"]
    assert down.json()["checks"]["database"]["status"] == "ok"
    assert "error" in down.json()["checks"]["redis"]
    # Liveness does not depend on Redis: a Redis outage must not restart every server.
    assert httpx.get(f"{server.origin}/healthz", timeout=10).status_code == 200

    redis_server.start()
    wait_until(lambda: httpx.get(f"{server.origin}/readyz", timeout=15).status_code == 200,
               timeout=20, what="ready again after Redis came back")


def test_unready_without_any_redis(start_server: Callable) -> None:
    """No [redis] url and no private socket (nobody ran `tusflow up`): not ready."""
    server = start_server()
    r = httpx.get(f"{server.origin}/readyz", timeout=15)
    assert r.status_code == 503 and r.json()["down"] == ["redis"]
    assert httpx.head(f"{server.origin}/healthz", timeout=10).status_code == 200
