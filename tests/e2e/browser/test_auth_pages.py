"""The pages with ``[auth] enabled = true``: the platform hands a JWT over in the URL fragment,
the pages carry it on every request, and a refused token is said in one line without losing
the upload.

- the whole path with signed playback: upload, the list (thumbnail through a signed URL), ready
  pushed by a real worker, the player playing signed HLS with its storyboard;
- a wrong token: the notice at once, the upload refused, nothing created;
- a token that expires mid-upload: the notice, the bytes kept; the platform pushes a fresh one
  (``tusflow:token``) and the upload continues from the server's offset.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from sqlmodel import Session, select

from models.tables import Upload
from tests.support.browser import DESKTOP, MIB, audit, screenshot, throttle_upload, wait_js
from tests.support.files import sha256_file
from tests.support.stack import Stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

SECRET = "platform-shared-secret-for-browser-tests-0123"
SIGNING_KEY = "playback-signing-key-for-browser-tests-0123"
EXPIRED = "Your session expired — reopen this page from the platform."
AUTH = {"enabled": True, "jwt_hs256_secret": SECRET, "jwt_leeway": 0}


def platform_token(sub: str = "teacher-7", ttl: float = 600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + int(ttl)}, SECRET, algorithm="HS256")


def push_token(page: Any, token: str) -> None:
    """What the host platform does for an embedded page: postMessage a fresh token."""
    page.evaluate("(token) => window.postMessage({ type: 'tusflow:token', token }, window.location.origin)", token)


def upload_rows(s: Stack) -> list[Upload]:
    with Session(s.engine) as session:
        return list(session.exec(select(Upload)))


class Requests:
    """Every request the page makes to the app: method, URL and Authorization header."""

    def __init__(self, page: Any, origin: str):
        self.seen: list[tuple[str, str, str | None]] = []
        self.offsets: list[str | None] = []  # Upload-Offset of each, in the same order

        def note(r: Any) -> None:
            if r.url.startswith(origin):
                self.seen.append((r.method, r.url, r.headers.get("authorization")))
                self.offsets.append(r.headers.get("upload-offset"))
        page.on("request", note)

    def to(self, pattern: str, method: str | None = None) -> list[tuple[str, str, str | None]]:
        return [x for x in self.seen if re.search(pattern, urlsplit(x[1]).path) and (method is None or x[0] == method)]


@pytest.mark.parametrize("signed", [True, False], ids=["signed-playback", "token-playback"])
def test_platform_token_in_the_fragment_uploads_lists_and_plays(stack: Callable[..., Stack],
                                                                open_page: Callable[..., Any],
                                                                clip_small: Path, signed: bool) -> None:
    """The whole path with the token handed over in the fragment. With signed playback every
    file URL the pages load is signed; without it hls.js and fetch send the header and only
    what cannot (EventSource, <img>, the sprite's CSS background) gets ?token=."""
    s = stack(auth={**AUTH, "playback_signing_key": SIGNING_KEY, "signed_playback": signed})
    s.start_worker()
    token = platform_token()
    page = open_page(DESKTOP)
    requests = Requests(page, s.origin)
    page.goto(f"{s.origin}/#token={token}")
    # taken out of the address bar at once, kept for the tab
    assert page.url == f"{s.origin}/"
    assert page.evaluate("sessionStorage.getItem('tusflow.token')") == token
    wait_js(page, "document.querySelector('#session-message').hidden === true", what="no session notice")

    page.set_input_files("#file", str(clip_small))
    page.fill("#title", "Signed lecture")
    page.click("#publish")
    page.wait_for_url(re.compile(r"/media\?uploaded=[0-9a-f]{32}"), timeout=20_000)
    (row,) = upload_rows(s)  # the list drops ?uploaded= from the address at once: read the id here
    media_id = row.id
    card = f'li[data-id="{media_id}"]'
    page.wait_for_selector(card)
    wait_js(page, f"document.querySelector('{card}').dataset.state === 'ready'", timeout=90, what="ready")
    assert row.owner == "teacher-7"
    wait_js(page, f"document.querySelector('{card} img.poster').naturalWidth > 0", timeout=10, what="poster")
    poster = parse_qs(urlsplit(page.get_attribute(f"{card} img.poster", "src") or "").query)
    assert set(poster) == ({"exp", "sig", "u"} if signed else {"token"}), poster
    assert page.is_hidden("#session-message")
    audit(page)
    screenshot(page, f"auth-list-ready-{'signed' if signed else 'token'}")

    # segments answer 403 as expired links would, until the player has read the item again for
    # fresh links (within the same minute they are the same URLs, so "fresh" is the re-read)
    refused: list[str] = []
    item_reads = lambda: len(requests.to(rf"^/api/media/{media_id}$", "GET"))  # noqa: E731

    def expired_until_reread(route: Any) -> None:
        if item_reads() < 2:
            refused.append(route.request.url)
            route.fulfill(status=403, content_type="text/plain", body="playback link expired\n")
        else:
            route.continue_()
    if signed:
        page.route(re.compile(rf"/media/{media_id}/.+\.m4s"), expired_until_reread)
    page.click(f"{card} .title-link")
    page.wait_for_url(f"**/media/{media_id}")
    wait_js(page, "document.getElementById('media-title').textContent === 'Signed lecture'", timeout=10,
            what="title filled in from the API (the shell has none)")
    page.wait_for_selector("#player:not([hidden])")
    wait_js(page, "document.querySelectorAll('#quality option').length === 2", timeout=15, what="quality menu")
    page.click("#play")
    wait_js(page, "document.getElementById('video').currentTime > 0.5", timeout=20, what="playback")
    if signed:
        assert refused and all("sig=" in url for url in refused)
        assert item_reads() == 2  # the page's read and one re-read
    wait_js(page, "Number(document.getElementById('player').dataset.storyboardCues) > 0", timeout=10,
            what="storyboard")
    box = page.locator("#seek").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    wait_js(page, "!document.getElementById('seek-preview').hidden", timeout=5, what="seek preview")
    wait_js(page, "document.querySelector('.seek-preview-image').offsetWidth > 0", timeout=5, what="sprite tile")
    sprite = page.evaluate("document.querySelector('.seek-preview-image').style.backgroundImage")
    assert "storyboard.jpg?" in sprite and ("sig=" in sprite if signed else "token=" in sprite), sprite
    wait_until(lambda: requests.to(rf"^/media/{media_id}/storyboard\.jpg$", "GET"), 5, "the sprite requested")
    screenshot(page, f"auth-player-{'signed' if signed else 'token'}", full_page=False)

    # every request that changes something or reads the API carried the header; ?token= only
    # where no header can be set; the page loads themselves carried nothing
    api = [x for x in requests.seen if urlsplit(x[1]).path.startswith(("/api/", "/files"))
           and x[0] != "OPTIONS" and not urlsplit(x[1]).path.startswith("/api/events")]
    assert requests.to("^/files", "POST") and requests.to("^/files/", "PATCH")
    assert all(auth == f"Bearer {token}" for _, _, auth in api), [x[:2] for x in api if x[2] != f"Bearer {token}"]
    with_query = {urlsplit(u).path for _, u, _ in requests.seen if "token=" in u}
    by_element = {f"/media/{media_id}/poster.jpg", f"/media/{media_id}/storyboard.jpg"}
    assert with_query == {"/api/events"} | (set() if signed else by_element), with_query
    pages = [x for x in requests.seen if x[0] == "GET" and re.fullmatch(r"/(media(/[0-9a-f]{32})?)?", urlsplit(x[1]).path)]
    assert len(pages) >= 3 and all(auth is None and "token" not in u for _, u, auth in pages)
    media_files = requests.to(rf"^/media/{media_id}/.+\.(m3u8|m4s|mp4|jpg|vtt)$")
    assert {urlsplit(u).path.rsplit(".", 1)[1] for _, u, _ in media_files} == {"m3u8", "m4s", "mp4", "jpg", "vtt"}
    if signed:
        assert all("sig=" in u for _, u, _ in media_files)
    else:  # the player's own requests (hls.js, the storyboard) send the header
        assert all(auth == f"Bearer {token}" for _, u, auth in media_files if not u.endswith(".jpg") and "token=" not in u)
        assert all("sig=" not in u for _, u, _ in media_files)


def test_a_wrong_token_says_so_at_once_and_creates_nothing(stack: Callable[..., Stack], open_page: Callable[..., Any],
                                                           tmp_path: Path) -> None:
    s = stack(auth=AUTH)
    page = open_page(DESKTOP)
    requests = Requests(page, s.origin)
    page.goto(f"{s.origin}/#token=wrong-token-{secrets.token_hex(8)}")
    page.wait_for_selector("#session-message:not([hidden])")
    assert page.inner_text("#session-message") == EXPIRED
    screenshot(page, "auth-wrong-token")

    video = tmp_path / "lecture.mp4"
    video.write_bytes(secrets.token_bytes(300_000))
    page.set_input_files("#file", str(video))
    page.fill("#title", "Never stored")
    page.click("#publish")
    page.wait_for_selector("#upload-error:not([hidden])")
    assert page.inner_text("#upload-error-text") == EXPIRED
    assert page.inner_text("#session-message") == EXPIRED
    assert [m for m, _, _ in requests.to("^/files", "POST")] == ["POST"]  # refused, not retried
    assert not requests.to("^/files/", "PATCH")
    assert upload_rows(s) == []
    assert "wrong-token" not in page.url
    audit(page)
    screenshot(page, "auth-wrong-token-upload")


def test_a_token_expiring_mid_upload_keeps_the_bytes_and_a_pushed_token_resumes(
        stack: Callable[..., Stack], open_page: Callable[..., Any], tmp_path: Path) -> None:
    s = stack(auth=AUTH, uploads={"client_chunk_size": 256 * 1024})
    video = tmp_path / "long-lecture.mp4"
    video.write_bytes(secrets.token_bytes(2 * MIB))
    page = open_page(DESKTOP)
    requests = Requests(page, s.origin)
    page.goto(f"{s.origin}/?lang=en&token={platform_token()}")  # the query hand-over works too
    assert page.url == f"{s.origin}/?lang=en"  # taken out of the address, the rest kept
    page.set_input_files("#file", str(video))
    page.fill("#title", "Long lecture")
    throttle_upload(page, 400_000)  # 2 MiB take about 5 s: longer than the token below lives
    push_token(page, platform_token(ttl=2))
    page.click("#publish")

    page.wait_for_selector("#upload-error:not([hidden])", timeout=20_000)
    assert page.inner_text("#upload-error-text") == EXPIRED
    assert page.inner_text("#session-message") == EXPIRED
    assert [m for m, _, _ in requests.to("^/files", "POST")] == ["POST"]
    (row,) = upload_rows(s)
    assert 0 < row.offset < 2 * MIB and row.completed_at is None, row.offset
    kept = row.offset
    screenshot(page, "auth-expired-mid-upload")

    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    before = len(requests.seen)
    page.evaluate("""() => { const notice = document.getElementById('session-message');
      new MutationObserver(() => { if (notice.hidden) sessionStorage.setItem('test.noticeGone', '1') })
        .observe(notice, { attributes: true }) }""")
    push_token(page, platform_token())
    page.wait_for_url(re.compile(r"/media\?uploaded="), timeout=20_000)
    assert page.evaluate("sessionStorage.getItem('test.noticeGone')") == "1", "the notice stayed"
    after = requests.seen[before:]
    assert not [x for x in after if x[0] == "POST" and "/files" in x[1]], "a new upload was created"
    patches = [x for x in after if x[0] == "PATCH"]
    assert patches, "the upload did not continue"
    assert requests.offsets[before:][after.index(patches[0])] == str(kept)  # from where the bytes stopped
    (row,) = upload_rows(s)
    assert row.completed_at is not None and row.offset == 2 * MIB
    assert sha256_file(s.settings.data_dir / row.storage_path) == sha256_file(video)



HOST_PAGE = """<!doctype html><html lang="en"><head><title>LMS</title></head><body>
<h1>Course video</h1>
<iframe id="tusflow" title="tusflow" src="{origin}/#token={token}" style="width:1100px;height:900px"></iframe>
<script>
window.asked = [];
window.addEventListener('message', (event) => {{
  if (event.origin !== '{origin}' || !event.data || event.data.type !== 'tusflow:token-needed') return;
  window.asked.push(event.data.reason);
  document.getElementById('tusflow').contentWindow.postMessage({{ type: 'tusflow:token', token: '{fresh}' }}, '{origin}');
}});
</script></body></html>"""


class Platform:
    """The e-learning platform's page that embeds tusflow, served from another origin on the
    loopback interface (a page Chromium sees as public may not frame a loopback one)."""

    def __init__(self) -> None:
        self.html = b""
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(platform.html)))
                self.end_headers()
                self.wfile.write(platform.html)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="platform", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_an_embedded_page_asks_the_platform_for_a_token_and_goes_on(stack: Callable[..., Stack],
                                                                    open_page: Callable[..., Any],
                                                                    tmp_path: Path) -> None:
    """The platform (another origin, named in [cors] allow_origins) frames the upload page with
    a stale token; the page asks it for a fresh one with postMessage, gets it, and uploads."""
    platform = Platform()
    try:
        s = stack(auth=AUTH, cors={"allow_origins": [platform.origin]})
        stale = platform_token("teacher-9", ttl=-60)
        platform.html = HOST_PAGE.format(origin=s.origin, token=stale, fresh=platform_token("teacher-9")).encode()
        page = open_page(DESKTOP)
        page.goto(f"{platform.origin}/course/7")
        wait_js(page, "window.asked.length > 0", timeout=10, what="the page asking the platform for a token")
        assert page.evaluate("window.asked") == ["expired"]
        inner = next(f for f in page.frames if f.url.startswith(s.origin))
        assert inner.url == f"{s.origin}/"  # the token left the frame's address too
        inner.wait_for_selector("#session-message", state="hidden")

        video = tmp_path / "embedded.mp4"
        video.write_bytes(secrets.token_bytes(200_000))
        inner.set_input_files("#file", str(video))
        inner.fill("#title", "Embedded upload")
        inner.click("#publish")
        inner.wait_for_url(re.compile(r"/media\?uploaded="), timeout=15_000)
        (row,) = upload_rows(s)
        assert row.owner == "teacher-9" and row.completed_at is not None
        assert page.evaluate("window.asked") == ["expired"]  # asked once, not on every request
        screenshot(page, "auth-embedded")
    finally:
        platform.close()
