"""The reported hang, through the tus endpoint on real SeaweedFS: a PATCH that starts from a
saved tail object (fewer bytes than S3's minimum part size) and ends exactly on a part
boundary. Checked in-process (httpx on the app) and against a real ``tusflow serve``
(uvicorn), with plain, chunked and checksummed bodies, a deferred length declared on the
boundary, and the stored object's sha256 compared with what the client sent.

Every request has a bounded timeout: a hang fails the test instead of blocking the run.
These tests configure S3 themselves, so they run on the file pass too."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any, Callable

import httpx
import pytest

from models.config import load_settings
from tests.support.s3 import S3Server, stored_upload
from tests.support.tushelp import OCTET, TUS, chunked

P = 5 * 1024**2  # S3's minimum part size, the store's part size here
TAIL = 1_234_567
TIMEOUT = 60.0


@pytest.fixture
def s3_sections(s3_servers: Callable[[str], S3Server], request: pytest.FixtureRequest) -> dict[str, Any]:
    server = s3_servers("seaweedfs")
    section = server.storage_section(server.new_prefix(request.node.name), part_size=P, max_buffered_parts=2)
    # One instance: flock files (the "auto" locks would want Redis for S3).
    return {"storage": {"backend": "s3", "s3": section}, "locks": {"backend": "file"}}


def sha(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def sha1_header(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()


@pytest.mark.parametrize("body", ["plain", "chunked", "checksum"])
async def test_patch_from_a_tail_ending_on_a_part_boundary(make_client, s3_sections, body) -> None:
    client = await make_client(**s3_sections)
    data = os.urandom(2 * P)
    r = await client.post("/files/", headers={**TUS, "Upload-Length": str(len(data))})
    assert r.status_code == 201
    url = r.headers["location"]
    # PATCH 1 leaves a tail; PATCH 2 completes part 1 exactly; PATCH 3 ends the upload on part 2's end.
    for start, end in [(0, TAIL), (TAIL, P), (P, 2 * P)]:
        piece = data[start:end]
        headers = {**TUS, **OCTET, "Upload-Offset": str(start)}
        content: Any = piece
        if body == "chunked":
            content = chunked(piece, 65536)
        elif body == "checksum":
            headers["Upload-Checksum"] = sha1_header(piece)
        r = await client.patch(url, headers=headers, content=content, timeout=TIMEOUT)
        assert r.status_code == 204, r.text
        assert r.headers["upload-offset"] == str(end)
        h = await client.head(url, headers=TUS)
        assert h.headers["upload-offset"] == str(end)
    assert sha(stored_upload(client.settings, url.rsplit("/", 1)[-1])) == sha(data)
    r = await client.get(url, timeout=TIMEOUT)
    assert r.status_code == 200 and sha(r.content) == sha(data)


async def test_deferred_length_declared_on_the_boundary(make_client, s3_sections) -> None:
    """The tail-then-boundary PATCH, then an empty PATCH that declares the length right there."""
    client = await make_client(**s3_sections)
    data = os.urandom(P)
    r = await client.post("/files/", headers={**TUS, "Upload-Defer-Length": "1"})
    url = r.headers["location"]
    for start, end in [(0, TAIL), (TAIL, P)]:
        r = await client.patch(url, headers={**TUS, **OCTET, "Upload-Offset": str(start)},
                               content=data[start:end], timeout=TIMEOUT)
        assert r.status_code == 204 and r.headers["upload-offset"] == str(end), r.text
    r = await client.patch(url, headers={**TUS, **OCTET, "Upload-Offset": str(P), "Upload-Length": str(P)},
                           content=b"", timeout=TIMEOUT)
    assert r.status_code == 204, r.text
    assert sha(stored_upload(client.settings, url.rsplit("/", 1)[-1])) == sha(data)


@pytest.mark.e2e
def test_real_server_patch_from_a_tail_ending_on_a_part_boundary(start_server, s3_sections) -> None:
    server = start_server(**s3_sections)
    data = os.urandom(2 * P + 10)
    r = httpx.post(server.url, headers={**TUS, "Upload-Length": str(len(data))})
    url = r.headers["location"]
    for start, end in [(0, TAIL), (TAIL, P), (P, P + 10), (P + 10, 2 * P), (2 * P, len(data))]:
        r = httpx.patch(url, headers={**TUS, **OCTET, "Upload-Offset": str(start)}, content=data[start:end],
                        timeout=TIMEOUT)
        assert r.status_code == 204 and r.headers["upload-offset"] == str(end), r.text
    settings = load_settings(server.config, env={})
    assert sha(stored_upload(settings, url.rsplit("/", 1)[-1])) == sha(data)
