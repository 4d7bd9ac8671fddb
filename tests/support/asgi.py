"""The real app (``create_app``) in-process behind httpx, for header- and API-level tests."""

from __future__ import annotations

from typing import Callable

import httpx
from starlette.applications import Starlette
from starlette.types import ASGIApp

from models.config import Settings
from tus_server.app import create_app


class AppClients:
    """Builds apps and httpx clients on them; ``aclose`` ends both, so no engine or thread pool
    outlives its test. Each client carries ``.app`` and ``.settings`` for the test's checks."""

    def __init__(self) -> None:
        self._clients: list[httpx.AsyncClient] = []
        self._apps: list[Starlette] = []

    def make(self, settings: Settings, wrap: Callable[[ASGIApp], ASGIApp] | None = None) -> httpx.AsyncClient:
        app = create_app(settings)
        self._apps.append(app)
        transport = httpx.ASGITransport(app=wrap(app) if wrap else app)
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        client.app = app  # type: ignore[attr-defined]
        client.settings = settings  # type: ignore[attr-defined]
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        for app in self._apps:
            app.state.ctx.close()
