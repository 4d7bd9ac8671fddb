"""Nothing is lost: Redis down at completion, a worker SIGKILLed mid-transcode, a worker asked
to stop mid-transcode. Real redis-server, server and worker processes, stopped by PID."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
from rq import Queue

from models.layout import Layout
from models.lifecycle import MediaState
from tests.support.procs import RedisServer, no_process_in
from tests.support.stack import SLOW_LADDER, TUS, upload
from tests.support.waiting import wait_until
from models.redis_conn import connect


# These tests pin the one-job-per-video baseline, where nothing is visible before the whole
# ladder is; tests/transcoder/jobs/test_progressive.py covers the same crashes with progressive publish.
BASELINE = {"fast_path": False, "progressive": False}


def test_redis_down_at_completion_job_runs_once_when_it_is_back(
        stack: Callable, start_server: Callable, redis_server: RedisServer, clips: dict) -> None:
    s = stack()
    server = start_server(config=s.config)
    redis_server.stop()

    started = time.monotonic()
    media_id = upload(server.url, clips["short"])
    assert time.monotonic() - started < 5, "completion waited for Redis"
    head = httpx.head(f"{server.url}{media_id}", headers=TUS, timeout=10)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"]
    assert "/api/media/" in head.headers.get("Link", "")
    media = s.media(media_id)
    assert media.state == MediaState.QUEUED and media.enqueued_at is None  # the durable intent

    redis_server.start()
    # Two workers whose reconcilers race to enqueue the missing job.
    first, second = s.start_worker("a"), s.start_worker("b")
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=60)
    assert done.state == MediaState.READY, done.error
    assert done.attempts == 1 and done.enqueued_at is not None
    time.sleep(2.5)  # more reconcile passes: still exactly one run
    runs = [line for w in (first, second) for line in w.output.splitlines()
            if "event=transcode.start" in line and media_id in line]
    assert len(runs) == 1, runs
    assert s.media(media_id).attempts == 1
    conn = connect(s.settings)
    assert Queue(s.settings.redis.queue, connection=conn).count == 0
    conn.close()


def lines_with(output: str, *parts: str) -> list[str]:
    return [line for line in output.splitlines() if all(part in line for part in parts)]


def _complete_or_absent(out: Path, problems: list[str], stop: threading.Event) -> None:
    """Sample media/<id> while the test runs: it is absent, or a full ladder."""
    while not stop.is_set():
        if out.exists():
            master = out / "master.m3u8"
            if not master.is_file():
                problems.append(f"{out} visible without master.m3u8: {sorted(p.name for p in out.iterdir())}")
            else:
                for line in master.read_text().splitlines():
                    if line and not line.startswith("#") and not (out / line).is_file():
                        problems.append(f"master lists missing {line}")
        time.sleep(0.01)


def test_worker_killed_mid_transcode_media_still_ends_ready(
        stack: Callable, start_server: Callable, clips: dict) -> None:
    s = stack(transcode={"ladder": SLOW_LADDER, "preset": "medium", **BASELINE})
    server = start_server(config=s.config)
    layout = Layout(s.settings.data_dir)
    out = layout.media_dir("x")
    victim = s.start_worker("victim")
    media_id = upload(server.url, clips["long"])
    out = layout.media_dir(media_id)
    problems: list[str] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_complete_or_absent, args=(out, problems, stop), daemon=True)
    sampler.start()
    try:
        s.wait_state(media_id, (MediaState.PROCESSING,), timeout=30)
        wait_until(lambda: (s.media(media_id).progress or 0) > 0, 20, what="progress reported")
        scratch = layout.scratch / f"{media_id}.1"
        assert scratch.is_dir()
        victim.kill(signal.SIGKILL)  # worker and its scheduler; the horse dies with its parent
        victim.popen.wait(10)
        wait_until(lambda: no_process_in(scratch), 10, what="orphan ffmpeg gone")
        assert not out.exists()
        assert s.media(media_id).state == MediaState.PROCESSING  # nobody knows yet

        rescuer = s.start_worker("rescuer")
        done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=90)
    finally:
        stop.set()
        sampler.join(2)
    assert done.state == MediaState.READY, done.error
    assert done.attempts == 2
    assert not problems, problems[:5]
    assert (out / "master.m3u8").is_file()
    assert not list(layout.scratch.glob(f"{media_id}.*"))
    # The rescuer's reconciler found the dead victim's job and handed it back to RQ, and the
    # rescuer itself ran it again as the second try (whether its reconciler also logged
    # media.requeued depends on which came first, the retry or the next pass).
    abandoned = lines_with(rescuer.output, "event=job.abandoned", f"media={media_id}")
    assert len(abandoned) == 1 and "worker=victim-" in abandoned[0], abandoned
    assert [line for line in lines_with(victim.output, "event=transcode.start", f"media={media_id}")
            if "attempt=1" in line]
    reruns = lines_with(rescuer.output, "event=transcode.start", f"media={media_id}")
    assert len(reruns) == 1 and "attempt=2" in reruns[0], reruns


def test_worker_stopped_mid_transcode_requeues_without_using_a_try(
        stack: Callable, start_server: Callable, clips: dict) -> None:
    s = stack(transcode={"ladder": SLOW_LADDER, "preset": "medium", **BASELINE})
    server = start_server(config=s.config)
    worker = s.start_worker("leaving")
    media_id = upload(server.url, clips["long"])
    s.wait_state(media_id, (MediaState.PROCESSING,), timeout=30)
    time.sleep(0.5)
    began = time.monotonic()
    code = worker.stop(timeout=20)  # SIGTERM: warm shutdown
    assert code == 0, worker.output[-6000:]
    assert time.monotonic() - began < 10, "the worker waited for the transcode to finish"
    worker.wait_for(r"event=transcode\.requeued", timeout=1)
    media = s.media(media_id)
    assert media.state == MediaState.QUEUED and media.attempts == 0
    conn = connect(s.settings)
    queue = Queue(s.settings.redis.queue, connection=conn)
    assert queue.get_job_ids() == [media.job_id]  # back in the queue, at the front
    conn.close()
    assert not Layout(s.settings.data_dir).media_dir(media_id).exists()

    s.start_worker("next")
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=90)
    assert done.state == MediaState.READY, done.error
    assert done.attempts == 1


def test_jobs_lost_with_redis_data_are_enqueued_again(
        stack: Callable, start_server: Callable, clips: dict) -> None:
    """The private Redis keeps nothing on disk: after a restart the database still says
    queued, the reconciler enqueues the media again as its next job generation."""
    s = stack()
    server = start_server(config=s.config)
    media_id = upload(server.url, clips["short"])
    before = s.media(media_id)
    assert before.enqueued_at is not None
    conn = connect(s.settings)
    conn.flushall()  # what a restart without persistence leaves
    conn.close()
    worker = s.start_worker()
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=60)
    assert done.state == MediaState.READY and done.attempts == 1
    assert done.job_id == f"{before.job_id}-2"
    assert f"event=job.lost media={media_id}" in worker.output


def test_cancel_stops_the_running_job_and_the_worker_goes_on(
        stack: Callable, start_server: Callable, clips: dict) -> None:
    from transcoder.queue import cancel_media
    s = stack(transcode={"ladder": SLOW_LADDER, "preset": "medium", **BASELINE})
    server = start_server(config=s.config)
    worker = s.start_worker()
    first = upload(server.url, clips["long"])
    s.wait_state(first, (MediaState.PROCESSING,), timeout=30)
    scratch = Layout(s.settings.data_dir).scratch / f"{first}.1"
    wait_until(scratch.is_dir, 10, what="scratch in use")
    assert cancel_media(s.settings, s.engine, first) is True
    media = s.media(first)
    assert media.state == MediaState.FAILED and media.error == "Cancelled."
    wait_until(lambda: no_process_in(scratch), 15, what="ffmpeg of the cancelled job gone")
    second = upload(server.url, clips["short"])
    assert s.wait_state(second, (MediaState.READY, MediaState.FAILED), 60).state == MediaState.READY
    assert worker.alive()
    assert not Layout(s.settings.data_dir).media_dir(first).exists()
    assert s.media(first).state == MediaState.FAILED  # the reconciler leaves it alone
