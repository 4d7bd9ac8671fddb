"""The chunked ladder end to end: ``tusflow serve`` + ``tusflow worker`` processes, real
redis-server and ffmpeg. A 10 s clip with ``chunk_seconds = 4`` (2 s segments, 1 s IDRs) is
three chunks (4 + 4 + 2 s, the last one short), each its own RQ job, plus the audio part and
the join. Checked from the published files with ffprobe, independently of the transcoder."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pytest
from rq import Queue

from models.layout import Layout
from models.lifecycle import MediaState
from models.redis_conn import connect
from tests.support.httpd import http_get
from tests.support.media import make_clip
from tests.support.procs import TUSFLOW
from tests.support.stack import upload
from tests.support.waiting import wait_until
from tests.support.chunked import CHUNKED, check_joined_ladder, chunk_starts, part_lines



@pytest.fixture(scope="module")
def ten_s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s at 25 fps with a 48 kHz tone: not a multiple of the 4 s chunks."""
    return make_clip(tmp_path_factory.mktemp("chunked") / "ten.mp4", 640, 360, seconds=10)


def test_chunked_ladder_is_one_continuous_stream_per_rendition(
        stack: Callable, start_server: Callable, ten_s: Path, tmp_path: Path) -> None:
    s = stack(transcode=CHUNKED)
    server = start_server(config=s.config)
    workers = [s.start_worker("a"), s.start_worker("b")]
    media_id = upload(server.url, ten_s)
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=180)
    assert done.state == MediaState.READY, done.error
    # three chunk jobs, one audio part and one join, on whichever worker was free
    for part in ("chunk-0", "chunk-1", "chunk-2", "audio", "join"):
        assert part_lines(workers, media_id, f"part={part}"), part
    assert not part_lines(workers, media_id, "part=chunk-3")
    out = Layout(s.settings.data_dir).media_dir(media_id)
    check_joined_ladder(out, ten_s, tmp_path)
    assert (out / "poster.jpg").stat().st_size > 0
    assert not list(Layout(s.settings.data_dir).scratch.glob(f"{media_id}.parts*"))
    status, body = http_get(f"{server.origin}/api/media/{media_id}")
    item = json.loads(body)
    assert status == 200 and item["state"] == "ready" and item["progress"] == 100
    assert [r["state"] for r in item["renditions"]] == ["ready"] * len(item["renditions"])
    # the whole-video job handed its ladder over and did not encode it itself
    assert part_lines(workers, media_id, "event=transcode.fanned_out")


def _wrapper(tmp: Path, body: str) -> Path:
    """An ``ffmpeg`` that misbehaves for chunk 1 only (its input seek is 4 - 0.5/25 s)."""
    path = tmp / "ffmpeg-wrapper"
    path.write_text("#!/bin/sh\n"
                    f'STATE="{tmp}"\n'
                    'case " $* " in *" -ss 3.980000 "*)\n'
                    f"{body}\n"
                    "  ;;\nesac\nexec ffmpeg \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_chunk_failing_once_is_retried_alone_and_the_media_becomes_ready(
        stack: Callable, start_server: Callable, ten_s: Path, tmp_path: Path) -> None:
    wrapper = _wrapper(tmp_path, '  if [ ! -e "$STATE/failed-once" ]; then\n'
                                 '    touch "$STATE/failed-once"; echo "injected" >&2; exit 1\n'
                                 '  fi')
    s = stack(transcode={**CHUNKED, "ffmpeg": str(wrapper)})
    server = start_server(config=s.config)
    workers = [s.start_worker("a"), s.start_worker("b")]
    media_id = upload(server.url, ten_s)
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=180)
    assert done.state == MediaState.READY, done.error
    assert (tmp_path / "failed-once").exists()
    assert chunk_starts(workers, media_id, "chunk-1") == 2   # the failed try and its retry
    assert chunk_starts(workers, media_id, "chunk-0") == 1   # nobody else ran again
    assert part_lines(workers, media_id, "event=part.retrying")
    check_joined_ladder(Layout(s.settings.data_dir).media_dir(media_id), ten_s, tmp_path)


def test_a_chunk_failing_every_try_fails_the_media_with_a_reason(
        stack: Callable, start_server: Callable, ten_s: Path, tmp_path: Path) -> None:
    wrapper = _wrapper(tmp_path, '  echo "injected" >&2; exit 1')
    s = stack(transcode={**CHUNKED, "ffmpeg": str(wrapper)})
    server = start_server(config=s.config)
    workers = [s.start_worker("a"), s.start_worker("b")]
    media_id = upload(server.url, ten_s)
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=180)
    assert done.state == MediaState.FAILED
    assert "part 2 of 3 of the video" in (done.error or ""), done.error
    assert "exit code 1" in done.error
    assert chunk_starts(workers, media_id, "chunk-1") == 3  # [worker] tries = 3
    status, body = http_get(f"{server.origin}/api/media/{media_id}")
    assert status == 200 and json.loads(body)["state"] == "failed"
    wait_until(lambda: not list(Layout(s.settings.data_dir).scratch.glob(f"{media_id}.parts*")),
               20, what="staging removed")


def test_worker_killed_mid_chunk_the_chunk_runs_again_and_the_media_is_ready(
        stack: Callable, start_server: Callable, ten_s: Path, tmp_path: Path) -> None:
    s = stack(transcode={**CHUNKED, "preset": "medium"})
    server = start_server(config=s.config)
    victim = s.start_worker("victim")
    media_id = upload(server.url, ten_s)
    match = victim.wait_for(rf"event=part\.start .*media={media_id}.*part=(chunk-\d+)", 90)
    part = match.group(1)
    time.sleep(0.5)  # inside ffmpeg
    victim.kill(signal.SIGKILL)
    victim.popen.wait(10)
    layout = Layout(s.settings.data_dir)
    staging = next(layout.scratch.glob(f"{media_id}.parts*"))
    index = int(part.split("-")[1])
    assert not (staging / f"c{index:05d}").exists()  # only a work dir, never read by the join
    rescuer = s.start_worker("rescuer")
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=240)
    assert done.state == MediaState.READY, done.error
    assert chunk_starts([rescuer], media_id, part) == 1, rescuer.output[-3000:]
    assert not part_lines([rescuer], media_id, "event=transcode.start")  # no new generation
    assert done.job_id.endswith(media_id)  # still the first generation
    check_joined_ladder(layout.media_dir(media_id), ten_s, tmp_path)


def test_delete_during_chunks_stops_every_chunk_job(
        stack: Callable, start_server: Callable, ten_s: Path) -> None:
    s = stack(transcode={**CHUNKED, "preset": "medium"})
    server = start_server(config=s.config)
    workers = [s.start_worker("a"), s.start_worker("b")]
    media_id = upload(server.url, ten_s)
    wait_until(lambda: [line for line in part_lines(workers, media_id, "event=part.start")
                        if "part=chunk-" in line], 90, what="a chunk started")
    layout = Layout(s.settings.data_dir)
    staging = next(layout.scratch.glob(f"{media_id}.parts*"))
    status = subprocess.run([TUSFLOW, "jobs", "status", "--config", str(s.config)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "Chunked ladders" in status.stdout, status.stdout
    grouped = [line for line in status.stdout.splitlines()
               if media_id in line and (" parts (" in line or " part (" in line)]
    assert grouped, status.stdout  # the media's chunk jobs on one row, not one row each
    request = urllib.request.Request(f"{server.origin}/api/media/{media_id}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status in (200, 204)
    wait_until(lambda: no_ffmpeg_in(staging), 30, what="chunk ffmpeg gone")
    assert s.media(media_id) is None
    conn = connect(s.settings)
    try:
        queue = Queue(s.settings.redis.queue, connection=conn)
        wait_until(lambda: not [j for j in queue.get_job_ids() if media_id in j] and
                   not [j for j in queue.started_job_registry.get_job_ids(cleanup=False)
                        if media_id in j], 30, what="no job of the media queued or running")
    finally:
        conn.close()
    wait_until(lambda: not staging.exists(), 20, what="staging removed")
    assert all(w.alive() for w in workers)
    time.sleep(2)  # a released chunk would start now: none may
    assert not layout.media_dir(media_id).exists()


def no_ffmpeg_in(folder: Path) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd").startswith(str(folder)):
                return False
        except OSError:
            continue
    return True


def test_a_short_video_queued_after_a_long_one_does_not_wait_for_all_its_chunks(
        stack: Callable, start_server: Callable, tmp_path: Path) -> None:
    """One worker, a 24 s video (six chunks) then a 3 s one: the long video never has more
    than a window of chunks in the queue, so the short one runs after at most that window,
    before the long video's later chunks."""
    long_clip = make_clip(tmp_path / "long.mp4", 640, 360, seconds=24)
    short_clip = make_clip(tmp_path / "short.mp4", 320, 240, seconds=3)
    s = stack(transcode=CHUNKED)
    server = start_server(config=s.config)
    worker = s.start_worker("only")
    long_id = upload(server.url, long_clip)
    worker.wait_for(rf"event=part\.start .*media={long_id}.*part=chunk-0", 90)
    short_id = upload(server.url, short_clip)
    for media_id in (long_id, short_id):
        done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=240)
        assert done.state == MediaState.READY, done.error
    lines = worker.output.splitlines()

    def first(*parts: str) -> int:
        return next(i for i, line in enumerate(lines) if all(p in line for p in parts))

    short_start = first("event=transcode.start", short_id)
    later_chunk = first("event=part.start", long_id, "part=chunk-3")
    assert short_start < later_chunk, "the short video waited behind the long one's chunks"
    assert s.media(short_id).finished_at < s.media(long_id).finished_at
