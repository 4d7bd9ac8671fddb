"""Fixtures for the tus tests: the app in-process behind httpx (header-level checks) and a
factory for apps with changed settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette

from models.config import load_settings
from tus_server.app import create_app


@pytest.fixture
async def make_client(make_config: Callable[..., Path]) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """``await make_client(uploads={"max_size": 10})`` → an httpx client talking to a fresh app."""
    apps: list[Starlette] = []
    clients: list[httpx.AsyncClient] = []

    async def _make(**sections: dict[str, Any]) -> httpx.AsyncClient:
        settings = load_settings(make_config(**sections), env={})
        app = create_app(settings)
        apps.append(app)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        client.app = app  # type: ignore[attr-defined]
        client.settings = settings  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield _make
    for client in clients:
        await client.aclose()
    for app in apps:
        app.state.ctx.close()


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[httpx.AsyncClient]]) -> httpx.AsyncClient:
    return await make_client()
