"""tus-js-client under Node (tests/node/upload.js) against a real ``tusflow serve``, through a
proxy that cuts connections mid-upload: the run every JS-client interop test starts with."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.procs import REPO, Proc, TusflowServer
from tests.support.proxy import CuttingProxy

UPLOAD_JS = REPO / "tests" / "node" / "upload.js"


def tus_js_upload(server: TusflowServer, path: Path, *, chunk: int, mode: str, parallel: int = 1,
                  protocol: str | None = None) -> str:
    """Upload ``path`` with tus-js-client (``mode``, ``chunk`` and ``protocol`` as upload.js
    takes them) through a proxy that cuts three times, every 400 kB, and return the upload's
    URL on the server itself. Fails if the client gave up, or if no connection was cut (the
    run would then prove nothing about resuming)."""
    node = shutil.which("node")
    assert node is not None, "node is not installed (./scripts/setup installs it)"
    proxy = CuttingProxy(server.url, cut_every=400_000, max_cuts=3)
    name = "-".join(["tus-js", *([protocol] if protocol else []), mode])
    try:
        proc = Proc([node, str(UPLOAD_JS), proxy.url_for(server.url), str(path), str(chunk),
                     str(parallel), mode, *([protocol] if protocol else [])], cwd=REPO, name=name)
        try:
            done = proc.wait_for(r"^(done|error) (.*)$", timeout=120)
        except TimeoutError as err:
            raise AssertionError(f"{err}\nserver log:\n{server.proc.output[-6000:]}") from None
        assert done.group(1) == "done", proc.output[-3000:]
        proc.stop()
        assert proxy.cuts >= 1, "the proxy never cut a connection: the test proved nothing"
    finally:
        proxy.close()
    return done.group(2).replace(proxy.origin, server.origin)
