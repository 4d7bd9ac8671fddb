"""How a PATCH body can end, driven through the ASGI app with a scripted ``receive``: broken
receive, client gone, stalled client asked to release, idle timeout; and the appender's
behaviour when the disk fails half way."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from models.layout import Layout
from tests.support.tushelp import data_dir_of, head, new_upload, row, upload_bytes, upload_id
from tus_server.tus.body import BodyEnd, BodyReader
from tus_server.tus.datastore import open_store
from tus_server.tus.store import FileStore


class Script:
    """A receive() that hands out body messages, then does what the test says."""

    def __init__(self, chunks: list[bytes], then: str):
        self.chunks = list(chunks)
        self.then = then  # "raise", "disconnect", "stall", "finish"
        self.stalled = asyncio.Event()

    async def __call__(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self.chunks:
            return {"type": "http.request", "body": self.chunks.pop(0), "more_body": True}
        if self.then == "raise":
            raise RuntimeError("socket exploded")
        if self.then == "disconnect":
            return {"type": "http.disconnect"}
        if self.then == "finish":
            return {"type": "http.request", "body": b"", "more_body": False}
        self.stalled.set()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}


async def call(app, url: str, offset: int, receive: Script, length: int | None = None) -> tuple[int, dict[str, str]]:
    path = "/files/" + upload_id(url)
    headers = [(b"host", b"testserver"), (b"tus-resumable", b"1.0.0"),
               (b"content-type", b"application/offset+octet-stream"), (b"upload-offset", str(offset).encode())]
    headers.append((b"content-length", str(length).encode()) if length is not None else (b"transfer-encoding", b"chunked"))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PATCH", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "server": ("testserver", 80), "client": ("1.2.3.4", 5), "headers": headers}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0]["headers"]}


async def test_receive_raising_keeps_bytes_and_answers_5xx(client) -> None:
    url = await new_upload(client, 100)
    status, headers = await call(client.app, url, 0, Script([b"abc", b"defg"], "raise"))
    assert status == 500
    assert headers["upload-offset"] == "7" and headers["connection"] == "close"
    assert upload_bytes(client, url) == b"abcdefg"
    assert (await head(client, url)).headers["upload-offset"] == "7"


async def test_client_gone_keeps_bytes(client) -> None:
    url = await new_upload(client, 10_000)
    status, headers = await call(client.app, url, 0, Script([b"x" * 1000, b"y" * 500], "disconnect"))
    assert status == 400 and headers["upload-offset"] == "1500"
    assert row(client, url).offset == 1500 and upload_bytes(client, url) == b"x" * 1000 + b"y" * 500


async def test_stalled_patch_is_released_by_head(client) -> None:
    url = await new_upload(client, 100)
    script = Script([b"hello"], "stall")
    stalled = asyncio.ensure_future(call(client.app, url, 0, script))
    await asyncio.wait_for(script.stalled.wait(), 5)
    r = await asyncio.wait_for(head(client, url), client.settings.server.lock_timeout)
    assert r.status_code == 200 and r.headers["upload-offset"] == "5"
    status, headers = await asyncio.wait_for(stalled, 5)
    assert status == 400 and headers["upload-offset"] == "5" and headers["connection"] == "close"
    assert upload_bytes(client, url) == b"hello"


async def test_idle_body_times_out_and_saves(make_client) -> None:
    c = await make_client(server={"body_idle_timeout": 0.5})
    url = await new_upload(c, 100)
    status, headers = await asyncio.wait_for(call(c.app, url, 0, Script([b"abc"], "stall")), 10)
    assert status == 500 and headers["upload-offset"] == "3"
    assert upload_bytes(c, url) == b"abc"


async def test_lock_held_without_release_gives_423(make_client) -> None:
    """A holder that cannot stop (here: a held lock, no body) makes waiters answer 423, not hang."""
    c = await make_client(server={"lock_timeout": 0.5})
    url = await new_upload(c, 10)
    locks = c.app.state.ctx  # the app's lock directory, taken the way another process would
    from tus_server.tus.locks import UploadLocks
    other = UploadLocks(locks.layout.locks, 1.0)
    async with other.hold(upload_id(url)):
        r = await head(c, url)
    assert r.status_code == 423
    assert (await head(c, url)).status_code == 200


async def test_body_reader_limits_and_ends() -> None:
    reader = BodyReader(Script([b"12345", b"678"], "finish"), 6, 5.0, lambda: False)
    got = [c async for c in reader.chunks()]
    assert b"".join(got) == b"123456" and reader.end == BodyEnd.OVERFLOW and reader.received == 6
    reader = BodyReader(Script([b"12", b"34"], "finish"), 10, 5.0, lambda: False)
    assert b"".join([c async for c in reader.chunks()]) == b"1234" and reader.end == BodyEnd.COMPLETE
    stop = {"now": False}
    script = Script([b"ab"], "stall")
    reader = BodyReader(script, 10, 5.0, lambda: stop["now"])

    async def later() -> None:
        await script.stalled.wait()
        stop["now"] = True
    asyncio.ensure_future(later())
    assert b"".join([c async for c in reader.chunks()]) == b"ab" and reader.end == BodyEnd.RELEASED


async def test_appender_stops_at_first_failed_write(tmp_path: Path, monkeypatch) -> None:
    """A failing disk must not leave a hole: later batches are not written, ``written`` is exact."""
    from concurrent.futures import ThreadPoolExecutor
    from tus_server.tus import store as store_mod
    layout = Layout(tmp_path)
    layout.ensure()
    with ThreadPoolExecutor(2) as pool:
        store = FileStore(layout, False, pool)
        target = tmp_path / "f"
        calls = {"n": 0}
        real = os.pwritev

        def flaky(fd: int, buffers: Any, offset: int) -> int:
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
            return real(fd, buffers, offset)
        monkeypatch.setattr(store_mod.os, "pwritev", flaky)
        appender = store.appender(target, 0)
        batch = store_mod.BATCH_BYTES
        with pytest.raises(OSError):
            for i in range(5):
                await appender.write(bytes([65 + i]) * batch)
        written = await appender.close()
        assert appender.failed is not None
        assert written == batch
        assert target.stat().st_size == batch and target.read_bytes() == b"A" * batch


async def test_appender_handles_many_small_chunks(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor
    import hashlib
    layout = Layout(tmp_path)
    layout.ensure()
    with ThreadPoolExecutor(2) as pool:
        store = FileStore(layout, False, pool)
        hasher = hashlib.sha256()
        appender = store.appender(tmp_path / "g", 3, hasher)
        (tmp_path / "g").write_bytes(b"pre")
        data = os.urandom(300_000)
        for i in range(0, len(data), 7):
            await appender.write(data[i:i + 7])
        assert await appender.close() == len(data)
        assert (tmp_path / "g").read_bytes() == b"pre" + data
        assert hasher.digest() == hashlib.sha256(data).digest()


async def _asgi(app, method: str, url: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, str]]:
    path = "/files/" + upload_id(url)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "server": ("testserver", 80), "client": ("1.2.3.4", 5),
             "headers": [(b"host", b"testserver"), (b"tus-resumable", b"1.0.0")] + headers}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
    await app(scope, Script([], "finish"), send)
    return sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0]["headers"]}


async def test_request_bound_to_fail_never_interrupts_a_running_upload(client) -> None:
    """Only a request that passed the checks may ask the holder of an upload to stop."""
    from tus_server.tus import errors as E
    from tus_server.tus.events import NoEvents
    from tus_server.tus.handlers import TusContext, TusHandler
    from tus_server.tus.locks import UploadLocks
    from tus_server.tus.repo import UploadRepo

    class Guard:
        def check_owner(self, request, upload) -> None:  # type: ignore[no-untyped-def]
            if request.headers.get("x-user") == "mallory":
                raise E.ERR_NOT_FOUND()

    ctx, settings = client.app.state.ctx, client.settings
    handler = TusHandler(TusContext(settings=settings, repo=UploadRepo(ctx.engine, settings.uploads.expiration),
                                    store=open_store(settings, ctx.layout, ctx.executor),
                                    locks=UploadLocks(ctx.layout.locks, 2.0), events=NoEvents(),
                                    guard=Guard()))  # type: ignore[arg-type]
    url = await new_upload(client, 100)
    script = Script([b"hello"], "stall")
    running = asyncio.ensure_future(call(handler, url, 0, script))
    await asyncio.wait_for(script.stalled.wait(), 5)
    for method in ("HEAD", "DELETE"):
        status, _ = await _asgi(handler, method, url, [(b"x-user", b"mallory")])
        assert status == 404
    await asyncio.sleep(0.6)  # longer than the holder's release checks
    assert not running.done(), "a refused request interrupted the upload"
    status, headers = await _asgi(handler, "HEAD", url, [])
    assert status == 200 and headers["upload-offset"] == "5"
    status, _ = await asyncio.wait_for(running, 5)
    assert status == 400


async def test_unknown_ids_leave_no_lock_files(client) -> None:
    unknown = "/files/" + "9" * 32
    for method in ("HEAD", "PATCH", "DELETE"):
        status, _ = await _asgi(client.app, method, unknown, [(b"content-type", b"application/offset+octet-stream"),
                                                                 (b"upload-offset", b"0")])
        assert status == 404
    assert not list((data_dir_of(client) / "locks").glob("9999*"))


async def test_shutdown_ends_running_patch_with_bytes_saved(client) -> None:
    """SIGTERM sets the app's stop flag: a running PATCH saves, answers 503 (clients retry)
    and closes, so the server can exit inside a container's stop timeout."""
    url = await new_upload(client, 100)
    script = Script([b"abcdef"], "stall")
    running = asyncio.ensure_future(call(client.app, url, 0, script))
    await asyncio.wait_for(script.stalled.wait(), 5)
    stopping = client.app.state.ctx.stopping
    stopping.set()
    try:
        status, headers = await asyncio.wait_for(running, 5)
        assert status == 503 and headers["upload-offset"] == "6" and headers["connection"] == "close"
        assert upload_bytes(client, url) == b"abcdef"
        status, _ = await call(client.app, url, 6, Script([b"gh"], "finish"))
        assert status == 503  # no new body is taken on while stopping
    finally:
        stopping.clear()
    assert (await head(client, url)).headers["upload-offset"] == "6"
