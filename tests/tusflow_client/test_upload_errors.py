"""Bad inputs each get a clear message and a non-zero exit status, and never take the rest of
the batch down with them."""

from __future__ import annotations

import fcntl
import json
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.procs import Shared
from tests.support.uploadcli import assert_on_server, make_files, run_upload, upload_argv
from tests.support.proxy import FaultProxy
from tests.support.httpd import local_http
from tests.support.procs import Proc


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PlainSite(BaseHTTPRequestHandler):
    """An ordinary web server: 200 and a page for everything, no tus headers."""

    def _page(self) -> None:
        body = b"<html><body>welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_OPTIONS = do_POST = do_PATCH = _page

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def plain_site() -> Iterator[str]:
    with local_http(_PlainSite) as origin:
        yield f"{origin}/files/"


def test_unreachable_endpoint(tmp_path: Path) -> None:
    make_files(tmp_path / "in", [1000])
    endpoint = f"http://127.0.0.1:{_closed_port()}/files/"
    run = run_upload([tmp_path / "in"], endpoint, tmp_path / "state.json")
    assert run.returncode == 2, run
    assert run.stderr.strip() == f"tusflow upload: cannot reach {endpoint}: connection refused"
    assert not (tmp_path / "state.json").exists()


def test_a_server_that_is_not_tus(plain_site: str, tmp_path: Path) -> None:
    make_files(tmp_path / "in", [1000])
    run = run_upload([tmp_path / "in"], plain_site, tmp_path / "state.json", "--json")
    assert run.returncode == 2, run
    assert f"{plain_site} is not a tus server: OPTIONS answered 200 OK without a Tus-Version header" in run.stderr
    [error] = run.of("error")
    assert "not a tus server" in error["message"]
    assert not run.of("start")


def test_files_that_vanish_or_become_directories_before_upload(shared: Shared, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    gone, became_dir, fine = make_files(folder, [10_000, 20_000, 30_000])
    proxy = FaultProxy(shared.url, gate_open=False)  # nothing reaches the server until we say so
    try:
        proc = Proc(upload_argv([folder], proxy.url_for(shared.url), tmp_path / "state.json", "--json"),
                    name="upload")
        try:
            proc.wait_for(r'"event":"discovered".*"files":3', timeout=30)
            gone.unlink()
            became_dir.unlink()
            became_dir.mkdir()
            proxy.open()
            assert proc.popen.wait(60) == 1, proc.output
        finally:
            proc.stop()
    finally:
        proxy.close()
    events = [json.loads(line) for line in proc.output.splitlines()]
    failed = {e["file"]: e["error"] for e in events if e["event"] == "failed"}
    assert failed == {str(gone): "file vanished since it was found (no such file)",
                      str(became_dir): "not a file any more: it is a directory"}
    [done] = [e for e in events if e["event"] == "done"]
    assert done["file"] == str(fine) and done["status"] == "uploaded"
    summary = events[-1]
    assert summary["event"] == "summary" and summary["failed"] == 2 and summary["uploaded"] == 1


def test_a_file_over_the_servers_max_size_fails_up_front(start_server, data_dir: Path, tmp_path: Path) -> None:
    server = start_server(uploads={"max_size": 100_000})
    small, big = make_files(tmp_path / "in", [60_000, 100_001])
    run = run_upload([tmp_path / "in"], server.url, tmp_path / "state.json", "--json")
    assert run.returncode == 1, run
    assert run.one("server")["max_size"] == 100_000
    assert run.one("failed", big)["error"] == ("file is 97.7 KB (100001 bytes), over the server's "
                                              "Tus-Max-Size of 97.7 KB (100000 bytes)")
    assert not run.of("start", big), "no upload was even created for it"
    assert_on_server(data_dir, small, run.one("done", small)["url"])

    plain = run_upload([big], server.url, tmp_path / "state.json")
    assert plain.returncode == 1
    assert "over the server's Tus-Max-Size" in plain.stdout and "1 not uploaded:" in plain.stdout


def test_paths_that_match_nothing_are_failures_not_silence(shared: Shared, tmp_path: Path) -> None:
    [real] = make_files(tmp_path / "in", [5_000])
    (tmp_path / "empty").mkdir()
    args = [real, tmp_path / "missing.mp4", str(tmp_path / "in" / "*.mkv"), tmp_path / "empty"]
    run = run_upload(args, shared.url, tmp_path / "state.json", "--json")
    assert run.returncode == 1, run
    problems = {p["path"]: p["error"] for p in run.one("discovered")["problems"]}
    assert problems == {str(tmp_path / "missing.mp4"): "no such file or directory",
                        str(tmp_path / "in" / "*.mkv"): "pattern matched no files",
                        str(tmp_path / "empty"): "no files with extension 3gp,avi,flv,m4v,mkv,mov,mp4,mpeg,"
                                                 "mpg,ogv,ts,webm,wmv in directory"}
    assert run.one("done", real)["status"] == "uploaded"
    assert run.summary["ok"] is False

    nothing = run_upload([tmp_path / "missing.mp4"], shared.url, tmp_path / "state.json")
    assert nothing.returncode == 2
    assert "no files to upload" in nothing.stderr and "no such file or directory" in nothing.stdout


def test_a_state_file_in_use_by_another_run(shared: Shared, tmp_path: Path) -> None:
    make_files(tmp_path / "in", [5_000])
    state = tmp_path / "state.json"
    with open(str(state) + ".lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        run = run_upload([tmp_path / "in"], shared.url, state)
    assert run.returncode == 2, run
    assert "is in use by another `tusflow upload`" in run.stderr


def test_bad_arguments_are_refused_before_anything_happens(tmp_path: Path) -> None:
    make_files(tmp_path / "in", [5_000])
    bad = run_upload([tmp_path / "in"], "ftp://example.org/files/", tmp_path / "s.json")
    assert bad.returncode == 2 and "must be an http:// or https:// URL" in bad.stderr
    zero = run_upload([tmp_path / "in"], "http://127.0.0.1:1/files/", tmp_path / "s.json", "--jobs", "0")
    assert zero.returncode == 2 and "argument --jobs/-j: must be greater than 0" in zero.stderr
