"""The HTTP server's own limits (tus_server/httpserver.py) on a real ``tusflow serve``, through
raw sockets on loopback: request-line and head sizes (414/431), the request-head timeout
(silent and trickling connections), and the per-address connection cap. Each runs on both
parsers ``[server] http`` offers, and the size and timeout limits once with ``--workers 2`` and
once under ``tusflow up``.

Distinct client addresses come from binding the client socket to 127.0.0.x: Linux routes the
whole 127/8 to loopback, so the server sees each as its own peer.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.procs import TUSFLOW, Proc, TusflowServer, write_config
from tests.support import rawhttp

pytestmark = pytest.mark.e2e
TUS = {"Tus-Resumable": "1.0.0"}
PARSERS = ["httptools", "h11"]

MAX_LINE = 2048
MAX_HEAD = 16384
HEAD_TIMEOUT = 1.5
CLOSE_BOUND = 20.0  # generous upper bound for "closed by the server", far above HEAD_TIMEOUT


def _start(root: Path, workers: int = 1, **server: object) -> TusflowServer:
    data = root / "var"
    data.mkdir()
    config = write_config(root / "config.toml", {
        "storage": {"data_dir": str(data), "fsync": False},
        "server": {"lock_timeout": 5.0, "body_idle_timeout": 5.0, **server},
    })
    return TusflowServer(config, workers=workers)


@pytest.fixture(scope="module", params=PARSERS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TusflowServer]:
    """Small limits and a short head timeout, no connection cap."""
    s = _start(tmp_path_factory.mktemp(f"limits-{request.param}"), http=request.param,
               max_request_line=MAX_LINE, max_request_head=MAX_HEAD,
               request_head_timeout=HEAD_TIMEOUT, max_connections_per_address=0)
    yield s
    s.stop()


def connect(server: TusflowServer, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    parts = urlsplit(server.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout, source_address=(source, 0))


def head(server: TusflowServer, method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    return rawhttp.request_head(method, target, urlsplit(server.url).netloc, headers or {})


def answer_while_sending(sock: socket.socket, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` from a thread and read the answer meanwhile: a server that refuses early
    answers before the client has finished sending."""
    def send() -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server closed after answering
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        return rawhttp.read_response(sock, timeout=CLOSE_BOUND)
    finally:
        sender.join(CLOSE_BOUND)


def received_until_closed(sock: socket.socket, timeout: float = CLOSE_BOUND) -> bytes:
    """What the server sent before closing; fails if it has not closed within ``timeout``."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return got
    except socket.timeout:
        pass
    raise AssertionError(f"connection still open after {timeout} s; received {got[:200]!r}")


def options_ok(server: TusflowServer, source: str = "127.0.0.1") -> bool:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.options(server.url).status_code in (200, 204)


# ------------------------------------------------------------------------------------- sizes

def test_huge_header_is_431_and_the_server_goes_on(server: TusflowServer) -> None:
    sock = connect(server)
    try:
        data = head(server, "OPTIONS", urlsplit(server.url).path, {"X-Big": "a" * (16 * 1024 * 1024)})
        status, headers, _ = answer_while_sending(sock, data)
        assert status == 431
        assert headers["connection"] == "close"
        received_until_closed(sock)  # and the connection is closed
    finally:
        sock.close()
    assert options_ok(server)
    # a head just under the limit is served
    sock = connect(server)
    try:
        sock.sendall(head(server, "OPTIONS", urlsplit(server.url).path, {"X-Big": "b" * (MAX_HEAD - 500)}))
        status, _, _ = rawhttp.read_response(sock)
        assert status in (200, 204)
    finally:
        sock.close()


def test_many_small_headers_count_together(server: TusflowServer) -> None:
    fields = {f"X-H{i}": "v" * 20 for i in range(MAX_HEAD // 20)}
    sock = connect(server)
    try:
        status, _, _ = answer_while_sending(sock, head(server, "OPTIONS", urlsplit(server.url).path, fields))
        assert status == 431
    finally:
        sock.close()


def test_long_request_line_is_414(server: TusflowServer) -> None:
    path = urlsplit(server.url).path
    sock = connect(server)
    try:
        status, headers, body = answer_while_sending(sock, head(server, "HEAD", path + "a" * (MAX_LINE * 8)))
        assert status == 414
        assert headers["connection"] == "close"
    finally:
        sock.close()
    assert options_ok(server)


# ------------------------------------------------------------------------------------- time

def test_silent_connections_are_closed(server: TusflowServer) -> None:
    socks = [connect(server, timeout=CLOSE_BOUND) for _ in range(20)]
    try:
        for sock in socks:
            assert received_until_closed(sock) == b""  # closed, and without an answer
    finally:
        for sock in socks:
            sock.close()
    assert options_ok(server)


def test_header_trickle_gets_408_while_a_slow_body_completes(server: TusflowServer) -> None:
    """A head sent a byte at a time is cut off; a PATCH body that takes several head timeouts
    to arrive is not (bodies have their own idle timeout)."""
    data = os.urandom(64 * 1024)
    r = httpx.post(server.url, headers={**TUS, "Upload-Length": str(len(data))})
    assert r.status_code == 201, r.text
    url = r.headers["location"]
    patch = rawhttp.start_patch(url, 0, len(data))
    trickle = connect(server)
    try:
        trickle.sendall(b"OPTIONS " + urlsplit(server.url).path.encode() + b" HTTP/1.1\r\nX-Slow: ")
        pieces = [data[i:i + 8192] for i in range(0, len(data), 8192)]
        deadline = time.monotonic() + CLOSE_BOUND
        answered = False
        while time.monotonic() < deadline and not (answered and not pieces):
            if pieces:
                patch.sendall(pieces.pop(0))  # 8 pieces, 0.5 s apart: ~4 s, > 2 head timeouts
            if not answered:
                try:
                    trickle.send(b"x")
                except OSError:
                    pass
                answered = bool(select.select([trickle], [], [], 0)[0])
            time.sleep(0.5)
        assert answered, "the trickling connection got no answer"
        status, headers, _ = rawhttp.read_response(trickle)
        assert status == 408 and headers["connection"] == "close"
        status, headers, _ = rawhttp.read_response(patch, timeout=CLOSE_BOUND)
        assert status == 204 and headers["upload-offset"] == str(len(data))
    finally:
        trickle.close()
        patch.close()


def test_kept_alive_connection_times_out_a_slow_second_head(server: TusflowServer) -> None:
    path = urlsplit(server.url).path
    sock = connect(server)
    try:
        sock.sendall(head(server, "OPTIONS", path))
        status, _, _ = rawhttp.read_response(sock)
        assert status in (200, 204)
        sock.sendall(b"OPTIONS " + path.encode() + b" HTTP/1.1\r\n")  # and never the rest
        got = received_until_closed(sock)
        assert got.startswith(b"HTTP/1.1 408 "), got[:100]
    finally:
        sock.close()


# ------------------------------------------------------------------------------------- cap

CAP = 4


@pytest.fixture(params=PARSERS)
def capped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TusflowServer]:
    """A cap of CAP connections per address, and a head timeout long enough to hold them."""
    s = _start(tmp_path, http=request.param, max_connections_per_address=CAP, request_head_timeout=60.0)
    yield s
    s.stop()


def test_one_connection_over_the_cap_is_refused_while_the_others_upload(capped: TusflowServer) -> None:
    source = "127.0.0.2"
    held = [connect(capped, source) for _ in range(CAP - 1)]
    transport = httpx.HTTPTransport(local_address=source)
    data = os.urandom(3 * 1024 * 1024)
    try:
        with httpx.Client(transport=transport, timeout=30) as client:  # the CAPth connection
            r = client.post(capped.url, headers={**TUS, "Upload-Length": str(len(data))})
            assert r.status_code == 201, r.text
            url = r.headers["location"]
            extra = connect(capped, source)  # CAP + 1
            try:
                got = received_until_closed(extra)
                assert got.startswith(b"HTTP/1.1 503 "), got[:100]
                assert b"\r\nretry-after: 1\r\n" in got.lower()
            finally:
                extra.close()
            assert options_ok(capped, "127.0.0.3")  # another address is not affected
            offset = 0
            for start in range(0, len(data), 1024 * 1024):  # the upload goes on, kept alive
                r = client.patch(url, content=data[start:start + 1024 * 1024], headers={
                    **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)})
                assert r.status_code == 204, r.text
                offset = int(r.headers["upload-offset"])
            assert offset == len(data)
        for sock in held:  # the held connections still work
            sock.sendall(head(capped, "OPTIONS", urlsplit(capped.url).path))
            status, _, _ = rawhttp.read_response(sock)
            assert status in (200, 204)
    finally:
        for sock in held:
            sock.close()
    stored = capped.config.parent / "var" / "originals" / url.rsplit("/", 1)[-1]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    # closing frees the slots: CAP new connections from the same address are served
    deadline = time.monotonic() + CLOSE_BOUND
    while not options_ok(capped, source):
        assert time.monotonic() < deadline, "slots not freed after the connections closed"
        time.sleep(0.1)


# ------------------------------------------------------------------------------------- workers

def test_worker_processes_apply_the_limits(tmp_path: Path) -> None:
    s = _start(tmp_path, max_request_head=MAX_HEAD, request_head_timeout=HEAD_TIMEOUT, workers=2)
    try:
        for _ in range(4):  # several connections, so both processes are likely to take some
            sock = connect(s)
            try:
                data = head(s, "OPTIONS", urlsplit(s.url).path, {"X-Big": "a" * (4 * 1024 * 1024)})
                status, _, _ = answer_while_sending(sock, data)
                assert status == 431
            finally:
                sock.close()
        socks = [connect(s, timeout=CLOSE_BOUND) for _ in range(8)]
        try:
            for sock in socks:
                assert received_until_closed(sock) == b""
        finally:
            for sock in socks:
                sock.close()
        assert options_ok(s)
    finally:
        s.stop()


def test_up_applies_the_limits(tmp_path: Path) -> None:
    """``tusflow up`` runs ``tusflow serve``: the same limits hold (no workers needed here)."""
    data = tmp_path / "var"
    config = write_config(tmp_path / "config.toml", {
        "storage": {"data_dir": str(data), "fsync": False}, "worker": {"count": 0},
        "server": {"max_request_head": MAX_HEAD, "request_head_timeout": HEAD_TIMEOUT}})
    up = Proc([TUSFLOW, "up", "--config", str(config), "--port", "0", "--host", "127.0.0.1"], name="tusflow-up")
    try:
        parts = urlsplit(up.wait_for(r"tusflow listening on (http://\S+)", timeout=60).group(1))
        address = (parts.hostname, parts.port)
        deadline = time.monotonic() + 30
        while True:  # until the server accepts
            try:
                sock = socket.create_connection(address, timeout=CLOSE_BOUND)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and up.alive(), up.output[-2000:]
                time.sleep(0.1)
        try:
            request = rawhttp.request_head("OPTIONS", parts.path, parts.netloc, {"X-Big": "a" * (4 * 1024 * 1024)})
            status, _, _ = answer_while_sending(sock, request)
            assert status == 431
        finally:
            sock.close()
        silent = socket.create_connection(address, timeout=CLOSE_BOUND)
        try:
            assert received_until_closed(silent) == b""
        finally:
            silent.close()
    finally:
        up.stop()
