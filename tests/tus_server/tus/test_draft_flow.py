"""A draft upload becomes a ready video exactly like a tus one: real ``tusflow serve``, redis,
``tusflow worker`` and ffmpeg, auth on; the same owner on the media, the same webhooks, and
another user cannot touch the upload."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from models.lifecycle import MediaState
from tests.support.credentials import ALICE_TOKEN, BOB_TOKEN, TOKENS
from tests.support.media import make_clip
from tests.support.stack import TINY_LADDER, Stack
from tests.support.webhooks import SECRET, Receiver

pytestmark = pytest.mark.e2e


def test_draft_upload_is_published_like_a_tus_upload(make_config, redis_server, start_server, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "short.mp4", 320, 240, seconds=2)
    data = clip.read_bytes()
    receiver = Receiver().start()
    config = make_config(
        redis={"url": redis_server.url, "queue": "tusflow-draft"},
        worker={"reconcile_interval": 1.0},
        transcode={"ladder": TINY_LADDER, "preset": "ultrafast", "timeout_min": 120, "storyboard_interval": 1.0},
        auth={"enabled": True, "tokens": TOKENS},
        webhooks={"urls": [receiver.url], "secret": SECRET})
    s = Stack(config, start_server(config))
    try:
        alice = {"Authorization": f"Bearer {ALICE_TOKEN}", "Upload-Draft-Interop-Version": "8"}
        r = httpx.post(s.server.url, headers={**alice, "Upload-Complete": "?0", "Upload-Length": str(len(data)),
                                             "Content-Type": "video/mp4",
                                             "Content-Disposition": 'attachment; filename="week 3.mp4"'},
                       content=data[:100_000], timeout=30)
        assert r.status_code == 201, r.text
        url = r.headers["location"]
        media_id = url.rsplit("/", 1)[-1]
        bob = {"Authorization": f"Bearer {BOB_TOKEN}", "Upload-Draft-Interop-Version": "8"}
        assert httpx.head(url, headers=bob).status_code == 404  # owner check, as for tus
        r = httpx.patch(url, headers={**alice, "Content-Type": "application/partial-upload", "Upload-Offset": "100000",
                                      "Upload-Complete": "?1"}, content=data[100_000:], timeout=30)
        assert r.status_code == 204 and r.headers["upload-complete"] == "?1", r.text
        assert r.headers["link"] == f'</api/media/{media_id}>; rel="media"'
        s.start_worker()
        ready = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=90)
        assert ready.state == MediaState.READY, ready.error
        assert ready.owner == "alice" and ready.filename == "week 3.mp4" and ready.title == "week 3"
        assert ready.filetype == "video/mp4" and ready.size == len(data)
        events = {"upload.created", "upload.completed", "media.ready"}
        got = receiver.wait_for(lambda reqs: events <= {q.json["event"] for q in reqs if q.signature_ok}, timeout=60)
        by_type = {q.json["event"]: q.json for q in got if q.signature_ok}
        for name in events:
            assert media_id in str(by_type[name]["data"]), (name, by_type[name])
    finally:
        s.close()
        receiver.stop()
