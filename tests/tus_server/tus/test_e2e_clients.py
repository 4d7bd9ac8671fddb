"""The real clients against a real ``tusflow serve``, through a proxy that cuts connections
mid-upload: tuspy (killed and resumed from its URL store) and tus-js-client under Node
(chunked stream, deferred length, and parallelUploads through concatenation)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
from pathlib import Path

import httpx
import pytest

from models.config import load_settings
from tests.support.procs import REPO, Proc
from tests.support.s3 import stored_upload
from tests.support.proxy import CuttingProxy
from tests.support.tusjs import tus_js_upload

pytestmark = pytest.mark.e2e
NODE = shutil.which("node")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_bytes(server, url: str) -> bytes:  # type: ignore[no-untyped-def]
    """The upload's bytes in the server's store (files or S3; see tests/support/s3.py)."""
    data = stored_upload(load_settings(server.config, env={}), url.rstrip("/").rsplit("/", 1)[-1])
    if data is None:
        raise AssertionError(f"no bytes stored for {url}")
    return data


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(3 * 1024 * 1024 + 12345)
    path = tmp_path / "lecture.bin"
    path.write_bytes(data)
    return path, data


def test_tuspy_through_cutting_proxy_killed_and_resumed(start_server, data_dir, tmp_path, source) -> None:
    path, data = source
    server = start_server()
    proxy = CuttingProxy(server.url, cut_every=300_000, max_cuts=4)
    storage = tmp_path / "tuspy-urls.json"
    script = [sys.executable, str(REPO / "tests" / "support" / "tuspy_upload.py"), proxy.url_for(server.url), str(path), str(storage),
              str(512 * 1024)]
    try:
        first = Proc(script + ["0.3"], cwd=REPO, name="tuspy-1")
        match = first.wait_for(r"^offset (\d+) (\S+)$", timeout=60)
        # wait until it is well into the upload, then kill it without warning
        m = first.wait_for(r"^offset (1[0-9]{6}|[2-9][0-9]{6}) ", timeout=60)
        first.kill(signal.SIGKILL)
        first.popen.wait(10)
        url = match.group(2)
        killed_at = int(m.group(1))
        assert proxy.cuts >= 1, first.output

        second = Proc(script + ["0"], cwd=REPO, name="tuspy-2")
        start = second.wait_for(r"^start (\d+) (\S+)$", timeout=60)
        assert start.group(2) == url, "tuspy did not resume from its URL store"
        assert int(start.group(1)) >= killed_at
        done = second.wait_for(r"^done (\S+)$", timeout=90)
        assert done.group(1) == url
        second.stop()
    finally:
        proxy.close()
    assert sha256(stored_bytes(server, url)) == sha256(data)
    r = httpx.head(url.replace(proxy.origin, server.origin), headers={"Tus-Resumable": "1.0.0"})
    assert r.headers["upload-offset"] == str(len(data))


@pytest.mark.skipif(NODE is None, reason="node is not installed (./scripts/setup installs it)")
@pytest.mark.parametrize("mode,parallel", [("stream", 1), ("deferred", 1), ("buffer", 3)])
def test_tus_js_client_through_cutting_proxy(start_server, data_dir, tmp_path, source, mode, parallel) -> None:
    path, data = source
    server = start_server()
    url = tus_js_upload(server, path, chunk=256 * 1024, mode=mode, parallel=parallel)
    assert sha256(stored_bytes(server, url)) == sha256(data)
    r = httpx.get(url)
    assert r.status_code == 200 and sha256(r.content) == sha256(data)
    h = httpx.head(url, headers={"Tus-Resumable": "1.0.0"}).headers
    assert h["upload-offset"] == h["upload-length"] == str(len(data))
    if parallel > 1:
        assert h["upload-concat"].startswith("final;") and len(h["upload-concat"].split(" ")) == parallel
