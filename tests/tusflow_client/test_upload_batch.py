"""`tusflow upload` end to end against a real `tusflow serve`: many files at once, what each
output mode prints, metadata, checksums per chunk, auth token."""

from __future__ import annotations

import json
import os
import pty
import random
import select
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.procs import Shared
from tests.support.uploadcli import assert_on_server, make_files, run_upload, upload_argv, upload_id
from tests.support.proxy import FaultProxy


def test_thirty_files_in_parallel_all_arrive_intact(shared: Shared, tmp_path: Path) -> None:
    server, data_dir = shared.server, shared.data_dir
    rng = random.Random(5)
    files = make_files(tmp_path / "semester", [rng.randint(1, 200_000) for _ in range(30)])
    files[0].write_bytes(b"")  # an empty recording is still a file to publish
    state = tmp_path / "state.json"

    run = run_upload([tmp_path / "semester"], server.url, state, "--jobs", "4", "--chunk-size", "32K", "--json")

    assert run.returncode == 0, run
    assert not run.of("failed") and not run.of("retry"), run
    for path in files:
        done = run.one("done", path)
        assert done["status"] == "uploaded"
        assert done["size"] == path.stat().st_size
        assert_on_server(data_dir, path, done["url"])
    ids = {upload_id(run.one("done", p)["url"]) for p in files}
    assert len(ids) == 30
    summary = run.summary
    assert (summary["uploaded"], summary["resumed"], summary["skipped"], summary["failed"]) == (30, 0, 0, 0)
    assert summary["bytes"] == sum(p.stat().st_size for p in files)
    assert summary["ok"] is True
    # at most --jobs files were ever in flight at once
    active, peak = 0, 0
    for event in run.events:
        if event["event"] == "start":
            active += 1
            peak = max(peak, active)
        elif event["event"] in ("done", "failed") and event.get("status") != "skipped":
            active -= 1
    assert 1 < peak <= 4


def test_plain_output_when_not_a_terminal(shared: Shared, tmp_path: Path) -> None:
    server = shared.server
    files = make_files(tmp_path / "in", [50_000, 70_000])
    state = tmp_path / "state.json"

    run = run_upload([tmp_path / "in"], server.url, state, "--chunk-size", "16K")

    assert run.returncode == 0, run
    assert "\x1b[" not in run.stdout, "escape sequences in non-terminal output"
    lines = run.stdout.splitlines()
    assert lines[0] == "found 2 file(s), 117.2 KB"
    assert lines[1].startswith(f"endpoint {server.url} (tus 1.0.0, checksum sha256")
    for path in files:
        assert any(line.startswith("done ") and path.name in line and "uploaded" in line for line in lines), run
    table = run.stdout[run.stdout.index("\nsummary\n"):]
    assert " uploaded         2 " in table and " failed           0 " in table, table

    again = run_upload([tmp_path / "in"], server.url, state)
    assert again.returncode == 0, again
    assert sum(line.startswith("skip ") for line in again.stdout.splitlines()) == 2, again
    assert " skipped          2 " in again.stdout


def test_terminal_shows_bars_and_a_summary(shared: Shared, tmp_path: Path) -> None:
    """Under a pseudo-terminal: per-file and total bars redrawn in place, cursor restored."""
    server = shared.server
    make_files(tmp_path / "in", [3_000_000, 2_000_000])
    proxy = FaultProxy(server.url, rate=2_000_000)  # slow enough for several redraws
    try:
        argv = upload_argv([tmp_path / "in"], proxy.url_for(server.url), tmp_path / "state.json",
                           "--chunk-size", "128K", "--jobs", "2")
        leader, follower = pty.openpty()
        env = {**os.environ, "COLUMNS": "120", "LINES": "30", "PYTHONUNBUFFERED": "1"}
        env.pop("TUSFLOW_TOKEN", None)
        proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env,
                                start_new_session=True)
        os.close(follower)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([leader], [], [], 0.5)
                if ready:
                    try:
                        data = os.read(leader, 65536)
                    except OSError:  # EIO: the child closed the terminal
                        break
                    if not data:
                        break
                    chunks.append(data)
                elif proc.poll() is not None:
                    break
            code = proc.wait(10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(5)
            os.close(leader)
    finally:
        proxy.close()
    out = b"".join(chunks).decode("utf-8", "replace")
    assert code == 0, out[-3000:]
    assert "\x1b[?25l" in out and out.rstrip().count("\x1b[?25h") == 1, "cursor hidden and shown again"
    assert "\x1b[2F" in out or "\x1b[3F" in out, "bars are redrawn in place"
    bar_lines = [line for line in out.replace("\r", "\n").split("\n") if "█" in line or "░" in line]
    assert any(line.split("\x1b[2K")[-1].startswith("clip_00.mp4") for line in bar_lines), out[-3000:]
    assert any(line.split("\x1b[2K")[-1].startswith("total ") for line in bar_lines)
    assert any("%" in line and "/s" in line and "ETA" in line for line in bar_lines)
    assert "summary" in out and "uploaded         2" in out


def test_metadata_and_a_checksum_on_every_chunk(shared: Shared, tmp_path: Path) -> None:
    server = shared.server
    [path] = make_files(tmp_path / "in", [100_000], prefix="week_03-intro")
    proxy = FaultProxy(server.url)
    try:
        run = run_upload([path], proxy.url_for(server.url), tmp_path / "state.json",
                         "--chunk-size", "16K", "--json", "--title", "{parent}: {stem}")
    finally:
        proxy.close()
    assert run.returncode == 0, run
    assert proxy.patches == 7  # ceil(100000 / 16384)
    assert len(proxy.checksum_headers) == proxy.patches
    assert all(h.startswith("sha256 ") for h in proxy.checksum_headers), proxy.checksum_headers
    assert len(set(proxy.checksum_headers)) == proxy.patches, "one digest per distinct chunk"
    media_url = run.one("done", path)["media"]
    assert media_url == proxy.origin + "/api/media/" + upload_id(run.one("done", path)["url"])
    media = httpx.get(server.origin + media_url[len(proxy.origin):], timeout=10).json()
    assert media["filename"] == path.name
    assert media["filetype"] == "video/mp4"
    assert media["title"] == "in: week_03-intro_00"


def test_a_chunk_corrupted_on_the_way_is_refused_and_sent_again(shared: Shared, tmp_path: Path) -> None:
    server, data_dir = shared.server, shared.data_dir
    [path] = make_files(tmp_path / "in", [90_000])
    proxy = FaultProxy(server.url, corrupt_patches=2)
    try:
        run = run_upload([path], proxy.url_for(server.url), tmp_path / "state.json",
                         "--chunk-size", "32K", "--json", "--retry-delay", "0.05")
    finally:
        proxy.close()
    assert run.returncode == 0, run
    assert proxy.corrupted == 2
    retries = run.of("retry", path)
    assert len(retries) == 2 and all("460" in r["error"] for r in retries), retries
    assert_on_server(data_dir, path, run.one("done", path)["url"])


def test_token_is_sent_on_every_request(start_server, data_dir: Path, tmp_path: Path) -> None:
    token = "cli-token-0123456789abcdef"
    server = start_server(auth={"enabled": True, "tokens": [{"token": token, "user": "ci", "role": "service"}]})
    files = make_files(tmp_path / "in", [40_000, 30_000])

    refused = run_upload([tmp_path / "in"], server.url, tmp_path / "s1.json", "--json", "--retry-delay", "0.05")
    assert refused.returncode == 1, refused
    assert len(refused.of("failed")) == 2
    assert all("401" in e["error"] and "--token" in e["error"] for e in refused.of("failed")), refused

    proxy = FaultProxy(server.url)
    try:
        run = run_upload([tmp_path / "in"], proxy.url_for(server.url), tmp_path / "s2.json", "--json",
                         "--chunk-size", "16K", "--token", token)
    finally:
        proxy.close()
    assert run.returncode == 0, run
    methods = {method for method, _ in proxy.requests}
    assert {"OPTIONS", "POST", "PATCH"} <= methods
    assert all(h.get("authorization") == f"Bearer {token}" for _, h in proxy.requests), proxy.requests

    waited = run_upload([tmp_path / "in"], server.url, tmp_path / "s3.json", "--json", "--wait",
                        "--wait-timeout", "2", "--wait-interval", "0.2", env={"TUSFLOW_TOKEN": token})
    for path in files:
        assert_on_server(data_dir, path, waited.one("done", path)["url"])
    # the media API answered (with the token): items are queued, not 401/unavailable
    media = waited.of("media")
    assert media and all(e["state"] in ("queued", "timeout") for e in media), media
    assert waited.returncode == 1, "no worker runs here, so --wait times out and says so"
    assert waited.one("media_summary")["ok"] is False


def test_json_lines_are_one_object_each(shared: Shared, tmp_path: Path) -> None:
    server = shared.server
    [path] = make_files(tmp_path / "in", [70_000])
    run = run_upload([path], server.url, tmp_path / "state.json", "--json", "--chunk-size", "16K")
    assert run.returncode == 0, run
    kinds = [e["event"] for e in run.events]
    assert kinds[:2] == ["discovered", "server"] and kinds[-1] == "summary"
    assert kinds.count("progress") == 5
    offsets = [e["offset"] for e in run.of("progress", path)]
    assert offsets == sorted(offsets) and offsets[-1] == 70_000
    assert all(isinstance(e["ts"], float) for e in run.events)
    assert run.stderr == ""
    json.dumps(run.events)  # round-trips
