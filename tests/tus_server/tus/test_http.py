"""GET downloads, hostile ids, CORS and completion exactly once, against the app in-process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from models.tables import Upload
from tests.support.tushelp import (BASE, TUS, all_media, b64, create, data_dir_of, head, new_upload,
                               patch, row, upload_bytes, upload_id)
from tus_server.tus.events import NoEvents
from tus_server.tus.handlers import TusContext, TusHandler
from tus_server.tus.locks import UploadLocks
from tus_server.tus.repo import UploadRepo
from tus_server.tus.datastore import open_store


async def _finished(client, data: bytes, meta: str | None = None) -> str:
    url = await new_upload(client, len(data), headers={"Upload-Metadata": meta} if meta else None)
    assert (await patch(client, url, 0, data)).status_code == 204
    return url


# --------------------------------------------------------------------------- GET
async def test_get_incomplete_is_404(client) -> None:
    url = await new_upload(client, 10)
    assert (await client.get(url)).status_code == 404


async def test_get_streams_bytes_type_and_range(client) -> None:
    data = bytes(range(256)) * 40
    url = await _finished(client, data, f"filename {b64('talk.mp4')},filetype {b64('video/mp4')}")
    r = await client.get(url)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["content-disposition"].startswith("inline")
    assert 'filename="talk.mp4"' in r.headers["content-disposition"]
    r = await client.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert r.headers["content-length"] == "10"
    r = await client.get(url, headers={"Range": "bytes=-7"})  # the last 7 bytes
    assert r.status_code == 206 and r.content == data[-7:]
    assert r.headers["content-range"] == f"bytes {len(data) - 7}-{len(data) - 1}/{len(data)}"
    r = await client.get(url, headers={"Range": f"bytes={len(data) - 3}-"})  # open-ended
    assert r.status_code == 206 and r.content == data[-3:]
    r = await client.get(url, headers={"Range": f"bytes={len(data)}-"})  # wholly past the end
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("filename", ["evil\r\nSet-Cookie: a=b.mp4", 'quo"te.mp4', "../../etc/passwd",
                                      "C:\\windows\\x.exe", "tab\there.mp4", "\x00nul.mp4"])
async def test_get_content_disposition_is_sanitized(client, filename) -> None:
    url = await _finished(client, b"abc", f"filename {b64(filename)},filetype {b64('text/html')}")
    r = await client.get(url)
    assert r.status_code == 200
    cd = r.headers["content-disposition"]
    assert "\r" not in cd and "\n" not in cd and "/" not in cd and "\\" not in cd and "\x00" not in cd
    assert cd.count('"') == 2 or (cd.count('"') == 0 and "filename*=utf-8''" in cd)
    assert "set-cookie" not in r.headers
    assert r.headers["content-type"] == "text/html; charset=utf-8" or r.headers["content-type"].startswith("text/html")
    assert cd.startswith("attachment")  # text/html is never shown inline
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_get_unsafe_filetype_falls_back(client) -> None:
    url = await _finished(client, b"abc", "filetype " + b64("text/html; x=1\r\nX-Evil: 1"))
    r = await client.get(url)
    assert r.headers["content-type"] == "application/octet-stream"
    assert "x-evil" not in r.headers


# --------------------------------------------------------------------------- hostile ids
async def _raw(app, method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]] | None = None,
               body: bytes = b"") -> tuple[int, dict[str, str]]:
    """Call the ASGI app with an exact raw path, which no HTTP client would send unaltered."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": raw_path.decode("latin-1"), "raw_path": raw_path,
             "query_string": b"", "root_path": "", "server": ("testserver", 80), "client": ("1.2.3.4", 5),
             "headers": [(b"host", b"testserver"), (b"tus-resumable", b"1.0.0"),
                         (b"content-type", b"application/offset+octet-stream"), (b"upload-offset", b"0"),
                         (b"content-length", str(len(body)).encode())] + (headers or [])}
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}


@pytest.mark.parametrize("suffix", [
    "..", "%2e%2e", "%2E%2E", "..%2F{id}", "%2e%2e%2f{id}", "x%2F..%2F{id}", "{id}%00", "{id}%2F..",
    "{id}/..", "{id}/", "..%5C{id}", "%252e%252e%252f{id}", "{ID}", "{id}0", "{id}\x00", "{id}%zz",
    "a" * 5000, "{id}\r\nX-Evil: 1", "\xff\xfe{id}", "{id}%3Fx=1",
])
async def test_hostile_ids_are_4xx_and_change_nothing(client, suffix) -> None:
    url = await new_upload(client, 10)
    await patch(client, url, 0, b"abc")
    uid = upload_id(url)
    raw = ("/files/" + suffix.format(id=uid, ID=uid.upper())).encode("latin-1")
    for method in ("HEAD", "PATCH", "DELETE", "GET", "POST"):
        status, headers = await _raw(client.app, method, raw, body=b"zzz" if method in ("PATCH", "POST") else b"")
        assert 400 <= status < 500, (method, raw, status)
        for value in headers.values():
            assert "X-Evil" not in value and "\r" not in value
            assert "a" * 100 not in value
    r = await head(client, url)
    assert r.status_code == 200 and r.headers["upload-offset"] == "3"
    assert upload_bytes(client, url) == b"abc"


# --------------------------------------------------------------------------- CORS
TUS_REQUEST_HEADERS = ["Tus-Resumable", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata",
                       "Upload-Offset", "Content-Type", "Upload-Concat", "X-HTTP-Method-Override",
                       "X-Request-ID", "Upload-Checksum", "Authorization", "X-Requested-With"]
EXPOSED = ["Location", "Upload-Offset", "Upload-Length", "Upload-Defer-Length", "Tus-Resumable", "Tus-Version",
           "Tus-Extension", "Tus-Max-Size", "Upload-Metadata", "Upload-Concat", "Upload-Expires",
           "Tus-Checksum-Algorithm"]
ORIGIN = {"Origin": "https://lms.example"}


def _csv(value: str) -> set[str]:
    return {v.strip().lower() for v in value.split(",")}


async def test_cors_preflight(client) -> None:
    r = await client.options(BASE + "a" * 32, headers={**ORIGIN, "Access-Control-Request-Method": "PATCH",
                                                       "Access-Control-Request-Headers": ",".join(TUS_REQUEST_HEADERS)})
    assert 200 <= r.status_code < 300
    assert r.headers["access-control-allow-origin"] in ("*", ORIGIN["Origin"])
    assert {"post", "head", "patch", "delete", "options"} <= _csv(r.headers["access-control-allow-methods"])
    assert {h.lower() for h in TUS_REQUEST_HEADERS} <= _csv(r.headers["access-control-allow-headers"])
    assert r.headers["access-control-max-age"] == "86400"
    assert "access-control-allow-credentials" not in r.headers


async def test_cors_on_success_and_error_responses(client) -> None:
    url = await new_upload(client, 5)
    responses = [
        await create(client, 5, headers=ORIGIN),
        await client.head(url, headers={**TUS, **ORIGIN}),
        await client.head(BASE + "d" * 32, headers={**TUS, **ORIGIN}),       # 404
        await patch(client, url, 3, b"x", ORIGIN),                            # 409
        await client.post(BASE, headers={"Upload-Length": "1", **ORIGIN}),    # 412
        await create(client, 10**15, headers=ORIGIN),                         # 413
        await patch(client, url, 0, b"x", {**ORIGIN, "Upload-Checksum": "sha1 " + b64(b"\0" * 20)}),  # 460
    ]
    assert [r.status_code for r in responses] == [201, 200, 404, 409, 412, 413, 460]
    for r in responses:
        assert r.headers["access-control-allow-origin"] in ("*", ORIGIN["Origin"]), r.status_code
        assert {h.lower() for h in EXPOSED} <= _csv(r.headers["access-control-expose-headers"]), r.status_code


async def test_cors_explicit_origins(make_client) -> None:
    c = await make_client(cors={"allow_origins": ["https://lms.example"], "allow_credentials": True})
    r = await create(c, 1, headers=ORIGIN)
    assert r.headers["access-control-allow-origin"] == "https://lms.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "origin" in _csv(r.headers.get("vary", ""))
    r = await create(c, 1, headers={"Origin": "https://evil.example"})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"


# --------------------------------------------------------------------------- completion exactly once
async def test_link_header_and_one_media_row(client) -> None:
    url = await new_upload(client, 4, headers={"Upload-Metadata": f"filename {b64('a.mp4')}"})
    r = await patch(client, url, 0, b"abcd")
    assert r.headers["link"] == f'</api/media/{upload_id(url)}>; rel="media"'
    for _ in range(3):
        assert (await patch(client, url, 4, b"")).headers["link"] == r.headers["link"]
        assert (await head(client, url)).headers["link"] == r.headers["link"]
    media = all_media(client)
    assert [m.id for m in media] == [upload_id(url)] and media[0].size == 4 and media[0].filename == "a.mp4"
    assert upload_bytes(client, url) == b"abcd"
    assert row(client, url).storage_path == f"originals/{upload_id(url)}"


class CountingEvents(NoEvents):
    def __init__(self) -> None:
        self.in_tx = 0
        self.after = 0

    def completing(self, session, upload: Upload) -> None:  # type: ignore[no-untyped-def]
        self.in_tx += 1

    async def completed(self, upload: Upload) -> dict[str, str]:
        self.after += 1
        await asyncio.sleep(0.01)
        return {"Link": "<x>"}


@pytest.mark.file_only  # completes an upload that stored no byte
async def test_completion_races_fire_once(client) -> None:
    """Many requests noticing completion at once (e.g. HEADs after a crash) publish once."""
    ctx, settings = client.app.state.ctx, client.settings
    listener = CountingEvents()
    handler = TusHandler(TusContext(settings=settings, repo=UploadRepo(ctx.engine, settings.uploads.expiration),
                                    store=open_store(settings, ctx.layout, ctx.executor),
                                    locks=UploadLocks(ctx.layout.locks, 5.0), events=listener))
    url = await new_upload(client, 3)
    upload = row(client, url)
    upload.offset = 3
    results = await asyncio.gather(*(handler._complete(row(client, url)) for _ in range(10)))
    assert listener.in_tx == 1 and listener.after == 1
    assert sum(1 for r in results if r) == 1
    partial = await new_upload(client, 2, headers={"Upload-Concat": "partial"})
    await patch(client, partial, 0, b"ab")
    p = row(client, partial)
    p.completed_at, p.offset = None, 2
    await handler._complete(p)
    assert listener.in_tx == 1 and listener.after == 1  # partials are never handed on
