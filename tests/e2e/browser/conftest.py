"""Fixtures for the browser tests: Debian's chromium driven by Playwright (never a downloaded
browser), a real ``tusflow serve``, a real redis-server and, when a test asks, a real
``tusflow worker``. Every wait is bounded; processes are stopped by PID (tests.support.procs).
Page helpers are in tests.support.browser, the stack launcher in tests.support.stack.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, MIB
from tests.support.media import make_clip
from tests.support.procs import RedisServer, TusflowServer
from tests.support.stack import Stack

LADDER = [{"name": "240p", "height": 240, "video_kbps": 300, "audio_kbps": 64},
          {"name": "360p", "height": 360, "video_kbps": 600, "audio_kbps": 64}]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    """One browser for the browser tests, closed when they are done: Playwright's sync API runs
    an event loop on this thread while it is open, and every asyncio test collected after the
    browser tests (``pytest tests/e2e/browser tests/tus_server/api``) would fail to start its own."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: ./scripts/setup installs Debian's chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield browser
        browser.close()


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Callable[..., Any]]:
    """``open_page(viewport)`` → a page in a fresh context (own localStorage). Uncaught page
    errors fail the test: a page that throws is broken even if the assertions pass."""
    contexts: list[Any] = []
    errors: list[str] = []

    def _open(viewport: dict[str, int] | None = None) -> Any:
        context = chromium.new_context(viewport=viewport or DESKTOP, locale="en-US",
                                       timezone_id="Asia/Bangkok")
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(f"{page.url}: {err}"))
        page.on("console", lambda msg: errors.append(f"{page.url}: console {msg.text}")
                if msg.type == "error" and "net::ERR_ABORTED" not in msg.text
                and "Failed to load resource" not in msg.text else None)
        page.on("dialog", lambda dialog: dialog.accept())
        return page

    yield _open
    for context in contexts:
        context.close()
    assert not errors, "errors in the page:\n" + "\n".join(errors)


@pytest.fixture(scope="session")
def clip64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, playable 12 s 640x360 H.264/AAC clip of about 64 MiB: noise keeps x264 from
    compressing it and CBR with filler data pins the size."""
    path = tmp_path_factory.mktemp("clips") / "lecture-64mib.mp4"
    make_clip(path, 640, 360, 12.0, extra=["-vf", "noise=alls=20:allf=t", "-b:v", "44000k", "-minrate", "44000k",
                                          "-maxrate", "44000k", "-bufsize", "22000k", "-x264-params", "nal-hrd=cbr"])
    return path


@pytest.fixture(scope="session")
def clip_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "short.mp4", 320, 240, 2.0)


@pytest.fixture
def stack(make_config: Callable[..., Path], start_server: Callable[..., TusflowServer],
          redis_server: RedisServer) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def _make(**sections: dict[str, Any]) -> Stack:
        merged: dict[str, dict[str, Any]] = {
            "redis": {"url": redis_server.url, "queue": "tusflow-browser"},
            "worker": {"reconcile_interval": 1.0},
            "uploads": {"client_chunk_size": 4 * MIB},
            "transcode": {"ladder": LADDER, "preset": "veryfast", "storyboard_interval": 1.0,
                          "timeout_min": 120},
        }
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        config = make_config(**merged)
        made.append(Stack(config, start_server(config)))
        return made[-1]

    yield _make
    for s in made:
        s.close()
