"""Helpers for driving Debian's chromium with Playwright: viewports, bounded waits on page
state, the accessibility audit every page must pass, screenshots, upload throttling.

The pages run under their real Content-Security-Policy, which forbids eval, so waits on page
state poll ``page.evaluate`` (evaluated by the debugger, not the page) instead of
``wait_for_function``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support.files import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MIB = 1024 * 1024
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 760}


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
