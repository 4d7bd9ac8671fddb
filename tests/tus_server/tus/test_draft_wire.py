"""The draft on the wire, against a real ``tusflow serve``: the 104 Upload Resumption Supported
interim response (both uvicorn HTTP protocols), 104 next to 100-continue, a creation cut right
after its 104 and resumed at the server's offset, a PATCH cut mid-body that keeps its bytes,
and a stalled append that a new request takes over."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from models.config import load_settings
from tests.support.s3 import stored_upload
from tests.support.waiting import wait_until
from tests.support import rawhttp
from tus_server.tus import draft_headers as D

pytestmark = pytest.mark.e2e
PARTIAL = "application/partial-upload"


def v(version: int, **extra: str) -> dict[str, str]:
    return {"Upload-Draft-Interop-Version": str(version), **extra}


class Wire:
    """One raw connection: send a request head, read every response head that comes (1xx
    interim ones included), in order."""

    def __init__(self, url: str):
        self.parts = urlsplit(url)
        self.sock = rawhttp.connect(url)
        self.buffer = b""

    def send_head(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.sock.sendall(rawhttp.request_head(method, path, self.parts.netloc, headers))

    def next_head(self, timeout: float = 10.0) -> tuple[int, dict[str, str]]:
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no response head; got {self.buffer[:200]!r}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a response head; got {self.buffer[:200]!r}")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return int(lines[0].split(" ")[1]), headers

    def final(self) -> tuple[int, dict[str, str], list[tuple[int, dict[str, str]]]]:
        """Read heads until a final one; returns it and the interim ones before it."""
        interim = []
        while True:
            status, headers = self.next_head()
            if status >= 200:
                return status, headers, interim
            interim.append((status, headers))

    def cut(self) -> None:
        """Drop the connection as a lost network does (RST)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()


def head(url: str, version: int) -> httpx.Response:
    r = httpx.head(url, headers=v(version), timeout=30)
    assert r.status_code == 204, r.text
    return r


def settled_offset(url: str, version: int, at_least: int) -> int:
    """The offset once the server has recorded the cut request's bytes."""
    return wait_until(lambda: (o := int(head(url, version).headers["upload-offset"])) >= at_least and o,
                      20, f"offset of {url} >= {at_least}") or 0


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("version", [6, 7, 8])
def test_104_carries_location_version_and_limit_before_the_final_response(start_server, http, version) -> None:
    server = start_server(server={"http": http}, uploads={"max_size": 1 << 30, "expiration": 3600})
    data = os.urandom(20_000)
    wire = Wire(server.url)
    wire.send_head("POST", urlsplit(server.url).path, v(version, **{
        "Upload-Complete": "?1", "Content-Length": str(len(data)), "Content-Type": "video/mp4"}))
    status, interim_headers = wire.next_head()  # before a byte of the body was sent
    assert status == 104
    assert interim_headers["upload-draft-interop-version"] == str(version)
    assert D.parse_limit(interim_headers["upload-limit"]) == D.UploadLimit(max_size=1 << 30, max_age=3600)
    location = interim_headers["location"]
    wire.sock.sendall(data)
    status, headers, more = wire.final()
    assert (status, more) == (201, [])
    assert headers["location"] == location and headers["upload-complete"] == "?1"
    r = head(location, version)
    assert r.headers["upload-offset"] == str(len(data)) and r.headers["upload-complete"] == "?1"


def test_no_104_without_the_draft_header_or_for_an_unknown_version(start_server) -> None:
    server = start_server()
    path = urlsplit(server.url).path
    wire = Wire(server.url)
    wire.send_head("POST", path, {"Tus-Resumable": "1.0.0", "Upload-Length": "5", "Content-Length": "0"})
    status, headers, interim = wire.final()
    assert status == 201 and interim == []
    wire = Wire(server.url)
    wire.send_head("POST", path, v(99, **{"Upload-Complete": "?0", "Content-Length": "0"}))
    status, headers, interim = wire.final()
    assert status == 400 and interim == [] and headers["content-type"] == "application/problem+json"


def test_104_does_not_replace_100_continue(start_server) -> None:
    """I12: a client waiting for 100-continue gets it even though a 104 came first."""
    server = start_server()
    wire = Wire(server.url)
    wire.send_head("POST", urlsplit(server.url).path, v(8, **{
        "Upload-Complete": "?1", "Content-Length": "4", "Expect": "100-continue"}))
    first, _ = wire.next_head()
    second, _ = wire.next_head()
    assert (first, second) == (104, 100)
    wire.sock.sendall(b"abcd")
    status, headers, interim = wire.final()
    assert status == 201 and headers["upload-offset"] == "4" and interim == []


def held(server, url: str) -> int:  # type: ignore[no-untyped-def]
    """Bytes of a running request the server holds: on the file store what its file has; on
    S3 (bytes below one part stay in memory until the request ends) what the server has read,
    from its /metrics counter (one server per test, one upload receiving)."""
    settings = load_settings(server.config, env={})
    if settings.storage.backend != "s3":
        path = settings.data_dir / "uploads" / url.rsplit("/", 1)[-1]
        return path.stat().st_size if path.exists() else 0
    text = httpx.get(f"{server.origin}/metrics", timeout=10).text
    found = re.search(r"^tusflow_upload_bytes_received_total ([0-9.e+]+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def stored(server, url: str) -> bytes | None:  # type: ignore[no-untyped-def]
    """The upload's stored bytes, wherever the server's store keeps them."""
    return stored_upload(load_settings(server.config, env={}), url.rsplit("/", 1)[-1])


@pytest.mark.parametrize("version", [6, 7, 8])
def test_creation_cut_after_the_104_is_resumed_at_the_servers_offset(start_server, version) -> None:
    server = start_server()
    data = os.urandom(3 * 1024 * 1024)
    wire = Wire(server.url)
    wire.send_head("POST", urlsplit(server.url).path, v(version, **{
        "Upload-Complete": "?1", "Content-Length": str(len(data))}))
    status, interim = wire.next_head()
    assert status == 104
    url = interim["location"]
    sent = 1_500_000
    wire.sock.sendall(data[:sent])
    wait_until(lambda: held(server, url) >= 500_000, 20, "bytes of the cut creation held")
    wire.cut()
    offset = settled_offset(url, version, 500_000)
    assert offset <= sent
    r = head(url, version)
    # ?1 with Content-Length fixed the length; the cut upload is not complete.
    assert r.headers["upload-complete"] == "?0" and r.headers["upload-length"] == str(len(data))
    r = httpx.patch(url, headers=v(version, **{"Content-Type": PARTIAL, "Upload-Offset": str(offset),
                                              "Upload-Complete": "?1"}), content=data[offset:], timeout=30)
    assert r.status_code == 204 and r.headers["upload-complete"] == "?1", r.text
    assert hashlib.sha256(stored(server, url) or b"").digest() == hashlib.sha256(data).digest()


def start_append(server, version: int, data: bytes, sent: int) -> tuple[str, Wire]:  # type: ignore[no-untyped-def]
    r = httpx.post(server.url, headers=v(version, **{"Upload-Complete": "?0", "Upload-Length": str(len(data))}))
    assert r.status_code == 201
    url = r.headers["location"]
    wire = Wire(url)
    wire.send_head("PATCH", urlsplit(url).path, v(version, **{
        "Content-Type": PARTIAL, "Upload-Offset": "0", "Upload-Complete": "?1", "Content-Length": str(len(data))}))
    wire.sock.sendall(data[:sent])
    wait_until(lambda: held(server, url) >= sent // 2, 20, "bytes of the append held")
    return url, wire


def finish(server, url: str, version: int, data: bytes) -> None:  # type: ignore[no-untyped-def]
    offset = int(head(url, version).headers["upload-offset"])
    assert stored(server, url) == data[:offset]  # every acknowledged byte is the client's
    r = httpx.patch(url, headers=v(version, **{"Content-Type": PARTIAL, "Upload-Offset": str(offset),
                                              "Upload-Complete": "?1"}), content=data[offset:], timeout=30)
    assert r.status_code == 204 and r.headers["upload-offset"] == str(len(data))
    assert hashlib.sha256(stored(server, url) or b"").digest() == hashlib.sha256(data).digest()
    # An offset never decreases: an old offset is refused with the current one.
    r = httpx.patch(url, headers=v(version, **{"Content-Type": PARTIAL, "Upload-Offset": "0",
                                              "Upload-Complete": "?1"}), content=b"x")
    assert r.status_code == 409 and r.headers["upload-offset"] == str(len(data))


@pytest.mark.parametrize("version", [6, 7, 8])
def test_patch_cut_mid_body_keeps_its_bytes(start_server, version) -> None:
    server = start_server()
    data = os.urandom(2 * 1024 * 1024)
    url, wire = start_append(server, version, data, 1_500_000)
    wire.cut()
    offset = settled_offset(url, version, 750_000)
    assert offset <= 1_500_000
    assert head(url, version).headers["upload-complete"] == "?0"
    finish(server, url, version, data)


def test_a_new_request_takes_over_a_stalled_append(start_server) -> None:
    """I11: a HEAD while an append stalls stops that append (lock release), answers an offset
    its bytes back, and the client continues from there."""
    server = start_server()
    data = os.urandom(2 * 1024 * 1024)
    url, wire = start_append(server, 8, data, 1_500_000)
    offset = int(head(url, 8).headers["upload-offset"])  # the append still holds the connection
    assert 750_000 <= offset <= 1_500_000
    status, _, _ = wire.final()  # the stalled append was answered and let go
    assert status >= 400
    finish(server, url, 8, data)
