"""A real tusflow server and tus-js-client under Node: the JWT expires in the middle of a long
upload, the PATCH gets 401 before any of its bytes are read, the client fetches a fresh token
from the platform and resumes; nothing is lost or sent twice into the file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from tests.support.procs import Proc, TusflowServer

from tests.support.credentials import HS_SECRET, hs_token

NODE_SCRIPT = Path(__file__).parent / "node" / "refresh_upload.js"
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")]


class TokenServer:
    """The platform's token endpoint: every GET mints a fresh 10-minute JWT for alice."""

    def __init__(self) -> None:
        self.minted = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.minted += 1
                body = json.dumps({"token": hs_token("alice", ttl=600)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer()
    yield server
    server.close()


def test_token_refresh_mid_upload_keeps_every_byte(start_server: Callable[..., TusflowServer],
                                                   token_server: TokenServer, tmp_path: Path) -> None:
    server = start_server(auth={"enabled": True, "jwt_hs256_secret": HS_SECRET, "jwt_leeway": 0})
    source = tmp_path / "lecture.bin"
    source.write_bytes(os.urandom(1536 * 1024 + 7))
    first = hs_token("alice", ttl=2)  # valid for the creation and the first chunk only
    node = Proc(["node", str(NODE_SCRIPT), server.url, str(source), str(256 * 1024), first,
                 token_server.url, "3200"], name="tus-js-refresh")
    try:
        match = node.wait_for(r"^(done|error) (.*)$", timeout=60)
    finally:
        node.stop()
    out = node.output
    assert match.group(1) == "done", out
    assert "status 401 PATCH" in out, out  # the expired token was refused ...
    assert out.count("refreshed") == 1 and token_server.minted == 1, out  # ... refreshed once ...
    assert out.count("status 201 POST") == 1, out  # ... and the same upload went on
    lines = out.splitlines()
    refused_at = lines.index(next(line for line in lines if line.startswith("status 401 PATCH")))
    offsets = [int(line.split()[3]) for line in lines[:refused_at] if line.startswith("status 204 PATCH")]
    resumed = next(line for line in lines[refused_at:] if line.startswith("status 200 HEAD"))
    assert int(resumed.split()[3]) == offsets[-1]  # the 401 stored nothing

    url = match.group(2)
    got = httpx.get(url, headers={"Authorization": f"Bearer {hs_token('alice')}"}, timeout=30)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    assert httpx.get(url, headers={"Authorization": f"Bearer {hs_token('bob')}"}).status_code == 404


def test_event_stream_takes_a_query_token_and_shows_only_own_items(
        start_server: Callable[..., TusflowServer]) -> None:
    """EventSource cannot send headers: the token rides in the query (GET only), and the live
    feed carries only the viewer's own uploads."""
    from tests.support.credentials import ALICE_TOKEN, BOB_TOKEN, TOKENS
    server = start_server(auth={"enabled": True, "tokens": TOKENS})
    events = f"{server.origin}/api/events"
    assert httpx.get(events, timeout=5).status_code == 401

    def create(token: str) -> str:
        r = httpx.post(server.url, headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10",
                                            "Authorization": f"Bearer {token}"})
        assert r.status_code == 201
        return r.headers["location"].rsplit("/", 1)[1]

    with httpx.stream("GET", f"{events}?token={ALICE_TOKEN}", timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        next(lines)  # the stream is open: the feed is subscribed before anything is created
        bobs = create(BOB_TOKEN)
        time.sleep(2.5)  # past two polls of the feed: bob's item would have been sent by now
        alices = create(ALICE_TOKEN)
        seen = []
        for line in lines:
            seen.append(line)
            if alices in line:
                break
    assert any(alices in line for line in seen)
    assert not any(bobs in line for line in seen), seen
