"""tus-js-client speaking the IETF draft (``protocol: 'ietf-draft-03'`` = interop 5,
``'ietf-draft-05'`` = interop 6) under Node against a real ``tusflow serve``, through the proxy
that cuts connections mid-upload: chunked and in one request, the stored bytes sha256-identical."""

from __future__ import annotations

import hashlib
import os
import shutil

import httpx
import pytest

from models.config import load_settings
from tests.support.s3 import stored_upload
from tests.support.tusjs import tus_js_upload

pytestmark = pytest.mark.e2e
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed (./scripts/setup installs it)")
@pytest.mark.parametrize("protocol,version", [("ietf-draft-03", 5), ("ietf-draft-05", 6)])
@pytest.mark.parametrize("mode,chunk", [("stream", 256 * 1024), ("buffer", 256 * 1024), ("buffer", 0)])
def test_tus_js_client_draft_through_cutting_proxy(start_server, tmp_path, protocol, version,
                                                   mode, chunk) -> None:
    data = os.urandom(3 * 1024 * 1024 + 12345)
    path = tmp_path / "lecture.bin"
    path.write_bytes(data)
    server = start_server()
    url = tus_js_upload(server, path, chunk=chunk, mode=mode, protocol=protocol)
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    stored = stored_upload(load_settings(server.config, env={}), upload_id) or b""  # files or S3
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    h = httpx.head(url, headers={"Upload-Draft-Interop-Version": str(version)}).headers
    assert h["upload-complete"] == "?1" and h["upload-offset"] == h["upload-length"] == str(len(data))
