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
from tests.support.procs import REPO, Proc
from tests.support.proxy import CuttingProxy
from tests.support.s3 import stored_upload

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
    proxy = CuttingProxy(server.url, cut_every=400_000, max_cuts=3)
    try:
        proc = Proc([NODE, str(REPO / "tests" / "node" / "upload.js"), proxy.url_for(server.url), str(path),
                     str(chunk), "1", mode, protocol], cwd=REPO, name=f"tus-js-{protocol}-{mode}")
        try:
            done = proc.wait_for(r"^(done|error) (.*)$", timeout=120)
        except TimeoutError as err:
            raise AssertionError(f"{err}\nserver log:\n{server.proc.output[-6000:]}") from None
        assert done.group(1) == "done", proc.output[-3000:]
        proc.stop()
        assert proxy.cuts >= 1, "the proxy never cut a connection: the test proved nothing"
    finally:
        proxy.close()
    url = done.group(2).replace(proxy.origin, server.origin)
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    stored = stored_upload(load_settings(server.config, env={}), upload_id) or b""  # files or S3
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    h = httpx.head(url, headers={"Upload-Draft-Interop-Version": str(version)}).headers
    assert h["upload-complete"] == "?1" and h["upload-offset"] == h["upload-length"] == str(len(data))
