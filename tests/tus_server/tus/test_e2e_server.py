"""A real ``tusflow serve`` (and two of them on one data_dir): crashes mid-PATCH, one writer per
upload across processes, stalled and idle bodies, 100-continue, exact request targets."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from models.config import load_settings
from tests.support.s3 import parts_stored, stored_upload
from tests.support import rawhttp

pytestmark = pytest.mark.e2e
TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {**TUS, "Content-Type": "application/offset+octet-stream"}


def create(base: str, length: int) -> str:
    r = httpx.post(base, headers={**TUS, "Upload-Length": str(length)})
    assert r.status_code == 201, r.text
    return r.headers["location"]


def offset_of(url: str) -> int:
    r = httpx.head(url, headers=TUS, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.headers["upload-offset"])


def upload_file(data_dir: Path, url: str) -> Path:
    return data_dir / "uploads" / url.rsplit("/", 1)[-1]


def stored(server, url: str) -> bytes | None:  # type: ignore[no-untyped-def]
    """The upload's bytes in the server's store (files or S3; see tests/support/s3.py)."""
    return stored_upload(load_settings(server.config, env={}), url.rsplit("/", 1)[-1])


def durable(server, url: str) -> int:  # type: ignore[no-untyped-def]
    """Bytes a SIGKILL of the server cannot take back: its file, or its S3 parts."""
    settings = load_settings(server.config, env={})
    if settings.storage.backend == "s3":
        return parts_stored(settings, url.rsplit("/", 1)[-1]) or 0
    return upload_file(settings.data_dir, url).stat().st_size


def test_sigkill_mid_patch_then_restart_and_finish(start_server, data_dir) -> None:
    data = os.urandom(8 * 1024 * 1024)
    server = start_server()
    url = create(server.url, len(data))
    sock = rawhttp.start_patch(url, 0, len(data))
    sent = 0
    try:
        for _ in range(200):  # stream slowly until the server has written a good part
            sock.sendall(data[sent:sent + 128 * 1024])
            sent += 128 * 1024
            time.sleep(0.01)
            if durable(server, url) >= 2 * 1024 * 1024:
                break
        assert durable(server, url) >= 2 * 1024 * 1024
        server.kill()  # SIGKILL mid-PATCH
    finally:
        sock.close()
    restarted = start_server(config=server.config)
    url = url.replace(server.origin, restarted.origin)
    offset = offset_of(url)
    assert 0 < offset <= sent
    if load_settings(server.config, env={}).storage.backend == "file":  # S3 parts cannot be read back
        assert upload_file(data_dir, url).read_bytes() == data[:offset]  # the offset is backed by data
    r = httpx.patch(url, headers={**OCTET, "Upload-Offset": str(offset)}, content=data[offset:], timeout=60)
    assert r.status_code == 204 and r.headers["upload-offset"] == str(len(data))
    assert hashlib.sha256(stored(restarted, url) or b"").hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.fixture
def two_servers(start_server):  # type: ignore[no-untyped-def]
    first = start_server(server={"lock_timeout": 5.0, "body_idle_timeout": 10.0})
    second = start_server(config=first.config)
    return first, second


def _slow_body(data: bytes, pieces: int, pause: float):  # type: ignore[no-untyped-def]
    step = len(data) // pieces
    for i in range(0, len(data), step):
        yield data[i:i + step]
        time.sleep(pause)


def test_two_processes_one_writer_per_upload(two_servers, data_dir) -> None:
    """Two PATCHes at the same offset through two processes: at most one succeeds, the stored
    bytes are a prefix of exactly one body, and the offset equals the stored bytes."""
    first, second = two_servers
    size = 2 * 1024 * 1024
    for round_ in range(3):
        url = create(first.url, size)
        bodies = [os.urandom(size), os.urandom(size)]
        targets = [url, url.replace(first.origin, second.origin)]

        def send(i: int) -> int:
            if i == 1:
                time.sleep(0.05 * round_)
            r = httpx.patch(targets[i], headers={**OCTET, "Upload-Offset": "0"},
                            content=_slow_body(bodies[i], 16, 0.02), timeout=30)
            return r.status_code

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(send, [0, 1]))
        assert all(s in (204, 400, 409, 423, 500) for s in statuses), statuses
        assert statuses.count(204) <= 1, statuses
        offset = offset_of(url)
        kept = stored(first, url)
        assert kept is not None and len(kept) == offset
        assert kept in (bodies[0][:offset], bodies[1][:offset]), "bytes of two writers interleaved"
        if 204 in statuses:
            assert kept == bodies[statuses.index(204)]


def test_many_uploads_across_two_processes_share_sqlite(two_servers) -> None:
    first, second = two_servers

    def one(i: int) -> bytes:
        base = (first, second)[i % 2]
        other = (first, second)[(i + 1) % 2]
        data = os.urandom(50_000 + i)
        url = create(base.url, len(data))
        r = httpx.patch(url, headers={**OCTET, "Upload-Offset": "0"}, content=data[:25_000], timeout=30)
        assert r.status_code == 204, r.text
        url2 = url.replace(base.origin, other.origin)
        r = httpx.patch(url2, headers={**OCTET, "Upload-Offset": "25000"}, content=data[25_000:], timeout=30)
        assert r.status_code == 204, r.text
        return httpx.get(url2, timeout=30).content == data

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(12)))


def test_stalled_patch_releases_to_resume_head(two_servers, data_dir) -> None:
    """A client that sent part of a body and went quiet (socket still open) must not block the
    resume: HEAD from another connection, even another process, answers fast with the bytes."""
    first, second = two_servers
    url = create(first.url, 1_000_000)
    sock = rawhttp.start_patch(url, 0, 1_000_000)
    try:
        sock.sendall(b"s" * 300_000)
        time.sleep(0.5)
        started = time.monotonic()
        offset = offset_of(url.replace(first.origin, second.origin))
        assert time.monotonic() - started < 5.0  # the lock_timeout: did not wait out the stall
        assert offset == 300_000
        status, headers, _ = rawhttp.read_response(sock, timeout=5)
        assert status == 400 and headers["upload-offset"] == "300000"
        assert rawhttp.closed_by_peer(sock)
    finally:
        sock.close()
    r = httpx.patch(url, headers={**OCTET, "Upload-Offset": "300000"}, content=b"r" * 700_000)
    assert r.status_code == 204
    assert stored(first, url) == b"s" * 300_000 + b"r" * 700_000


def test_idle_body_timeout_saves_and_closes(start_server) -> None:
    server = start_server(server={"body_idle_timeout": 1.0})
    url = create(server.url, 100_000)
    sock = rawhttp.start_patch(url, 0, 100_000)
    try:
        sock.sendall(b"i" * 40_000)
        status, headers, _ = rawhttp.read_response(sock, timeout=10)
        assert status == 500 and headers["upload-offset"] == "40000"
        assert headers.get("connection") == "close"
        assert rawhttp.closed_by_peer(sock)
    finally:
        sock.close()
    assert offset_of(url) == 40_000


def test_expect_100_continue_only_when_body_is_wanted(start_server) -> None:
    server = start_server()
    url = create(server.url, 10)
    sock = rawhttp.start_patch(url, 5, 5, {"Expect": "100-continue"})  # wrong offset
    try:
        status, headers, _ = rawhttp.read_response(sock, timeout=5)
        assert status == 409  # a final answer, no 100 Continue first
    finally:
        sock.close()
    sock = rawhttp.start_patch(url, 0, 5, {"Expect": "100-continue"})
    try:
        status, _, _ = rawhttp.read_response(sock, timeout=5)
        assert status == 100
        sock.sendall(b"hello")
        status, headers, _ = rawhttp.read_response(sock, timeout=5)
        assert status == 204 and headers["upload-offset"] == "5"
    finally:
        sock.close()


TARGETS = ["/files/../files/{id}", "/files/%2e%2e/files/{id}", "/files/{id}%2F..", "/files/x%2F..%2F{id}",
           "/files/{id}%00", "/files/%zz{id}", "/files/" + "a" * 8000, "/files/{id}/..", "/files/\xff{id}",
           "/files/{ID}"]


def test_traversal_targets_on_real_server(start_server, data_dir) -> None:
    server = start_server()
    url = create(server.url, 10)
    httpx.patch(url, headers={**OCTET, "Upload-Offset": "0"}, content=b"abc")
    upload_id = url.rsplit("/", 1)[-1]
    host = urlsplit(server.url).netloc
    for target in TARGETS:
        for method in ("HEAD", "PATCH", "DELETE", "GET"):
            sock = rawhttp.connect(server.url)
            try:
                headers = {**OCTET, "Upload-Offset": "3", "Content-Length": "2", "Connection": "close"}
                line = target.format(id=upload_id, ID=upload_id.upper())
                sock.sendall(rawhttp.request_head(method, line, host, headers) + (b"zz" if method == "PATCH" else b""))
                status, _, _ = rawhttp.read_response(sock, timeout=5)
            finally:
                sock.close()
            assert 400 <= status < 500, (method, target, status)
    assert offset_of(url) == 3 and stored(server, url) == b"abc"
    assert server.proc.alive()


def test_workers_2_share_uploads(start_server) -> None:
    server = start_server(workers=2)

    def one(i: int) -> bool:
        data = os.urandom(300_000 + i)
        url = create(server.url, len(data))
        for offset in range(0, len(data), 100_000):
            r = httpx.patch(url, headers={**OCTET, "Upload-Offset": str(offset)},
                            content=data[offset:offset + 100_000], timeout=30)
            assert r.status_code == 204, r.text
        return httpx.get(url, timeout=30).content == data

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert all(pool.map(one, range(6)))
