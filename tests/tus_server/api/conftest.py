"""Fixtures for the media API and delivery tests: the app in-process behind httpx, on a real
SQLite file, with a ``store`` (tests.support.store) that writes rows and media folders the way
the transcoder does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from models.config import load_settings
from tests.support.asgi import AppClients
from tests.support.store import Store


class WithPrincipal:
    """Stands in for the auth middleware: every request is made by ``principal``."""

    def __init__(self, app: ASGIApp, principal: Any):
        self.app = app
        self.principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": {**(scope.get("state") or {}), "principal": self.principal,
                                        "user": self.principal.user, "role": self.principal.role}}
        await self.app(scope, receive, send)


@pytest.fixture
async def make_api(make_config: Callable[..., Path], asgi_clients: AppClients) -> Callable[..., Awaitable[httpx.AsyncClient]]:
    async def _make(principal: Any = None, **sections: dict[str, Any]) -> httpx.AsyncClient:
        wrap = (lambda app: WithPrincipal(app, principal)) if principal is not None else None
        client = asgi_clients.make(load_settings(make_config(**sections), env={}), wrap)
        client.store = Store(client.app)  # type: ignore[attr-defined]
        return client
    return _make


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[httpx.AsyncClient]]) -> httpx.AsyncClient:
    return await make_api()


@pytest.fixture
def store(api: httpx.AsyncClient) -> Store:
    return api.store  # type: ignore[attr-defined]
