"""Issue 14 on the tus endpoint: the minimum transfer rate of a PATCH (a real server, raw
socket, loopback) and downloads that never render a scriptable type inline."""

from __future__ import annotations

import select
from typing import Callable

import httpx
import pytest

from tests.support.procs import TusflowServer
from tests.support.rawhttp import read_response, start_patch
from tests.support.tushelp import TUS, b64, new_upload, patch
from tus_server.tus.body import MinRate, RateWindow


# --------------------------------------------------------------------------- minimum rate
def test_rate_window_judges_only_whole_windows() -> None:
    window = RateWindow(MinRate(100, 2.0), now=0.0)
    assert not window.too_slow(1.0, 0)  # half a window: too early to judge
    assert not window.too_slow(2.0, 200)  # 100 B/s over 0..2
    assert not window.too_slow(3.0, 300)
    assert window.too_slow(4.0, 350)  # 150 B over the last 2 s (2..4): 75 B/s
    assert not MinRate(0, 60).enabled


def test_a_trickling_patch_is_ended_and_its_bytes_kept(start_server: Callable[..., TusflowServer]) -> None:
    """One byte every 0.1 s never looks idle (body_idle_timeout is 5 s here), but is 10 B/s
    against a 1000 B/s minimum over a 1 s window: the server ends the request and keeps the bytes."""
    server = start_server(uploads={"min_rate": 1000, "min_rate_window": 1.0})
    created = httpx.post(server.url, headers={**TUS, "Upload-Length": "100000"}, timeout=10)
    assert created.status_code == 201
    url = created.headers["location"]
    sock = start_patch(url, 0, 100_000)
    try:
        for _ in range(80):  # 8 s at most; the server should answer after about 1.25 s
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.1)[0]:
                break
        status, headers, body = read_response(sock, timeout=5)
        while len(body) < int(headers["content-length"]):  # the head may come without the body
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    finally:
        sock.close()
    assert status == 500 and b"slower than this server's minimum rate" in body
    assert headers["upload-offset"] != "0" and headers["connection"] == "close"
    head = httpx.head(url, headers=TUS, timeout=10)
    assert head.headers["upload-offset"] == headers["upload-offset"]  # what arrived was kept
    offset = int(head.headers["upload-offset"])
    resumed = httpx.patch(url, content=b"y" * (100_000 - offset), timeout=10,
                          headers={**TUS, "Content-Type": "application/offset+octet-stream",
                                   "Upload-Offset": str(offset)})
    assert resumed.status_code == 204 and resumed.headers["upload-offset"] == "100000"


# --------------------------------------------------------------------------- downloads
@pytest.mark.parametrize("filetype, shown", [
    ("video/mp4", True), ("video/quicktime", True), ("audio/mpeg", True), ("image/png", True),
    ("image/svg+xml", False), ("text/html", False), ("video/mp4+xml", False), ("image/png+xml", False),
    ("application/xhtml+xml", False), ("text/plain", False), ("text/xml", False), ("VIDEO/MP4", True),
])
async def test_only_media_types_that_carry_no_script_are_shown_inline(client: httpx.AsyncClient, filetype: str,
                                                                       shown: bool) -> None:
    data = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    url = await new_upload(client, len(data), headers={"Upload-Metadata": f"filename {b64('x.bin')},filetype {b64(filetype)}"})
    assert (await patch(client, url, 0, data)).status_code == 204
    r = await client.get(url)
    assert r.status_code == 200 and r.content == data
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("inline" if shown else "attachment"), disposition
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "sandbox"
