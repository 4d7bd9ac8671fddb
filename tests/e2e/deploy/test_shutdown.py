"""SIGTERM to ``tusflow serve`` while a PATCH is streaming: the bytes that arrived are kept and
the server is gone well inside a container's stop timeout.

``docker stop`` sends SIGTERM to the server only, then SIGKILL after the grace period (10 s by
default); supervisor does the same after ``stopwaitsecs``. A PATCH that keeps the server alive
past that is cut off by SIGKILL before its offset is recorded, so the test wants the server
to end running PATCHes itself, store their bytes, and exit within ``STOP_DEADLINE_S``.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import httpx
import pytest

from models.layout import Layout
from tests.support.procs import TusflowServer

TUS = {"Tus-Resumable": "1.0.0"}
LENGTH = 256 * 1024 * 1024  # far more than the test sends: the PATCH is still running at SIGTERM
CHUNK = 16 * 1024
STOP_DEADLINE_S = 10.0  # docker stop's default grace period


class SlowPatch:
    """A PATCH whose body trickles in from a thread over a raw socket, like a slow uplink."""

    def __init__(self, origin: str, path: str, offset: int, length: int):
        parts = urlsplit(origin)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        head = (f"PATCH {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
                f"Content-Length: {length}\r\n\r\n")
        self.sock.sendall(head.encode())
        self.sent = 0
        self.error: OSError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        block = b"\x5a" * CHUNK
        try:
            while not self._stop.is_set():
                self.sock.sendall(block)
                self.sent += len(block)
                time.sleep(0.01)
        except OSError as exc:  # the server ended the request or went away
            self.error = exc

    def finish(self) -> bytes:
        """Stop sending; return whatever response the server wrote (b"" if none)."""
        self._stop.set()
        self._thread.join(10)
        data = b""
        self.sock.settimeout(2)
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except OSError:
            pass
        self.sock.close()
        return data


def response_offset(raw: bytes) -> int | None:
    for line in raw.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "upload-offset":
            return int(value.strip())
    return None


@pytest.fixture(params=["sqlite", "postgres"])
def db_sections(request: pytest.FixtureRequest) -> dict[str, dict[str, str]]:
    if request.param == "postgres":
        return {"database": {"url": request.getfixturevalue("postgres_url")}}
    return {}


def test_sigterm_during_patch_keeps_received_bytes(start_server: Callable[..., TusflowServer],
                                                   data_dir: Path, db_sections: dict[str, dict[str, str]]) -> None:
    server = start_server(**db_sections)
    created = httpx.post(server.url, headers={**TUS, "Upload-Length": str(LENGTH)})
    assert created.status_code == 201, created.text
    upload_id = created.headers["location"].rstrip("/").rsplit("/", 1)[1]
    on_disk = Layout(data_dir).upload_file(upload_id)

    patch = SlowPatch(server.origin, urlsplit(server.url).path + upload_id, 0, LENGTH)
    deadline = time.monotonic() + 30
    while not (on_disk.exists() and on_disk.stat().st_size >= 256 * 1024):
        assert time.monotonic() < deadline, "the server never wrote the PATCH body"
        time.sleep(0.02)

    os.kill(server.proc.pid, signal.SIGTERM)  # what docker stop / supervisorctl stop send
    signalled = time.monotonic()
    try:
        server.proc.popen.wait(STOP_DEADLINE_S)
    except Exception:
        pass
    stopped_after = time.monotonic() - signalled
    still_running = server.proc.alive()
    raw = patch.finish()
    if still_running:
        server.kill()
    assert not still_running, (
        f"tusflow serve still running {STOP_DEADLINE_S:.0f} s after SIGTERM with a PATCH streaming "
        f"({patch.sent} bytes sent): running PATCH bodies are not ended on shutdown, so "
        "docker/supervisor would SIGKILL it before the offset is saved")

    restarted = start_server(config=server.config)
    head = httpx.head(restarted.url + upload_id, headers=TUS)
    assert head.status_code == 200
    offset = int(head.headers["upload-offset"])
    assert offset > 0, "received bytes were thrown away"
    assert offset == on_disk.stat().st_size, "offset and file disagree"
    assert offset <= patch.sent
    answered = response_offset(raw)
    assert answered in (None, offset), f"the PATCH answered Upload-Offset {answered}, HEAD says {offset}"

    resumed = httpx.patch(restarted.url + upload_id, content=b"r" * 1024, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
    assert resumed.status_code == 204 and int(resumed.headers["upload-offset"]) == offset + 1024
    print(f"stopped {stopped_after:.2f} s after SIGTERM; kept {offset} of {patch.sent} bytes sent")
