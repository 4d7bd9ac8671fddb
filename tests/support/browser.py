"""Helpers for driving Debian's chromium with Playwright: viewports, bounded waits on page
state, the accessibility audit every page must pass, screenshots, upload throttling.

The pages run under their real Content-Security-Policy, which forbids eval, so waits on page
state poll ``page.evaluate`` (evaluated by the debugger, not the page) instead of
``wait_for_function``.
"""

from __future__ import annotations

import functools
import shutil
import time
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator

from tests.support.files import ARTIFACTS
from tests.support.httpd import local_http

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MIB = 1024 * 1024
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 760}
HLS_JS = Path(__file__).resolve().parents[2] / "node_modules" / "hls.js" / "dist" / "hls.min.js"


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


def wait_progress(page: Any, fraction: float, timeout: float = 30.0) -> None:
    """Wait until the upload page's progress bar is past ``fraction`` of the file."""
    wait_js(page, "(() => { const p = document.getElementById('progress'); "
                  f"return p.value / p.max > {fraction} }})()",
            timeout=timeout, what=f"{fraction:.0%} uploaded")


def reload_mid_upload(page: Any, origin: str, clip: Path, title: str) -> str:
    """Publish ``clip`` from the upload page at ``origin`` throttled to 12 MB/s, reload once
    30 % is up, and return the id of the unfinished upload the reloaded page offers: the
    starting point of every resume test. (The page fixture accepts the beforeunload prompt.)"""
    throttle_upload(page, 12_000_000)
    page.goto(f"{origin}/")
    page.set_input_files("#file", str(clip))
    page.fill("#title", title)
    page.click("#publish")
    wait_progress(page, 0.3)
    page.reload()
    return wait_js(page, "document.querySelector('#unfinished-list li')?.dataset.id", timeout=10,
                   what="the unfinished upload offered")


def watch_upload_requests(page: Any) -> dict[str, int]:
    """Count the page's upload creations (``posts``) and note the offset of its first PATCH
    (``first_patch``), so a test can tell a resumed upload from one started over."""
    seen = {"posts": 0}

    def watch(request: Any) -> None:
        if request.method == "PATCH" and "first_patch" not in seen:
            seen["first_patch"] = int(request.headers["upload-offset"])
        if request.method == "POST" and "/files" in request.url:
            seen["posts"] += 1
    page.on("request", watch)
    return seen


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def hls_page(chromium: Any, site: Path, html: str) -> Iterator[Any]:
    """A Chromium page on ``html`` (a test page driving hls.js) served with the HLS files in
    ``site`` from a plain loopback server: the player meets the files as a CDN would serve
    them, with no tusflow in between. hls.min.js and index.html are written into ``site``."""
    shutil.copy(HLS_JS, site / "hls.min.js")
    (site / "index.html").write_text(html, encoding="utf-8")
    handler = functools.partial(_QuietFiles, directory=str(site))
    with local_http(handler) as origin:  # type: ignore[arg-type]
        context = chromium.new_context()
        try:
            page = context.new_page()
            page.goto(f"{origin}/index.html")
            yield page
        finally:
            context.close()
