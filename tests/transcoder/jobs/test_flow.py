"""Upload over HTTP → queued → processing → ready, by a real ``tusflow worker``; exactly one job
per media however often completion or enqueueing happens; logs name the media on every line."""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

from rq import Queue

from models.layout import Layout
from models.lifecycle import MediaState
from tests.support.stack import media_lines, upload
from tests.support.waiting import wait_until
from models.lifecycle import default_job_id
from transcoder.queue import enqueue_transcode, queue_position, queue_positions
from transcoder.reconcile import reconcile
from models.redis_conn import connect


def test_upload_is_queued_then_transcoded_to_ready(stack: Callable, start_server: Callable,
                                                   clips: dict) -> None:
    s = stack()
    server = start_server(config=s.config)
    media_id = upload(server.url, clips["short"])

    # No worker yet: the media waits in the queue, and the queue knows its place.
    queued = s.media(media_id)
    assert queued is not None and queued.state == MediaState.QUEUED
    assert queued.enqueued_at is not None and queued.job_id == default_job_id(media_id)
    assert queue_position(s.settings, media_id) == 1
    assert queue_positions(s.settings, [media_id, "0" * 32]) == {media_id: 1, "0" * 32: None}

    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            media = s.media(media_id)
            if media is not None and (not seen or seen[-1] != media.state):
                seen.append(media.state)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    worker = s.start_worker()
    try:
        ready = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=60)
    finally:
        stop.set()
        watcher.join(2)
    assert ready.state == MediaState.READY, ready.error
    if seen[-1] != ready.state:  # the watcher's last sample may predate the final write
        seen.append(ready.state)
    assert seen[0] == MediaState.QUEUED and seen[-1] == MediaState.READY
    assert MediaState.PROCESSING in seen or "event=transcode.start" in worker.output
    assert ready.attempts == 1 and ready.progress == 100.0 and ready.error is None
    assert 2.5 < (ready.duration or 0) < 3.5
    assert (ready.width, ready.height) == (320, 240)
    renditions = json.loads(ready.renditions_json)
    assert [r["height"] for r in renditions] == [240]
    assert ready.has_poster and ready.has_storyboard
    assert ready.started_at is not None and ready.finished_at is not None

    layout = Layout(s.settings.data_dir)
    out = layout.media_dir(media_id)
    assert (out / "master.m3u8").read_text().startswith("#EXTM3U")
    assert not list(layout.scratch.glob(f"{media_id}.*")), "scratch left behind"
    assert queue_position(s.settings, media_id) is None

    # Every line the worker wrote about this media carries media=<id> as a field.
    worker.wait_for(r"Job OK", timeout=10)
    lines = media_lines(worker.output, media_id)
    assert any("event=transcode.ready" in line for line in lines)
    assert len(lines) >= 5
    for line in lines:
        assert f" media={media_id}" in line, line
    assert all(line.startswith("ts=") for line in worker.output.splitlines() if line.strip())


def test_enqueue_is_idempotent_under_races(stack: Callable, start_server: Callable,
                                           clips: dict) -> None:
    """Completion handled twice, reconcilers racing the server: one job."""
    s = stack()
    server = start_server(config=s.config)
    conn = connect(s.settings)
    queue = Queue(s.settings.redis.queue, connection=conn)
    media_id = upload(server.url, clips["short"])  # the server enqueued it once
    assert queue.count == 1

    results: list[bool] = []
    barrier = threading.Barrier(6)

    def race(kind: str) -> None:
        barrier.wait(5)
        if kind == "enqueue":
            results.append(enqueue_transcode(s.settings, s.engine, media_id))
        else:
            reconcile(s.settings, s.engine)

    threads = [threading.Thread(target=race, args=("enqueue" if i % 2 else "reconcile",))
               for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [False, False, False]
    assert queue.get_job_ids() == [default_job_id(media_id)]

    # The same with the intent not in Redis yet (completion while Redis was down): of every
    # racer exactly one creates the job.
    conn.delete(queue.key, f"rq:job:{default_job_id(media_id)}")
    from sqlalchemy import update
    from models.tables import Media
    with s.engine.begin() as db:
        db.execute(update(Media).where(Media.id == media_id).values(enqueued_at=None))
    results.clear()
    barrier.reset()
    threads = [threading.Thread(target=race, args=("enqueue",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 5 + [True]
    assert queue.get_job_ids() == [default_job_id(media_id)]

    s.start_worker()
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=60)
    assert done.state == MediaState.READY and done.attempts == 1
    # Ready media are never enqueued again.
    assert enqueue_transcode(s.settings, s.engine, media_id) is False
    assert not reconcile(s.settings, s.engine)
    wait_until(lambda: queue.count == 0, 5, what="queue empty")
    conn.close()


def test_hostile_input_fails_once_with_a_readable_reason(stack: Callable, start_server: Callable,
                                                         clips: dict) -> None:
    s = stack()
    server = start_server(config=s.config)
    s.start_worker()
    media_id = upload(server.url, clips["text"])
    failed = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=60)
    assert failed.state == MediaState.FAILED
    assert failed.error and "text file" in failed.error and "not a video" in failed.error
    assert failed.attempts == 1
    conn = connect(s.settings)
    queue = Queue(s.settings.redis.queue, connection=conn)
    # Permanent: straight to the failed registry, nothing scheduled for a retry.
    wait_until(lambda: queue.failed_job_registry.count == 1, 10, what="failed registry")
    assert queue.scheduled_job_registry.count == 0 and queue.count == 0
    time.sleep(2.5)  # longer than the retry backoff: still one try
    assert s.media(media_id).attempts == 1
    assert not (Layout(s.settings.data_dir).media_dir(media_id)).exists()
    conn.close()


def test_transient_failures_retry_with_backoff_then_fail(stack: Callable, start_server: Callable,
                                                         clips: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An ffmpeg that crashes every time: RQ retries the job ([worker] tries = 3, 1 s backoff
    through RQ's scheduler), then the media fails with the reason; the media waits in
    ``queued`` between tries."""
    crashing = tmp_path / "ffmpeg-crashes"
    crashing.write_text("#!/bin/sh\necho 'Segmentation fault' >&2\nexit 139\n")
    crashing.chmod(0o755)
    s = stack(transcode={"ffmpeg": str(crashing)})
    server = start_server(config=s.config)
    worker = s.start_worker()
    media_id = upload(server.url, clips["short"])
    seen: set[tuple[str, int]] = set()

    def settled() -> bool:
        media = s.media(media_id)
        seen.add((media.state, media.attempts))
        return media.state == MediaState.FAILED

    wait_until(settled, 60, "media failed after its tries", interval=0.05)
    media = s.media(media_id)
    assert media.attempts == 3, media
    assert media.error and "converter failed" in media.error
    assert (MediaState.QUEUED, 1) in seen or (MediaState.QUEUED, 2) in seen
    assert worker.output.count(f"event=transcode.retrying media={media_id}") == 2
    assert worker.output.count(f"event=transcode.failed media={media_id}") == 1
    conn = connect(s.settings)
    queue = Queue(s.settings.redis.queue, connection=conn)
    wait_until(lambda: queue.failed_job_registry.count == 1, 10, what="filed as failed")
    conn.close()
