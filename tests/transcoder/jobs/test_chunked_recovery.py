"""The reconciler finds the chunked ladder's lost part jobs and runs them again: a queued part
deleted from Redis, Redis losing everything mid-chunk, and a worker SIGKILLed mid-chunk whose
job RQ never requeues (its StartedJobRegistry entry gone too). Real redis-server, server and
worker processes, ffmpeg on a generated clip; each ends with a ready media whose ladder is
checked with ffprobe."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable

import pytest
from rq import Queue
from rq.job import Job

from models.layout import Layout
from models.lifecycle import MediaState, part_job_id
from models.redis_conn import connect
from tests.support.media import make_clip
from tests.support.stack import upload
from tests.support.waiting import wait_until
from tests.support.chunked import CHUNKED, check_joined_ladder, chunk_starts, part_lines

SLOW = {**CHUNKED, "preset": "medium"}  # a chunk takes long enough to act in the middle


@pytest.fixture(scope="module")
def ten_s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("chunked-recovery") / "ten.mp4", 640, 360,
                     seconds=10)


def test_a_queued_part_deleted_from_redis_is_enqueued_again_by_the_reconciler(
        stack: Callable, start_server: Callable, ten_s: Path, tmp_path: Path) -> None:
    s = stack(transcode=SLOW)
    server = start_server(config=s.config)
    worker = s.start_worker("only")
    media_id = upload(server.url, ten_s)
    worker.wait_for(rf"event=part\.start .*media={media_id}.*part=chunk-0", 120)
    generation = s.media(media_id).job_id
    lost = part_job_id(generation, "chunk-1")
    conn = connect(s.settings)
    try:
        job = Job.fetch(lost, connection=conn)  # waiting behind chunk-0 (a window of two)
        assert job.get_status() == "queued"
        job.delete()
        assert lost not in Queue(s.settings.redis.queue, connection=conn).get_job_ids()
    finally:
        conn.close()
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=240)
    assert done.state == MediaState.READY, done.error
    assert [line for line in part_lines([worker], media_id, "event=part.lost") if lost in line]
    assert chunk_starts([worker], media_id, "chunk-1") == 1
    assert done.job_id == generation  # resumed, not started over
    check_joined_ladder(Layout(s.settings.data_dir).media_dir(media_id), ten_s, tmp_path)


def test_redis_losing_everything_mid_chunk_still_ends_ready(
        stack: Callable, start_server: Callable, ten_s: Path, tmp_path: Path) -> None:
    s = stack(transcode=CHUNKED)
    server = start_server(config=s.config)
    workers = [s.start_worker("a"), s.start_worker("b")]
    media_id = upload(server.url, ten_s)
    wait_until(lambda: part_lines(workers, media_id, "event=part.start"), 120,
               what="a part started")
    conn = connect(s.settings)
    try:
        conn.flushall()  # a restart without persistence
    finally:
        conn.close()
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=200)
    assert done.state == MediaState.READY, done.error
    assert part_lines(workers, media_id, "event=job.lost")  # started over as a new generation
    check_joined_ladder(Layout(s.settings.data_dir).media_dir(media_id), ten_s, tmp_path)
    layout = Layout(s.settings.data_dir)
    wait_until(lambda: not list(layout.scratch.glob(f"{media_id}.parts*")), 30,
               what="every generation's staging removed")


def test_worker_killed_mid_chunk_and_job_never_requeued_runs_again(
        stack: Callable, start_server: Callable, ten_s: Path, tmp_path: Path) -> None:
    s = stack(transcode=SLOW)
    server = start_server(config=s.config)
    victim = s.start_worker("victim")
    media_id = upload(server.url, ten_s)
    match = victim.wait_for(rf"event=part\.start .*media={media_id}.*part=(chunk-\d+)", 120)
    part = match.group(1)
    victim.kill(signal.SIGKILL)
    victim.popen.wait(10)
    generation = s.media(media_id).job_id
    job_id = part_job_id(generation, part)
    conn = connect(s.settings)
    try:
        registry = Queue(s.settings.redis.queue, connection=conn).started_job_registry
        members = [m for m in conn.zrange(registry.key, 0, -1)
                   if m.decode().startswith(job_id + ":") or m.decode() == job_id]
        assert members, "the killed part should be listed as started"
        conn.zrem(registry.key, *members)  # RQ's abandoned-job handling will never see it
        assert Job.fetch(job_id, connection=conn).get_status() == "started"
    finally:
        conn.close()
    rescuer = s.start_worker("rescuer")
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=240)
    assert done.state == MediaState.READY, done.error
    assert chunk_starts([rescuer], media_id, part) == 1, rescuer.output[-3000:]
    assert done.job_id == generation  # the part ran again, the generation was not replaced
    check_joined_ladder(Layout(s.settings.data_dir).media_dir(media_id), ten_s, tmp_path)
