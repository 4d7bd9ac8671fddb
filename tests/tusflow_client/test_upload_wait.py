"""`--wait` against the whole stack: tusflow serve + redis + a real `tusflow worker` + ffmpeg.
A real clip becomes ready; a text file named .mp4 fails with the worker's reason; the exit
status says not everything made it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.support.uploadcli import run_upload
from tests.support.media import make_clip
from tests.support.procs import TUSFLOW, Proc, RedisServer

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

TINY_LADDER = [{"name": "240p", "height": 240, "video_kbps": 300, "audio_kbps": 64}]


def test_wait_follows_media_until_ready_or_failed(make_config: Callable[..., Path], start_server: Callable,
                                                  redis_server: RedisServer, tmp_path: Path) -> None:
    config = make_config(
        redis={"url": redis_server.url, "queue": f"cli-wait-{os.getpid()}"},
        worker={"tries": 1, "retry_backoff": [1], "reconcile_interval": 1.0, "count": 1},
        transcode={"ladder": TINY_LADDER, "preset": "ultrafast", "timeout_min": 120, "storyboard_interval": 1.0})
    server = start_server(config=config)
    folder = tmp_path / "in"
    folder.mkdir()
    clip = make_clip(folder / "lecture.mp4", 320, 240, seconds=2)
    notes = folder / "notes.mp4"
    notes.write_text("not a video\n")
    worker = Proc([TUSFLOW, "worker", "--config", str(config), "--name", f"cli-{os.getpid()}-{time.time_ns() % 10**6}"],
                  name="worker")
    try:
        worker.wait_for(r"event=worker\.start", timeout=30)
        run = run_upload([folder], server.url, tmp_path / "state.json", "--json", "--wait",
                         "--wait-interval", "0.3", "--wait-timeout", "90", timeout=120)
    finally:
        worker.stop()
    assert run.returncode == 1, run
    finals = {e["file"]: e for e in run.of("media") if e["state"] in ("ready", "failed", "timeout", "unavailable")}
    assert finals[str(clip)]["state"] == "ready", run
    assert finals[str(notes)]["state"] == "failed" and finals[str(notes)]["error"], run
    states = [e["state"] for e in run.of("media", clip)]
    assert states[0] in ("queued", "processing") and states[-1] == "ready"
    summary = run.one("media_summary")
    assert summary["states"] == {"ready": 1, "failed": 1} and summary["ok"] is False
    assert run.summary["ok"] is True, "the uploads themselves all made it"
