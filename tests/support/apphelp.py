"""The real app (create_app) in-process behind httpx, with [auth] settings, for the
integration tests: every rule is checked through the same stack a browser reaches."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import pytest
from sqlmodel import Session

from models.config import load_settings
from models.tables import Upload
from tests.support.asgi import AppClients

from tests.support.credentials import HS_SECRET, SIGNING_KEY, TOKENS

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {"Content-Type": "application/offset+octet-stream"}
AUTH_ON: dict[str, Any] = {"enabled": True, "tokens": TOKENS, "jwt_hs256_secret": HS_SECRET,
                           "playback_signing_key": SIGNING_KEY}

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(make_config: Callable[..., Path], asgi_clients: AppClients) -> MakeClient:
    async def _make(auth: dict[str, Any] | None = None, **sections: dict[str, Any]) -> httpx.AsyncClient:
        return asgi_clients.make(load_settings(make_config(auth={**AUTH_ON, **(auth or {})}, **sections), env={}))
    return _make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create(client: httpx.AsyncClient, token: str, length: int | None = 10,
                 **headers: str) -> httpx.Response:
    h = {**TUS, **bearer(token), **{k.replace("_", "-"): v for k, v in headers.items()}}
    if length is not None:
        h["Upload-Length"] = str(length)
    return await client.post("/files/", headers=h)


async def new_upload(client: httpx.AsyncClient, token: str, length: int | None = 10, **headers: str) -> str:
    r = await create(client, token, length, **headers)
    assert r.status_code == 201, r.text
    return r.headers["location"].rsplit("/", 1)[1]


async def patch(client: httpx.AsyncClient, token: str, upload_id: str, offset: int, body: bytes,
                **headers: str) -> httpx.Response:
    return await client.patch(f"/files/{upload_id}", content=body,
                              headers={**TUS, **OCTET, **bearer(token), "Upload-Offset": str(offset),
                                       **{k.replace("_", "-"): v for k, v in headers.items()}})


def row(client: httpx.AsyncClient, upload_id: str) -> Upload | None:
    with Session(client.app.state.ctx.engine) as s:  # type: ignore[attr-defined]
        return s.get(Upload, upload_id)


def count_rows(client: httpx.AsyncClient) -> int:
    from sqlmodel import func, select
    with Session(client.app.state.ctx.engine) as s:  # type: ignore[attr-defined]
        return s.exec(select(func.count()).select_from(Upload)).one()
