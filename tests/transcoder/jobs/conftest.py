"""Fixtures for the queue/worker tests: real redis-server, real ``tusflow serve`` and
``tusflow worker`` processes (tests.support.stack), real ffmpeg on small generated clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.media import make_clip
from tests.support.procs import RedisServer
from tests.support.stack import TINY_LADDER, Stack


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
def stack(jobs_config: Callable[..., Path]) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def _stack(**sections: dict[str, Any]) -> Stack:
        s = Stack(jobs_config(**sections))
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
