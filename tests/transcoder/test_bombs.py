"""Decoder bombs (issue 14): a small valid file must not be able to take a worker host.

The sparse-timestamp file is made here with ffmpeg: two pictures an hour apart in a Matroska
stream that declares 30 fps (30 KB). Converted to a constant rate it is ~108,000 frames, and
before the fix the poster and storyboard branches made ffmpeg queue them all (>1 GB in
seconds). The job test runs the real path (tus upload to ``tusflow serve``, a ``tusflow
worker --burst``) under a wrapper that reports the largest resident size of the worker's whole
process tree, with an address-space cap of its own so the old code fails quickly instead of
eating the machine.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from models.config import TranscodeConfig
from models.lifecycle import MediaState
from models.procs import Limits, preexec
from tests.support.filtergraph import names
from tests.support.procs import TUSFLOW, Proc
from tests.support.stack import TINY_LADDER, Stack, upload
from tests.support.ffkit import run
from tests.support.probes import fake_probe, graph_of
from transcoder.errors import InputRejected
from transcoder.extras import plan_poster, plan_storyboard
from transcoder.ffmpeg import ladder_command
from transcoder.ladder import plan_ladder
from transcoder.pipeline import transcode
from transcoder.probe import CPU_REASON, MEMORY_REASON, probe

PEAK_RSS_BOUND_MB = 400          # the worker tree refusing the file: Python + one ffprobe
SAFETY_AS_BYTES = 2 << 30        # the old code's ffmpeg stops here rather than at the host's
JOB_WAIT_S = 90

# Runs argv under an address-space cap and prints the largest resident size (kB) any waited-for
# process of its tree reached: the kernel folds each child's peak into its parent's
# RUSAGE_CHILDREN when it is reaped.
_WRAPPER = """
import resource, subprocess, sys
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
code = subprocess.call(sys.argv[2:])
print(f"peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", flush=True)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def sparse_mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bombs") / "sparse.mkv"
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                "testsrc=s=320x240:r=30", "-frames:v", "2", "-vf", "setpts=N*3600/TB",
                "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "ultrafast",
                str(path)])
    assert proc.returncode == 0, proc.stderr
    assert path.stat().st_size < 64 * 1024
    return path


def test_the_sparse_file_is_what_the_bomb_needs(sparse_mkv: Path) -> None:
    """Guard on the fixture itself: valid, an hour long, 30 fps declared, two packets."""
    proc = run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                "-show_entries", "stream=avg_frame_rate,nb_read_packets:format=duration",
                "-of", "default=nw=1", str(sparse_mkv)])
    assert proc.returncode == 0, proc.stderr
    assert "avg_frame_rate=30/1" in proc.stdout and "nb_read_packets=2" in proc.stdout
    assert float(re.search(r"duration=([\d.]+)", proc.stdout).group(1)) > 3500


def test_probe_refuses_a_video_that_would_repeat_its_frames(sparse_mkv: Path) -> None:
    with pytest.raises(InputRejected) as caught:
        probe(sparse_mkv, TranscodeConfig())
    assert "holds only 2 pictures" in caught.value.reason
    assert "30 frames per second for 1:00:00" in caught.value.reason
    assert caught.value.permanent


def test_the_check_can_be_switched_off(sparse_mkv: Path) -> None:
    info = probe(sparse_mkv, TranscodeConfig(max_frame_repeat=0))
    assert info.duration > 3500 and info.video is not None and info.video.fps == 30


def test_a_normal_clip_passes_the_frame_count_check(media: Path) -> None:
    """Matroska has no frame count in its index: the demux-only count runs and agrees."""
    clip = media / "count.mkv"
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                "testsrc2=s=160x120:r=30:d=150", "-c:v", "libx264", "-preset", "ultrafast",
                str(clip)])
    assert proc.returncode == 0, proc.stderr
    info = probe(clip, TranscodeConfig())
    assert 149 < info.duration < 151  # 4500 frames: past SPARSE_MIN_FRAMES, so counted


def test_poster_and_storyboard_read_frames_before_the_rate_conversion() -> None:
    """A side branch behind a rung's fps waits behind every repeated frame; fed the decoded
    frames, it can only make ffmpeg read on."""
    info = fake_probe()
    cfg = TranscodeConfig()
    plans = plan_ladder(info, cfg)
    poster, storyboard = plan_poster(info, plans), plan_storyboard(info, cfg)
    graph = graph_of(ladder_command(cfg, info, plans, poster, storyboard))
    _, to_poster = graph.path("poster")
    assert "fps" not in names(to_poster), names(to_poster)
    assert names(to_poster).index("select") < names(to_poster).index("scale")
    _, to_storyboard = graph.path("storyboard")
    assert names(to_storyboard).count("fps") == 1, names(to_storyboard)  # its own, 1/interval
    assert names(to_storyboard).index("fps") < names(to_storyboard).index("trim")
    assert int(poster.batch) <= 24


def test_preexec_sets_the_ceilings_in_the_child() -> None:
    code = ("import resource; print(resource.getrlimit(resource.RLIMIT_AS), "
            "resource.getrlimit(resource.RLIMIT_CPU))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, preexec_fn=preexec(limits=Limits(3 << 30, 77)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"({3 << 30}, {3 << 30}) (77, 82)"


def test_an_ffmpeg_over_its_memory_ceiling_fails_with_the_reason(landscape: Path,
                                                                 small_cfg: TranscodeConfig,
                                                                 tmp_path: Path) -> None:
    """Probed with the normal ceilings, encoded under a tiny one: the ladder's ffmpeg is
    refused memory and the job's error says so (and is permanent: a retry cannot help)."""
    info = probe(landscape, small_cfg)
    tight = dataclasses.replace(small_cfg, memory_limit_mb=350, loudness=False)
    with pytest.raises(InputRejected) as caught:
        transcode(landscape, tmp_path, tight, probed=info)
    assert caught.value.reason == MEMORY_REASON, caught.value.detail
    assert caught.value.permanent


def test_an_ffmpeg_over_its_cpu_ceiling_fails_with_the_reason(long_clip: Path,
                                                              small_cfg: TranscodeConfig,
                                                              tmp_path: Path) -> None:
    info = probe(long_clip, small_cfg)
    tight = dataclasses.replace(small_cfg, cpu_limit_s=1, loudness=False)
    with pytest.raises(InputRejected) as caught:
        transcode(long_clip, tmp_path, tight, probed=info)
    assert caught.value.reason == CPU_REASON, caught.value.detail


@pytest.fixture
def bomb_stack(make_config: Callable[..., Path], redis_server: Any) -> Any:
    config = make_config(
        redis={"url": redis_server.url, "queue": "tusflow-bombs"},
        worker={"tries": 2, "retry_backoff": [1], "reconcile_interval": 1.0, "count": 1},
        transcode={"ladder": TINY_LADDER, "preset": "ultrafast", "timeout_min": 120})
    stack = Stack(config)
    yield stack
    stack.close()


def test_sparse_timestamps_fail_the_job_with_a_reason_in_bounded_memory(
        bomb_stack: Stack, start_server: Callable, sparse_mkv: Path) -> None:
    server = start_server(config=bomb_stack.config)
    media_id = upload(server.url, sparse_mkv)
    assert bomb_stack.media(media_id).state == MediaState.QUEUED

    worker = Proc([sys.executable, "-c", _WRAPPER, str(SAFETY_AS_BYTES), TUSFLOW, "worker",
                   "--burst", "--config", str(bomb_stack.config),
                   "--name", f"bombs-{os.getpid()}-{int(time.time() * 1000) % 100000}"],
                  name="bomb-worker")
    try:
        worker.popen.wait(timeout=JOB_WAIT_S)
        peak = worker.wait_for(r"peak_rss_kb=(\d+)", timeout=10)
    finally:
        worker.stop()
    peak_mb = int(peak.group(1)) / 1024
    assert peak_mb < PEAK_RSS_BOUND_MB, f"worker tree peaked at {peak_mb:.0f} MB"
    media = bomb_stack.media(media_id)
    assert media.state == MediaState.FAILED, (media.state, worker.output[-3000:])
    assert media.error and "holds only 2 pictures" in media.error, media.error
    assert media.attempts == 1  # refused for good, not retried
