"""Fixtures for the queue/worker tests: real redis-server, real ``tusflow serve`` and
``tusflow worker`` processes, real ffmpeg on small generated clips, uploads over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.config import Settings, load_settings
from models.db import init_db, make_engine
from models.tables import Media
from tests.support.media import make_clip
from tests.support.procs import TUSFLOW, Proc, RedisServer

TUS = {"Tus-Resumable": "1.0.0"}
# One small rung keeps every transcode around a second on a shared 2-core machine.
TINY_LADDER = [{"name": "240p", "height": 240, "video_kbps": 300, "audio_kbps": 64}]
# For the tests that must catch a job mid-transcode: two rungs, slower preset (~6 s).
SLOW_LADDER = [{"name": "360p", "height": 360, "video_kbps": 600, "audio_kbps": 64},
               {"name": "240p", "height": 240, "video_kbps": 300, "audio_kbps": 64}]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(interval)


class Stack:
    """Settings, engine and process starters for one test."""

    def __init__(self, config: Path, tmp_path: Path):
        self.config = config
        self.tmp_path = tmp_path
        self.settings: Settings = load_settings(config, env={})
        self.engine: Engine = make_engine(self.settings)
        init_db(self.engine)
        self.workers: list[Proc] = []

    def media(self, media_id: str) -> Media | None:
        with Session(self.engine) as session:
            return session.get(Media, media_id)

    def wait_state(self, media_id: str, states: tuple[str, ...], timeout: float = 60.0) -> Media:
        def check() -> Media | None:
            media = self.media(media_id)
            return media if media is not None and media.state in states else None
        try:
            return wait_until(check, timeout, 0.1, f"media {media_id} in {states}")
        except TimeoutError:
            media = self.media(media_id)
            logs = "\n".join(w.output[-3000:] for w in self.workers)
            raise AssertionError(f"media {media_id} is {media.state if media else None} "
                                 f"({media.error if media else ''}), wanted {states}\n{logs}")

    def start_worker(self, name: str | None = None, burst: bool = False) -> Proc:
        name = name or f"w{len(self.workers) + 1}"
        argv = [TUSFLOW, "worker", "--config", str(self.config), "--name",
                f"{name}-{os.getpid()}-{int(time.time() * 1000) % 100000}"]
        if burst:
            argv.append("--burst")
        proc = Proc(argv, name=name)
        self.workers.append(proc)
        proc.wait_for(r"event=worker\.start", timeout=30)
        return proc

    def close(self) -> None:
        for worker in self.workers:  # all at once: each takes a second or two to wind down
            worker.kill(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for worker in self.workers:
            try:
                worker.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            worker.stop()
        self.engine.dispose()


@pytest.fixture
def jobs_config(make_config: Callable[..., Path], redis_server: RedisServer) -> Callable[..., Path]:
    """A config pointing at the test's redis-server, fast retries and reconciling."""
    def _make(**sections: dict[str, Any]) -> Path:
        merged: dict[str, dict[str, Any]] = {
            "redis": {"url": redis_server.url, "queue": "tusflow-test"},
            "worker": {"tries": 3, "retry_backoff": [1], "reconcile_interval": 1.0, "count": 2},
            "transcode": {"ladder": TINY_LADDER, "preset": "ultrafast", "timeout_min": 120,
                          "storyboard_interval": 1.0},
        }
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        return make_config(**merged)
    return _make


@pytest.fixture
def stack(jobs_config: Callable[..., Path], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def _stack(**sections: dict[str, Any]) -> Stack:
        s = Stack(jobs_config(**sections), tmp_path)
        made.append(s)
        return s

    yield _stack
    for s in made:
        s.close()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    text = folder / "notes.mp4"
    text.write_text("These are my lecture notes, not a video.\nSee you on Monday.\n")
    return {
        "short": make_clip(folder / "short.mp4", 320, 240, seconds=3),
        "long": make_clip(folder / "long.mp4", 640, 360, seconds=12),
        "text": text,
    }


def upload(base_url: str, path: Path, chunk: int = 0, filename: str | None = None) -> str:
    """POST + PATCH(es) over plain HTTP; returns the upload (= media) id."""
    data = path.read_bytes()
    import base64
    name = base64.b64encode((filename or path.name).encode()).decode()
    with httpx.Client(timeout=30) as client:
        created = client.post(base_url, headers={**TUS, "Upload-Length": str(len(data)),
                                                 "Upload-Metadata": f"filename {name}"})
        assert created.status_code == 201, created.text
        location = str(httpx.URL(base_url).join(created.headers["Location"]))
        offset = 0
        step = chunk or len(data)
        while offset < len(data):
            response = client.patch(location, content=data[offset:offset + step],
                                    headers={**TUS, "Upload-Offset": str(offset),
                                             "Content-Type": "application/offset+octet-stream"})
            assert response.status_code == 204, response.text
            offset = int(response.headers["Upload-Offset"])
    return location.rstrip("/").rsplit("/", 1)[-1]


def media_lines(output: str, media_id: str) -> list[str]:
    return [line for line in output.splitlines() if media_id in line]


def no_process_in(directory: Path) -> bool:
    """True when no process has its working directory inside ``directory`` (orphan ffmpeg)."""
    target = str(directory)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(target):
            return False
    return True


JOB_LINE = re.compile(r"transcode-[0-9a-f]{32}")
