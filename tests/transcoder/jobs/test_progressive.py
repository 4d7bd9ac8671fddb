"""Progressive publish through a real ``tusflow serve`` + ``tusflow worker``: the media is
playable (webhook, JSON, delivery) before it is ready, and a delete while it is playable
takes everything down and stops the job."""

from __future__ import annotations

import json
import urllib.request
from typing import Callable

import pytest

from models.layout import Layout
from models.lifecycle import MediaState
from tests.support.stack import SLOW_LADDER, upload
from tests.support.httpd import http_get
from tests.support.waiting import wait_until
from tests.support.ffkit import ffmpeg_processes_in
from tests.support.webhooks import SECRET, Receiver


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_playable_webhook_comes_before_ready_and_the_json_shows_each_rendition(
        stack: Callable, start_server: Callable, clips: dict, receiver: Receiver) -> None:
    s = stack(webhooks={"urls": [receiver.url], "secret": SECRET},
              transcode={"ladder": SLOW_LADDER, "first_rung": "240p"})
    server = start_server(config=s.config)
    s.start_worker()
    media_id = upload(server.url, clips["long"])
    got = receiver.wait_for(lambda rs: any(r.json["event"] == "media.ready" for r in rs), 120)
    events = [r.json["event"] for r in got if r.json["data"].get("media_id") == media_id]
    assert "media.playable" in events and "media.ready" in events
    assert events.index("media.playable") < events.index("media.ready"), events
    playable = next(r for r in got if r.json["event"] == "media.playable")
    assert playable.signature_ok
    assert playable.json["data"]["state"] == "playable"
    assert any(r["state"] == "ready" for r in playable.json["data"]["renditions"])

    media = s.media(media_id)
    assert media.state == MediaState.READY and media.playable_at is not None
    assert media.playable_at <= media.finished_at
    status, body = http_get(f"{server.origin}/api/media/{media_id}")
    item = json.loads(body)
    assert status == 200 and item["state"] == "ready"
    assert item["fast_path"]["eligible"] is True and item["fast_path"]["reason"]
    assert [r["state"] for r in item["renditions"]] == ["ready"] * len(item["renditions"])
    assert item["versions"]["ready"] == item["versions"]["total"] == len(item["renditions"])
    status, master = http_get(f"{server.origin}/media/{media_id}/master.m3u8")
    assert status == 200 and b"360p/index.m3u8" in master and b"source/" not in master
    status, metrics = http_get(f"{server.origin}/metrics")
    text = metrics.decode()
    assert status == 200
    assert "tusflow_time_to_playable_seconds_count 1.0" in text, text[-3000:]
    assert "tusflow_time_to_ready_seconds_count 1.0" in text
    playable_s = float(text.split("tusflow_time_to_playable_seconds_sum ")[1].split()[0])
    ready_s = float(text.split("tusflow_time_to_ready_seconds_sum ")[1].split()[0])
    assert 0 < playable_s <= ready_s


def test_delete_while_playable_removes_everything_and_stops_the_job(
        stack: Callable, start_server: Callable, clips: dict) -> None:
    s = stack(transcode={"ladder": SLOW_LADDER, "preset": "medium", "first_rung": "240p"})
    server = start_server(config=s.config)
    worker = s.start_worker()
    media_id = upload(server.url, clips["long"])
    s.wait_state(media_id, (MediaState.PLAYABLE,), timeout=60)
    status, master = http_get(f"{server.origin}/media/{media_id}/master.m3u8")
    assert status == 200 and master.startswith(b"#EXTM3U")  # served while playable
    request = urllib.request.Request(f"{server.origin}/api/media/{media_id}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status in (200, 204)
    layout = Layout(s.settings.data_dir)
    wait_until(lambda: not layout.media_dir(media_id).exists(), 30,
               what="published files gone")
    for scratch in layout.scratch.glob(f"{media_id}.*"):  # the stopped job's ffmpeg is gone
        wait_until(lambda: not ffmpeg_processes_in(scratch / "ladder"), 15, what="ffmpeg gone")
    assert s.media(media_id) is None
    assert http_get(f"{server.origin}/media/{media_id}/master.m3u8")[0] == 404
    assert worker.alive()
