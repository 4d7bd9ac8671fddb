"""``tusflow jobs status|failed|retry|flush`` against a real Redis with real jobs, and
``tusflow up`` end to end: private Redis on a unix socket, two workers, the server; SIGTERM
leaves no process behind."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
from pathlib import Path
from typing import Callable

from rq import Queue

from models.config import load_settings
from models.db import make_engine
from models.lifecycle import MediaState
from tests.support.stack import TINY_LADDER, Stack, upload
from tests.support.waiting import wait_until
from tests.support.procs import TUSFLOW, Proc
from models.lifecycle import default_job_id
from models.redis_conn import connect
from tus_server.cli import main as cli_main


def jobs(config: Path, *args: str, in_process: bool = True) -> subprocess.CompletedProcess:
    """``tusflow jobs ...``: in this process by default (the command's own code, real Redis,
    real database; a CLI start costs seconds on a loaded 2-core machine), or as the real
    executable."""
    argv = ["jobs", *args, "--config", str(config)]
    if not in_process:
        return subprocess.run([TUSFLOW, *argv], capture_output=True, text=True, timeout=60)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_jobs_status_failed_retry_flush(stack: Callable, start_server: Callable,
                                        clips: dict) -> None:
    s: Stack = stack()
    server = start_server(config=s.config)
    worker = s.start_worker()
    good = upload(server.url, clips["short"], filename="Good lecture.mp4")
    bad = upload(server.url, clips["text"], filename="Notes.mp4")
    s.wait_state(good, (MediaState.READY,), timeout=60)
    s.wait_state(bad, (MediaState.FAILED,), timeout=60)
    worker.stop()
    waiting = upload(server.url, clips["short"], filename="Waiting.mp4")  # no worker now

    status = jobs(s.config, "status", in_process=False)
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "Media (database)" in out and "Queues" in out and "Workers" in out
    lines = out.splitlines()
    row = next(line.split() for line in lines if line.startswith("tusflow-test "))
    assert row[1:] == ["1", "0", "0", "1", "1"], out  # waiting running retry-wait failed finished
    assert any(line.split()[:2] == ["ready", "1"] for line in lines)
    assert any(line.split()[:2] == ["failed", "1"] for line in lines)
    assert any(line.split()[:2] == ["queued", "1"] for line in lines)
    assert any(line.split()[:3] == ["1", waiting, default_job_id(waiting)] for line in lines), out

    failed = jobs(s.config, "failed", in_process=False)
    assert failed.returncode == 0, failed.stderr
    assert "Failed jobs: 1" in failed.stdout
    assert bad in failed.stdout and "not a video" in failed.stdout and "Notes" in failed.stdout

    retried = jobs(s.config, "retry", bad)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert f"{default_job_id(bad)}-2" in retried.stdout and "queued again" in retried.stdout
    media = s.media(bad)
    assert media.state == MediaState.QUEUED and media.attempts == 0 and media.error is None
    assert "Failed jobs: 0" in jobs(s.config, "failed").stdout  # retried jobs leave the list

    conn = connect(s.settings)
    registry = Queue(s.settings.redis.queue, connection=conn).failed_job_registry
    worker = s.start_worker()  # runs the waiting upload and the retried one
    s.wait_state(waiting, (MediaState.READY,), timeout=60)
    again = s.wait_state(bad, (MediaState.FAILED,), timeout=60)
    assert again.attempts == 1 and again.job_id == f"{default_job_id(bad)}-2"
    wait_until(lambda: registry.get_job_ids(cleanup=False) == [f"{default_job_id(bad)}-2"], 15,
               what="failed job filed")

    retry_all = jobs(s.config, "retry", "--all")
    assert retry_all.returncode == 0 and f"{default_job_id(bad)}-3" in retry_all.stdout
    wait_until(lambda: registry.get_job_ids(cleanup=False) == [f"{default_job_id(bad)}-3"], 60,
               what="third generation failed once")
    assert s.media(bad).state == MediaState.FAILED and s.media(bad).attempts == 1
    conn.close()

    flushed = jobs(s.config, "flush")
    assert flushed.returncode == 0 and "Flushed 1 failed job" in flushed.stdout
    assert "Failed jobs: 0" in jobs(s.config, "failed").stdout
    assert s.media(bad).state == MediaState.FAILED  # the media record stays
    unknown = jobs(s.config, "retry", "f" * 32)
    assert unknown.returncode == 1 and "no such media" in unknown.stdout


def _descendants(root: int) -> set[int]:
    """Every process below ``root``, from /proc (children of children included)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_runs_the_whole_stack_and_stops_cleanly(make_config: Callable, data_dir: Path,
                                                   clips: dict) -> None:
    config = make_config(worker={"count": 2, "reconcile_interval": 1.0, "retry_backoff": [1]},
                         transcode={"ladder": TINY_LADDER, "preset": "ultrafast",
                                    "storyboard_interval": 1.0},
                         redis={"queue": "tusflow-up-test"})
    up = Proc([TUSFLOW, "up", "--config", str(config), "--port", "0", "--host", "127.0.0.1"],
              name="tusflow-up")
    try:
        url = up.wait_for(r"tusflow listening on (http://\S+)", timeout=60).group(1)
        sock = data_dir / "redis.sock"
        assert sock.is_socket()  # the private Redis, inside data_dir
        assert (data_dir / "redis").is_dir()
        up.wait_for(r"worker=w2-", timeout=30)
        media_id = upload(url, clips["short"])
        settings = load_settings(config, env={})
        engine = make_engine(settings)
        try:
            wait_until(lambda: _state(engine, media_id) in (MediaState.READY, MediaState.FAILED),
                       60, "media done", interval=0.2)
            assert _state(engine, media_id) == MediaState.READY
        finally:
            engine.dispose()
        conn = connect(settings)
        assert len(Queue(settings.redis.queue, connection=conn).started_job_registry) == 0
        conn.close()
        family = _descendants(up.pid)
        roles = up.output
        assert "role=redis" in roles and "role=worker1" in roles and "role=worker2" in roles
        assert len(family) >= 4  # redis, two workers (+ schedulers), the server

        up.kill(signal.SIGTERM)  # its process group: only `up` itself, children have their own
        assert up.popen.wait(60) == 0
        wait_until(lambda: not any(_alive(pid) for pid in family), 10,
                   "every child of tusflow up gone")
        assert not sock.exists()
        assert "event=up.stopped" in up.output
    finally:
        up.stop()


def _state(engine, media_id: str) -> str | None:  # type: ignore[no-untyped-def]
    from sqlmodel import Session
    from models.tables import Media
    with Session(engine) as session:
        media = session.get(Media, media_id)
        return media.state if media else None
