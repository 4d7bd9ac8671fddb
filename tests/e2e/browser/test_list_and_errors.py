"""The media list with every state at once (seeded in the database the server reads), deleting
by keyboard with confirmation, retrying a failure, live progress; and the upload page's pause,
resume and failure messages."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from sqlmodel import Session, select

from models.lifecycle import MediaState
from models.tables import Media, Upload
from tests.support.browser import DESKTOP, MIB, PHONE, audit, screenshot, throttle_upload, wait_js
from tests.support.files import sha256_file
from tests.support.stack import Stack
from tests.support.proxy import CuttingProxy

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def seed(s: Stack) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    ids = {name: secrets.token_hex(16) for name in ("uploading", "queued", "processing", "ready", "failed")}
    renditions = [{"name": "360p", "width": 640, "height": 360, "bandwidth": 760000},
                  {"name": "240p", "width": 426, "height": 240, "bandwidth": 420000}]
    rows: list[Any] = [
        Media(id=ids["ready"], title="Week 1: introduction", size=48_200_000, state=MediaState.READY,
              duration=3725.0, renditions_json=json.dumps(renditions), has_poster=True,
              created_at=now - timedelta(days=2), updated_at=now - timedelta(days=2)),
        Media(id=ids["failed"], title="Week 2: recorded on a phone", size=1_300_000, state=MediaState.FAILED,
              error="This file is not a video we can read (truncated MP4).", created_at=now - timedelta(days=1),
              updated_at=now - timedelta(days=1)),
        Media(id=ids["processing"], title="Week 3: entropy", size=812_000_000, state=MediaState.PROCESSING,
              progress=37.0, eta_seconds=95.0, created_at=now - timedelta(hours=2), updated_at=now),
        Media(id=ids["queued"], title="Week 4: the second law", size=95_000_000, state=MediaState.QUEUED,
              created_at=now - timedelta(minutes=30), updated_at=now),
    ]
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                    for k, v in {"title": "Week 5: exam review", "filename": "w5.mp4"}.items())
    rows.append(Upload(id=ids["uploading"], length=2_000_000_000, offset=500_000_000, metadata_raw=meta,
                       storage_path=f"uploads/{ids['uploading']}", created_at=now - timedelta(minutes=1), updated_at=now))
    with Session(s.engine) as session:
        session.add_all(rows)
        session.commit()
    layout_root = s.settings.data_dir
    (layout_root / "uploads" / ids["uploading"]).write_bytes(b"")
    poster_dir = layout_root / "media" / ids["ready"]
    poster_dir.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360",
                    "-frames:v", "1", str(poster_dir / "poster.jpg")], check=True, timeout=30)
    return ids


def card_text(page: Any, media_id: str) -> str:
    return page.inner_text(f'li[data-id="{media_id}"]')


def test_list_states_delete_by_keyboard_retry_and_live_progress(stack: Callable[..., Stack],
                                                                open_page: Callable[..., Any]) -> None:
    s = stack()
    ids = seed(s)
    page = open_page(DESKTOP)
    page.goto(f"{s.origin}/media")
    page.wait_for_selector(f'li[data-id="{ids["ready"]}"][data-state="ready"]')
    order = page.eval_on_selector_all("#media-list > li", "lis => lis.map(li => li.dataset.id)")
    assert order == [ids[k] for k in ("uploading", "queued", "processing", "failed", "ready")]
    assert "Uploading" in card_text(page, ids["uploading"]) and "25% uploaded" in card_text(page, ids["uploading"])
    assert "Waiting for processing to start" in card_text(page, ids["queued"])  # no job in Redis: no position
    assert "37% processed · about 1 min 35 s left" in card_text(page, ids["processing"])
    assert "truncated MP4" in card_text(page, ids["failed"])
    ready = card_text(page, ids["ready"])
    assert "Ready to watch in 360p · 240p" in ready and "48.2 MB" in ready
    assert page.inner_text(f'li[data-id="{ids["ready"]}"] .duration-badge') == "1:02:05"
    assert page.is_visible(f'li[data-id="{ids["failed"]}"] button.retry')
    assert not page.is_visible(f'li[data-id="{ids["ready"]}"] button.retry')
    assert page.get_attribute(f'li[data-id="{ids["failed"]}"] button.retry', "aria-label") == \
        "Retry processing Week 2: recorded on a phone"
    assert page.evaluate("document.querySelector('li[data-id] progress').max") == 100
    page.wait_for_selector(f'li[data-id="{ids["ready"]}"] img.poster:not([hidden])')
    audit(page)
    screenshot(page, "list-states")
    page.set_viewport_size(PHONE)
    screenshot(page, "list-states-375")
    page.set_viewport_size(DESKTOP)

    # live progress, pushed: the worker's kind of update, made in the database
    with Session(s.engine) as session:
        row = session.get(Media, ids["processing"])
        assert row is not None
        row.progress, row.eta_seconds, row.updated_at = 64.0, 20.0, datetime.now(timezone.utc)
        session.add(row)
        session.commit()
    wait_js(page, f"document.querySelector('li[data-id=\"{ids['processing']}\"] .status-detail')"
                  ".textContent.includes('64% processed')", timeout=5, what="progress pushed")

    # delete by keyboard: Enter opens the dialog, Escape keeps the video, Tab+Enter deletes it
    delete = f'li[data-id="{ids["ready"]}"] button.delete'
    page.focus(delete)
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-delete[open]")
    assert "Week 1: introduction" in page.inner_text("#confirm-text")
    assert page.evaluate("document.activeElement.value") == "cancel"
    screenshot(page, "list-delete-dialog", full_page=False)
    page.keyboard.press("Escape")
    wait_js(page, "!document.getElementById('confirm-delete').open", timeout=3, what="dialog closed")
    assert page.evaluate("document.activeElement.classList.contains('delete')")
    assert page.is_visible(f'li[data-id="{ids["ready"]}"]')
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-delete[open]")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.value") == "confirm"
    page.keyboard.press("Enter")
    try:
        page.wait_for_selector(f'li[data-id="{ids["ready"]}"]', state="detached", timeout=15_000)
    except Exception:
        raise AssertionError(card_text(page, ids["ready"]) + s.server.proc.output[-3000:])
    wait_js(page, "document.getElementById('live-polite').textContent.includes('was deleted')", timeout=3,
            what="deletion announced")
    assert httpx.get(f"{s.origin}/api/media/{ids['ready']}").status_code == 404
    assert not (s.settings.data_dir / "media" / ids["ready"]).exists()

    # an unfinished upload is stopped through tus termination
    page.click(f'li[data-id="{ids["uploading"]}"] button.delete')
    assert "will be stopped" in page.inner_text("#confirm-text")
    page.click('#confirm-delete button[value="confirm"]')
    page.wait_for_selector(f'li[data-id="{ids["uploading"]}"]', state="detached", timeout=15_000)
    assert s.upload(ids["uploading"]) is None

    # retry a failure: it goes back to the queue, with its place once Redis has the job
    page.click(f'li[data-id="{ids["failed"]}"] button.retry')
    page.wait_for_selector(f'li[data-id="{ids["failed"]}"][data-state="queued"]', timeout=15_000)
    wait_js(page, f"document.querySelector('li[data-id=\"{ids['failed']}\"] .status-detail')"
                  ".textContent.startsWith('Position')", timeout=5, what="queue position after retry")
    assert not page.is_visible(f'li[data-id="{ids["failed"]}"] button.retry')
    media = s.media(ids["failed"])
    assert media is not None and media.state == MediaState.QUEUED and media.error is None


def test_a_refused_upload_says_why_and_offers_retry(stack: Callable[..., Stack], open_page: Callable[..., Any],
                                           clip64: Path) -> None:
    s = stack(uploads={"max_size": 40_000_000})
    page = open_page(DESKTOP)
    page.goto(f"{s.origin}/")
    # drag and drop: a file dropped on the zone is chosen like a picked one
    page.evaluate("""() => { const data = new DataTransfer();
      data.items.add(new File([new Uint8Array(2048)], 'dropped_lecture.mp4', { type: 'video/mp4' }));
      document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true })) }""")
    wait_js(page, "document.getElementById('file-info').textContent.includes('dropped_lecture.mp4')", timeout=3,
            what="dropped file chosen")
    assert page.input_value("#title") == "dropped lecture"
    page.fill("#title", "")
    page.set_input_files("#file", str(clip64))
    page.click("#publish")
    page.wait_for_selector("#upload-error:not([hidden])", timeout=10_000)
    message = page.inner_text("#upload-error-text")
    assert "too large" in message and "40 MB" in message, message
    assert page.evaluate("document.activeElement.id") == "retry"
    assert page.get_attribute("#upload-error-text", "role") == "alert"
    assert not page.is_visible("#progress-panel")  # refused before any byte: no bar to show
    screenshot(page, "upload-error")
    page.set_viewport_size(PHONE)
    screenshot(page, "upload-error-375")
    page.set_viewport_size(DESKTOP)
    page.click("#choose-another")
    assert page.is_visible("#upload-form") and not page.is_visible("#upload-error")


def test_pause_and_resume(stack: Callable[..., Stack], open_page: Callable[..., Any], clip64: Path) -> None:
    s = stack()
    size = clip64.stat().st_size
    page = open_page(DESKTOP)
    throttle_upload(page, 16_000_000)
    page.goto(f"{s.origin}/")
    page.set_input_files("#file", str(clip64))
    page.click("#publish")
    wait_js(page, "document.getElementById('progress').value > 0", timeout=10, what="upload started")
    page.click("#pause")
    assert page.evaluate("document.activeElement.id") == "resume"
    assert "Paused" in page.inner_text("#progress-state")
    time.sleep(0.3)
    held = page.evaluate("document.getElementById('progress').value")
    time.sleep(1.0)
    assert page.evaluate("document.getElementById('progress').value") == held
    assert 0 < held < size
    screenshot(page, "upload-paused")
    page.keyboard.press("Enter")  # Resume has the focus
    page.wait_for_url("**/media?uploaded=*", timeout=30_000)


def test_network_drops_resume_by_themselves(stack: Callable[..., Stack], open_page: Callable[..., Any],
                                            clip64: Path) -> None:
    s = stack()
    size = clip64.stat().st_size
    proxy = CuttingProxy(s.origin, cut_every=20 * MIB, max_cuts=2)
    page = open_page(DESKTOP)
    try:
        page.goto(f"{proxy.origin}/")
        page.set_input_files("#file", str(clip64))
        page.click("#publish")
        page.wait_for_url("**/media?uploaded=*", timeout=60_000)
        assert proxy.cuts == 2
        assert proxy.bytes_up < size + 2 * 20 * MIB
        # Not from page.url: the list drops ?uploaded= from the address once it has loaded.
        with Session(s.engine) as session:
            (upload,) = session.exec(select(Upload)).all()
        assert upload.completed_at is not None
        assert sha256_file(s.settings.data_dir / upload.storage_path) == sha256_file(clip64)
    finally:
        page.context.close()
        proxy.close()
