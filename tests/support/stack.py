"""The stack launcher: one config's settings and database at hand, ``tusflow worker``
processes started on demand (and a ``tusflow serve`` when the caller started one), all stopped
by PID at the end. The folders' ``stack`` fixtures choose the config; this class is the same
for all of them. Also the plain-HTTP tus upload the stack tests feed it with."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.config import Settings, load_settings
from models.db import init_db, make_engine
from models.tables import Media, Upload
from tests.support.procs import TUSFLOW, Proc, TusflowServer
from tests.support.waiting import wait_until

TUS = {"Tus-Resumable": "1.0.0"}
# One small rung keeps every transcode around a second on a shared 2-core machine.
TINY_LADDER = [{"name": "240p", "height": 240, "video_kbps": 300, "audio_kbps": 64}]
# For the tests that must catch a job mid-transcode: two rungs, slower preset (~6 s).
SLOW_LADDER = [{"name": "360p", "height": 360, "video_kbps": 600, "audio_kbps": 64},
               {"name": "240p", "height": 240, "video_kbps": 300, "audio_kbps": 64}]
WORKER_STOP_S = 15.0


class Stack:
    """Settings, engine and worker starters for one config; ``server`` when one was started."""

    def __init__(self, config: Path, server: TusflowServer | None = None):
        self.config = config
        self.server = server
        self.settings: Settings = load_settings(config, env={})
        self.engine: Engine = make_engine(self.settings)
        init_db(self.engine)  # a no-op when the server migrated it already
        self.workers: list[Proc] = []

    @property
    def origin(self) -> str:
        assert self.server is not None, "this stack has no server"
        return self.server.origin

    def media(self, media_id: str) -> Media | None:
        with Session(self.engine) as session:
            return session.get(Media, media_id)

    def upload(self, upload_id: str) -> Upload | None:
        with Session(self.engine) as session:
            return session.get(Upload, upload_id)

    def wait_state(self, media_id: str, states: tuple[str, ...], timeout: float = 60.0) -> Media:
        """The media once it is in one of ``states``; on timeout, an AssertionError with its
        state, error and the workers' last output."""
        def check() -> Media | None:
            media = self.media(media_id)
            return media if media is not None and media.state in states else None
        try:
            return wait_until(check, timeout, f"media {media_id} in {states}")
        except TimeoutError:
            media = self.media(media_id)
            logs = "\n".join(w.output[-3000:] for w in self.workers)
            raise AssertionError(f"media {media_id} is {media.state if media else None} "
                                 f"({media.error if media else ''}), wanted {states}\n{logs}")

    def start_worker(self, name: str | None = None, burst: bool = False) -> Proc:
        """``tusflow worker`` on this config, once it logged worker.start. Its RQ name is
        ``<name>-<pid>-<n>``, so tests can find a worker's lines in another's output."""
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
        """Workers first, all at once (each takes a second or two to wind down); the server,
        when it is this stack's, is stopped by the fixture that started it."""
        for worker in self.workers:
            worker.kill(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_S
        for worker in self.workers:
            try:
                worker.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            worker.stop()
        self.engine.dispose()


def upload(base_url: str, path: Path, chunk: int = 0, filename: str | None = None) -> str:
    """POST + PATCH(es) over plain HTTP; returns the upload (= media) id."""
    data = path.read_bytes()
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
    """A process's log lines that name this media."""
    return [line for line in output.splitlines() if media_id in line]
