"""Fixtures for the tus tests: the app in-process behind httpx (header-level checks) and a
factory for apps with changed settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import pytest

from models.config import load_settings
from tests.support.asgi import AppClients


@pytest.fixture
async def make_client(make_config: Callable[..., Path], asgi_clients: AppClients) -> Callable[..., Awaitable[httpx.AsyncClient]]:
    """``await make_client(uploads={"max_size": 10})`` → an httpx client talking to a fresh app."""
    async def _make(**sections: dict[str, Any]) -> httpx.AsyncClient:
        return asgi_clients.make(load_settings(make_config(**sections), env={}))
    return _make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[httpx.AsyncClient]]) -> httpx.AsyncClient:
    return await make_client()
