"""The upload page's resume that never starts over, and its configurable retries, in Chromium
against real processes with every upstream byte counted by a proxy:

- mid-upload reload, the same file chosen again and Publish pressed at once, while the look-up
  of the earlier upload still runs: Publish waits ("checking…") and continues that upload;
- ``[uploads] client_retry_delays`` reaches the page, and once those retries are used up the
  page says the connection was lost.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.browser import (DESKTOP, MIB, reload_mid_upload, throttle_upload, wait_js,
                                   wait_progress, watch_upload_requests)
from tests.support.files import sha256_file
from tests.support.proxy import CuttingProxy
from tests.support.stack import Stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
STRINGS = json.loads((Path(__file__).resolve().parents[3] / "tus_server" / "i18n" / "en.json").read_text())

WATCH_PUBLISH = """() => {
  window.__publish = [];
  const b = document.getElementById('publish');
  new MutationObserver(() => window.__publish.push(b.textContent)).observe(b, { childList: true, characterData: true, subtree: true });
  window.__times = {};
  document.getElementById('file').addEventListener('change', () => { window.__times.chosen = performance.now() });
  document.getElementById('upload-form').addEventListener('submit', () => { window.__times.publish = performance.now() }, true);
}"""


def test_publish_pressed_during_the_lookup_continues_the_earlier_upload(
        stack: Callable[..., Stack], open_page: Callable[..., Any], clip64: Path) -> None:
    size = clip64.stat().st_size
    s = stack()
    proxy = CuttingProxy(s.origin, cut_every=1 << 40, max_cuts=0)  # counts every byte sent upstream
    page = open_page(DESKTOP)
    try:
        upload_id = reload_mid_upload(page, proxy.origin, clip64, "Lecture, pressed at once")
        row = wait_until(lambda: (u := s.upload(upload_id)) and u.offset > 0 and u, 10, "server-side offset")
        offset_at_resume = row.offset
        assert 0.25 * size < offset_at_resume < size

        seen = watch_upload_requests(page)
        page.evaluate(WATCH_PUBLISH)
        # The look-up asks the server about the earlier upload; that answer is held until
        # Publish has been pressed, so the click surely lands while the look-up runs.
        held: list[Any] = []
        page.route(re.compile(r"/api/media\?ids="), lambda route: held.append(route))
        bytes_before = proxy.bytes_up
        page.set_input_files("#file", str(clip64))
        page.evaluate("document.getElementById('publish').click()")  # at once, while the look-up runs
        times = page.evaluate("window.__times")
        print(f"Publish pressed {times['publish'] - times['chosen']:.0f} ms after the file was chosen")
        wait_js(page, f"window.__publish.includes({json.dumps(STRINGS['upload.checking'])})", timeout=5,
                what="the checking state")
        assert page.is_disabled("#publish")
        wait_until(lambda: held, 5, "the look-up's request")
        assert seen["posts"] == 0 and "first_patch" not in seen  # nothing was sent meanwhile
        for route in held:
            route.continue_()
        page.wait_for_url(re.compile(r"/media"), timeout=60_000)
        assert seen["posts"] == 0, "a new upload was created instead of continuing the earlier one"
        assert seen["first_patch"] == offset_at_resume
        after = proxy.bytes_up - bytes_before
        assert after < size - offset_at_resume + 2 * MIB, (after, size, offset_at_resume)
        done = s.upload(upload_id)
        assert done is not None and done.completed_at is not None and done.offset == size
        assert sha256_file(s.settings.data_dir / done.storage_path) == sha256_file(clip64)
    finally:
        page.context.close()
        proxy.close()


def test_exhausted_client_retries_say_the_connection_was_lost(
        stack: Callable[..., Stack], open_page: Callable[..., Any], clip64: Path) -> None:
    s = stack(uploads={"client_retry_delays": [0, 100]})
    proxy = CuttingProxy(s.origin, cut_every=1 << 40, max_cuts=0)
    page = open_page(DESKTOP)
    closed = False
    try:
        throttle_upload(page, 8_000_000)
        page.goto(f"{proxy.origin}/")
        data = json.loads(page.evaluate("document.getElementById('tusflow-data').textContent"))
        assert data["config"]["retryDelays"] == [0, 100]
        page.set_input_files("#file", str(clip64))
        page.fill("#title", "Lost connection")
        page.click("#publish")
        wait_progress(page, 0.1)
        proxy.close()  # the network is gone: every retry fails without progress
        closed = True
        page.wait_for_selector("#upload-error:not([hidden])", timeout=30_000)
        assert page.inner_text("#upload-error-text") == STRINGS["error.network"]
        assert page.is_visible("#retry")
    finally:
        page.context.close()
        if not closed:
            proxy.close()
