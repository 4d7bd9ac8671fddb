"""Resuming across runs and across network drops: SIGKILL mid-run, cut connections, changed
files, uploads the server no longer has."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx

from tests.support.procs import Shared
from tests.support.uploadcli import (assert_on_server, make_files, run_upload, server_offset, upload_argv,
                               upload_id)
from tests.support.proxy import FaultProxy
from tests.support.procs import Proc
from tests.support.proxy import CuttingProxy


def _events(proc: Proc) -> list[dict]:
    return [json.loads(line) for line in proc.output.splitlines() if line.startswith("{")]


def test_killed_mid_run_resumes_from_the_server_offset_then_skips(shared: Shared, tmp_path: Path) -> None:
    folder = tmp_path / "lectures"
    [big] = make_files(folder, [6_000_000], prefix="a_big")
    smalls = make_files(folder, [40_000, 50_000], prefix="b_small")
    state = tmp_path / "state.json"
    proxy = FaultProxy(shared.url, rate=1_500_000)  # ~4 s for the big file: still running when killed
    endpoint = proxy.url_for(shared.url)
    try:
        first = Proc(upload_argv([folder], endpoint, state, "--json", "--chunk-size", "256K", "--jobs", "1"),
                     name="upload-1")
        try:
            first.wait_for(r'"event":"progress".*"offset":[1-9]', timeout=30)
            first.kill(signal.SIGKILL)
            assert first.popen.wait(10) == -signal.SIGKILL
        finally:
            first.stop()
        events = _events(first)
        [created] = [e for e in events if e["event"] == "created"]
        assert created["file"] == str(big)
        assert not [e for e in events if e["event"] in ("done", "summary")], "killed before anything finished"
        big_id = upload_id(created["url"])
        offset_at_kill = server_offset(shared.url + big_id)
        assert 0 < offset_at_kill < big.stat().st_size

        proxy.rate = None
        bytes_before = proxy.bytes_up
        second = run_upload([folder], endpoint, state, "--json", "--chunk-size", "256K", "--jobs", "1")
        assert second.returncode == 0, second
        start = second.one("start", big)
        assert start["resumed"] is True and start["offset"] == offset_at_kill
        done = second.one("done", big)
        assert done["status"] == "resumed" and upload_id(done["url"]) == big_id
        assert done["sent"] == big.stat().st_size - offset_at_kill
        sent_total = sum(e["sent"] for e in second.of("done"))
        total = sum(p.stat().st_size for p in [big, *smalls])
        assert sent_total < total
        assert proxy.bytes_up - bytes_before < total, "the proxy saw fewer body bytes than the files hold"
        for path in [big, *smalls]:
            assert_on_server(shared.data_dir, path, second.one("done", path)["url"])
        s = second.summary
        assert (s["uploaded"], s["resumed"], s["skipped"], s["failed"]) == (2, 1, 0, 0)

        third = run_upload([folder], endpoint, state, "--json")
        assert third.returncode == 0, third
        assert [e["status"] for e in third.of("done")] == ["skipped"] * 3
        assert not third.of("start") and not third.of("progress")
        assert third.summary["skipped"] == 3 and third.summary["bytes"] == 0
    finally:
        proxy.close()


def test_cut_connections_are_retried_until_every_file_is_complete(shared: Shared, tmp_path: Path) -> None:
    files = make_files(tmp_path / "in", [700_000, 450_000, 300_000])
    proxy = CuttingProxy(shared.url, cut_every=150_000, max_cuts=6)
    try:
        run = run_upload([tmp_path / "in"], proxy.url_for(shared.url), tmp_path / "state.json", "--json",
                         "--chunk-size", "64K", "--jobs", "2", "--retry-delay", "0.05", "--retries", "4")
    finally:
        proxy.close()
    assert run.returncode == 0, run
    # max_cuts is checked when a connection opens, so parallel connections can pass it by one or two
    assert proxy.cuts >= 6
    retries = run.of("retry")
    assert len(retries) >= 3, run
    for path in files:
        assert run.one("done", path)["status"] == "uploaded"
        assert_on_server(shared.data_dir, path, run.one("done", path)["url"])


def test_a_file_that_keeps_failing_is_given_up_and_the_batch_goes_on(shared: Shared, tmp_path: Path) -> None:
    first, second = make_files(tmp_path / "in", [50_000, 50_000])
    proxy = FaultProxy(shared.url, corrupt_patches=3)  # the first file's first 3 PATCHes
    try:
        run = run_upload([tmp_path / "in"], proxy.url_for(shared.url), tmp_path / "state.json", "--json",
                         "--chunk-size", "64K", "--jobs", "1", "--retries", "2", "--retry-delay", "0.05")
    finally:
        proxy.close()
    assert run.returncode == 1, run
    failed = run.one("failed", first)
    assert failed["error"].startswith("giving up after 2 retries: PATCH answered 460"), failed
    assert [r["attempt"] for r in run.of("retry", first)] == [1, 2]
    assert_on_server(shared.data_dir, second, run.one("done", second)["url"])
    assert run.summary["failed"] == 1 and run.summary["uploaded"] == 1 and run.summary["ok"] is False


def test_a_changed_file_is_uploaded_anew(shared: Shared, tmp_path: Path) -> None:
    [path] = make_files(tmp_path / "in", [100_000])
    state = tmp_path / "state.json"
    first = run_upload([path], shared.url, state, "--json")
    assert first.returncode == 0, first
    url1 = first.one("done", path)["url"]

    st = path.stat()
    path.write_bytes(os.urandom(100_000))  # same size, new bytes, later mtime
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    second = run_upload([path], shared.url, state, "--json")
    assert second.returncode == 0, second
    done = second.one("done", path)
    assert done["status"] == "uploaded" and done["url"] != url1
    assert_on_server(shared.data_dir, path, done["url"])

    with open(path, "ab") as f:  # grows
        f.write(os.urandom(5_000))
    third = run_upload([path], shared.url, state, "--json")
    done3 = third.one("done", path)
    assert third.returncode == 0 and done3["status"] == "uploaded" and done3["url"] not in (url1, done["url"])
    assert_on_server(shared.data_dir, path, done3["url"])
    entries = json.loads(state.read_text())["endpoints"][shared.url]
    assert list(entries) == [f"{path}|105000|{path.stat().st_mtime_ns}"], "stale entries for the path are dropped"


def test_an_upload_the_server_no_longer_has_is_started_again(shared: Shared, tmp_path: Path) -> None:
    [path] = make_files(tmp_path / "in", [80_000])
    state = tmp_path / "state.json"
    first = run_upload([path], shared.url, state, "--json")
    url1 = first.one("done", path)["url"]
    deleted = httpx.delete(url1, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    assert deleted.status_code == 204

    second = run_upload([path], shared.url, state, "--json")
    assert second.returncode == 0, second
    [warning] = second.of("warning", path)
    assert "gone (404)" in warning["message"] and "starting a new upload" in warning["message"]
    done = second.one("done", path)
    assert done["status"] == "uploaded" and done["url"] != url1
    assert_on_server(shared.data_dir, path, done["url"])


def test_ctrl_c_stops_after_the_chunk_in_flight_and_the_next_run_resumes(shared: Shared, tmp_path: Path) -> None:
    [big] = make_files(tmp_path / "in", [3_000_000])
    state = tmp_path / "state.json"
    proxy = FaultProxy(shared.url, rate=1_000_000)
    endpoint = proxy.url_for(shared.url)
    try:
        proc = Proc(upload_argv([big], endpoint, state, "--json", "--chunk-size", "128K"), name="upload")
        try:
            proc.wait_for(r'"event":"progress".*"offset":[1-9]', timeout=30)
            proc.kill(signal.SIGINT)
            assert proc.popen.wait(30) == 130, proc.output
        finally:
            proc.stop()
        assert "stopping after the current chunks" in proc.output
        events = _events(proc)
        failed = [e for e in events if e["event"] == "failed"]
        assert [f["error"] for f in failed] == ["interrupted; run again to resume"]
        assert events[-1]["event"] == "summary" and events[-1]["failed"] == 1
        stopped_at = failed[0]["offset"]
        assert 0 < stopped_at < big.stat().st_size
        assert server_offset(shared.url + upload_id(failed[0]["url"])) == stopped_at, \
            "every acknowledged chunk is on the server, nothing half-sent"

        proxy.rate = None
        again = run_upload([big], endpoint, state, "--json")
        assert again.returncode == 0, again
        assert again.one("start", big)["offset"] == stopped_at
        assert again.one("done", big)["status"] == "resumed"
        assert_on_server(shared.data_dir, big, again.one("done", big)["url"])
    finally:
        proxy.close()
