"""Fixtures for the browser tests: Debian's chromium driven by Playwright (never a downloaded
browser), a real ``tusflow serve``, a real redis-server and, when a test asks, a real
``tusflow worker``. Every wait is bounded; processes are stopped by PID (tests.support.procs).

The pages run under their real Content-Security-Policy, which forbids eval, so waits on page
state poll ``page.evaluate`` (evaluated by the debugger, not the page) instead of
``wait_for_function``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.config import Settings, load_settings
from models.db import make_engine
from models.tables import Media, Upload
from tests.conftest import ARTIFACTS
from tests.support.media import make_clip
from tests.support.procs import TUSFLOW, Proc, RedisServer, TusflowServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LADDER = [{"name": "240p", "height": 240, "video_kbps": 300, "audio_kbps": 64},
          {"name": "360p", "height": 360, "video_kbps": 600, "audio_kbps": 64}]
MIB = 1024 * 1024
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 760}

pytestmark = pytest.mark.browser


def wait_js(page: Any, expression: str, timeout: float = 10.0, what: str | None = None) -> Any:
    """Poll a JS expression until truthy; its value is returned."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what or expression} not true within {timeout}s (last value {value!r})")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout}s")


A11Y_AUDIT = """(() => {
  const problems = [];
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const name = (el) => (el.getAttribute('aria-label') || el.textContent || '').trim() ||
    (el.getAttribute('aria-labelledby') || '').split(' ').map((id) => document.getElementById(id)?.textContent || '').join('').trim();
  if (!document.documentElement.lang) problems.push('html has no lang');
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
  if (!document.querySelector('[aria-live]')) problems.push('no aria-live region');
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (visible(el) && !el.closest('[aria-hidden="true"]') && !name(el)) problems.push(`unnamed ${el.tagName} ${el.outerHTML.slice(0, 80)}`);
  }
  for (const el of document.querySelectorAll('input, select, textarea, progress')) {
    if (el.type === 'hidden' || el.closest('[hidden]')) continue;
    const labelled = el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push(`unlabelled ${el.tagName}#${el.id}`);
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push(`img without alt ${img.src}`);
  }
  return problems;
})()"""


def audit(page: Any) -> None:
    """The checks a page must pass whatever it shows: names, labels, one h1, a live region."""
    problems = page.evaluate(A11Y_AUDIT)
    assert not problems, f"{page.url}: {problems}"


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def throttle_upload(page: Any, bytes_per_second: int) -> None:
    """Chromium's own network emulation, so progress can be watched on a loopback upload."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": bytes_per_second})


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    """One browser for the browser tests, closed when they are done: Playwright's sync API runs
    an event loop on this thread while it is open, and every asyncio test collected after the
    browser tests (``pytest tests/browser tests/api``) would fail to start its own."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: ./scripts/setup installs Debian's chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield browser
        browser.close()


class PageErrors:
    def __init__(self) -> None:
        self.errors: list[str] = []


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


class Stack:
    """One server (and workers on demand) on one config, with the database at hand."""

    def __init__(self, config: Path, server: TusflowServer):
        self.config = config
        self.server = server
        self.settings: Settings = load_settings(config, env={})
        self.engine: Engine = make_engine(self.settings)
        self.workers: list[Proc] = []

    @property
    def origin(self) -> str:
        return self.server.origin

    def start_worker(self) -> Proc:
        proc = Proc([TUSFLOW, "worker", "--config", str(self.config), "--name", f"browser-{os.getpid()}-{len(self.workers)}"],
                    name="tusflow-worker")
        self.workers.append(proc)
        proc.wait_for(r"event=worker\.start", timeout=30)
        return proc

    def media(self, media_id: str) -> Media | None:
        with Session(self.engine) as session:
            return session.get(Media, media_id)

    def upload(self, upload_id: str) -> Upload | None:
        with Session(self.engine) as session:
            return session.get(Upload, upload_id)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.engine.dispose()


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
