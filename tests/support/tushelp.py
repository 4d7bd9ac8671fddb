"""Small helpers the tus tests share: requests with the tus headers, and looks at the state
behind the app (rows, files) so tests can prove that a refused request changed nothing."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, select

from models.tables import Media, Upload
from tests.support.s3 import stored_upload

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {"Content-Type": "application/offset+octet-stream"}
BASE = "/files/"


def b64(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode()


async def create(client: httpx.AsyncClient, length: int | None = None, *, defer: bool = False,
                 headers: dict[str, str] | None = None, body: bytes | None = None) -> httpx.Response:
    h = dict(TUS)
    if defer:
        h["Upload-Defer-Length"] = "1"
    elif length is not None:
        h["Upload-Length"] = str(length)
    if body is not None:
        h.update(OCTET)
    h.update(headers or {})
    return await client.post(BASE, headers=h, content=body)


async def new_upload(client: httpx.AsyncClient, length: int | None = None, **kw: Any) -> str:
    r = await create(client, length, **kw)
    assert r.status_code == 201, r.text
    return r.headers["location"]


async def patch(client: httpx.AsyncClient, url: str, offset: int, data: Any = b"",
                headers: dict[str, str] | None = None) -> httpx.Response:
    h = {**TUS, **OCTET, "Upload-Offset": str(offset), **(headers or {})}
    return await client.patch(url, headers=h, content=data)


async def head(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.head(url, headers=TUS)


async def chunked(data: bytes, size: int = 4096):  # type: ignore[no-untyped-def]
    """An async body, so httpx sends it with Transfer-Encoding: chunked."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def engine_of(client: httpx.AsyncClient):  # type: ignore[no-untyped-def]
    return client.app.state.ctx.engine  # type: ignore[attr-defined]


def data_dir_of(client: httpx.AsyncClient) -> Path:
    return Path(client.settings.data_dir)  # type: ignore[attr-defined]


def row(client: httpx.AsyncClient, url_or_id: str) -> Upload | None:
    with Session(engine_of(client)) as s:
        return s.get(Upload, upload_id(url_or_id))


def all_uploads(client: httpx.AsyncClient) -> list[Upload]:
    with Session(engine_of(client)) as s:
        return list(s.exec(select(Upload)))


def all_media(client: httpx.AsyncClient) -> list[Media]:
    with Session(engine_of(client)) as s:
        return list(s.exec(select(Media)))


def upload_bytes(client: httpx.AsyncClient, url_or_id: str) -> bytes | None:
    """The bytes stored for an upload, wherever its store keeps them (files or S3)."""
    return stored_upload(client.settings, upload_id(url_or_id))  # type: ignore[attr-defined]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
