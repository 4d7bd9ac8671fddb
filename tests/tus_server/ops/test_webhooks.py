"""Webhooks: signed, delivered by a real RQ worker, retried after receiver errors, listed and
redelivered from the command line; the receiver is a real HTTP server the tests run."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from typing import Callable

import pytest
from sqlmodel import Session, select

from models.config import ConfigError, Settings, load_settings
from models.db import init_db, make_engine
from models.webhooks import WebhookDelivery
from tests.support.waiting import wait_until
from tests.support.webhooks import SECRET, Receiver, check_signature
from tests.support.procs import TUSFLOW
from models import outbox
from models.redis_conn import connect
from transcoder import webhooks

pytestmark = pytest.mark.e2e


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings)
    init_db(engine)
    return engine


def _row(engine, delivery_id: str) -> WebhookDelivery:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        row = s.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row


# ------------------------------------------------------------------ signing, in process
def test_signature_verifies_and_rejects_tampering_and_replays() -> None:
    body = b'{"id":"x","event":"media.ready"}'
    header = outbox.sign("s3cret", body, int(time.time()))
    assert outbox.verify("s3cret", header, body)
    assert not outbox.verify("other", header, body)
    assert not outbox.verify("s3cret", header, body + b" ")
    old = outbox.sign("s3cret", body, int(time.time()) - 3600)
    assert not outbox.verify("s3cret", old, body)
    assert not outbox.verify("s3cret", "v1=deadbeef", body)


def test_backoff_doubles_up_to_the_cap(settings: Settings) -> None:
    s = settings.replace(webhooks={"retry_base": 30.0, "retry_max": 3600.0})
    assert [outbox.backoff(s, n) for n in (1, 2, 3, 7, 8, 30)] == [30, 60, 120, 1920, 3600, 3600]


def test_urls_without_a_secret_are_refused(make_config: Callable) -> None:
    with pytest.raises(ConfigError, match=r"\[webhooks\] secret"):
        load_settings(make_config(webhooks={"urls": ["http://127.0.0.1:9/x"]}), env={})
    with pytest.raises(ConfigError, match="unknown"):
        load_settings(make_config(webhooks={"urls": ["http://x/"], "secret": "s", "events": ["media.gone"]}),
                      env={})


def test_nothing_is_recorded_without_urls_or_for_unselected_events(settings: Settings,
                                                                  webhook_settings: Callable) -> None:
    engine = _engine(settings)
    assert webhooks.emit(settings, engine, "media.ready", {"media_id": "m"}) == []
    selective = webhook_settings(events=["media.failed"])
    assert webhooks.emit(selective, engine, "media.ready", {"media_id": "m"}) == []
    with Session(engine) as s:
        assert s.exec(select(WebhookDelivery)).all() == []
    engine.dispose()


# ------------------------------------------------------------------ delivery by a real worker
def test_signed_delivery_reaches_the_receiver(webhook_settings: Callable, receiver: Receiver,
                                              start_worker: Callable) -> None:
    settings = webhook_settings()
    engine = _engine(settings)
    start_worker(settings)
    [delivery_id] = webhooks.emit(settings, engine, "media.ready", {"media_id": "abc", "title": "Ünïcode"},
                                subject="abc")

    [got] = receiver.wait_for(lambda rs: len(rs) >= 1)
    assert got.signature_ok and got.status == 200
    assert got.headers["content-type"] == "application/json"
    assert got.headers["tusflow-delivery"] == delivery_id
    assert got.headers["tusflow-event"] == "media.ready"
    body = got.json
    assert body["id"] == delivery_id and body["event"] == "media.ready"
    assert body["data"] == {"media_id": "abc", "title": "Ünïcode"}
    assert body["created_at"].endswith("Z")
    # Tampering with one byte breaks the signature the receiver checks.
    assert not check_signature(SECRET, got.headers["tusflow-signature"], got.body.replace(b"abc", b"abd"))

    row = wait_until(lambda: (r := _row(engine, delivery_id)).delivered_at and r, what="delivered row")
    assert row.attempts == 1 and row.last_status == 200 and row.failed_at is None
    time.sleep(1.0)  # nothing more arrives after a 2xx
    assert len(receiver.requests) == 1
    engine.dispose()


def test_receiver_errors_are_retried_with_backoff_and_the_same_id(
        webhook_settings: Callable, receiver: Receiver, start_worker: Callable) -> None:
    settings = webhook_settings(retry_base=1.5, retry_max=10.0)
    engine = _engine(settings)
    receiver.plan = [500, 503]
    start_worker(settings)
    [delivery_id] = webhooks.emit(settings, engine, "upload.completed", {"upload_id": "u1"}, subject="u1")

    got = receiver.wait_for(lambda rs: any(r.status == 200 for r in rs), timeout=40)
    assert [r.status for r in got] == [500, 503, 200]
    assert {r.delivery for r in got} == {delivery_id}
    assert len({r.body for r in got}) == 1, "every attempt sends the byte-identical body"
    assert all(r.signature_ok for r in got)
    # Backoff: 1.5 s then 3 s (RQ schedules in whole seconds, so allow a second early).
    gaps = [b.at - a.at for a, b in zip(got, got[1:])]
    assert gaps[0] >= 0.5 and gaps[1] >= 2.0, gaps
    assert receiver.acked == {delivery_id: 1} and list(receiver.applied) == [delivery_id]

    row = wait_until(lambda: (r := _row(engine, delivery_id)).delivered_at and r, what="delivered row")
    assert row.attempts == 3 and row.last_status == 200 and row.last_error is None
    time.sleep(1.5)
    assert len(receiver.requests) == 3, "a delivered webhook is not sent again"
    engine.dispose()


def test_duplicate_wakeups_send_once(webhook_settings: Callable, receiver: Receiver,
                                     start_worker: Callable) -> None:
    """A lost-and-found or doubled RQ job must not deliver twice: the row decides."""
    settings = webhook_settings()
    engine = _engine(settings)
    [delivery_id] = webhooks.emit(settings, engine, "media.failed", {"media_id": "m"})
    conn = connect(settings)
    for _ in range(3):
        webhooks._wake(settings, conn, delivery_id)
    conn.close()
    start_worker(settings)
    receiver.wait_for(lambda rs: len(rs) >= 1)
    wait_until(lambda: _row(engine, delivery_id).delivered_at, what="delivered row")
    time.sleep(1.5)
    assert receiver.acked == {delivery_id: 1} and len(receiver.requests) == 1
    engine.dispose()


def test_gives_up_after_max_age_then_redeliver_from_the_cli(
        webhook_settings: Callable, receiver: Receiver, start_worker: Callable) -> None:
    settings = webhook_settings(max_age=3, retry_base=1.0, retry_max=1.0)
    engine = _engine(settings)
    receiver.default = 500
    start_worker(settings)
    first = webhooks.emit(settings, engine, "media.deleted", {"media_id": "m1"})[0]
    second = webhooks.emit(settings, engine, "media.deleted", {"media_id": "m2"})[0]
    config = str(settings.config_path)

    for delivery_id in (first, second):
        wait_until(lambda: _row(engine, delivery_id).failed_at, timeout=30, what="given up")
    assert not receiver.applied and {r.status for r in receiver.requests} == {500}
    tries = [_row(engine, d).attempts for d in (first, second)]
    assert all(n >= 1 for n in tries) and len(receiver.requests) == sum(tries), tries
    row = _row(engine, first)
    assert row.last_status == 500 and "HTTP 500" in (row.last_error or "") and row.delivered_at is None

    listing = subprocess.run([TUSFLOW, "webhooks", "list", "--failed", "--config", config],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert first in listing.stdout and second in listing.stdout and "failed" in listing.stdout

    receiver.default = 200
    one = subprocess.run([TUSFLOW, "webhooks", "redeliver", first, "--config", config],
                         capture_output=True, text=True, timeout=60)
    assert one.returncode == 0, one.stdout + one.stderr
    receiver.wait_for(lambda rs: first in receiver.acked)
    wait_until(lambda: _row(engine, first).delivered_at, what="first redelivered")
    assert _row(engine, second).failed_at is not None, "redeliver ID touches only that delivery"

    rest = subprocess.run([TUSFLOW, "webhooks", "redeliver", "--all-failed", "--config", config],
                          capture_output=True, text=True, timeout=60)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert second in rest.stdout and first not in rest.stdout
    wait_until(lambda: _row(engine, second).delivered_at, what="second redelivered")

    assert receiver.acked == {first: 1, second: 1}
    assert receiver.applied[first]["id"] == first and receiver.applied[second]["data"] == {"media_id": "m2"}
    bodies = {r.body for r in receiver.requests if r.delivery == first}
    assert len(bodies) == 1, "a redelivery sends the same body as the failed attempts"

    unknown = subprocess.run([TUSFLOW, "webhooks", "redeliver", "f" * 32, "--config", config],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "no delivery" in unknown.stderr
    engine.dispose()


def test_redis_down_at_emit_time_is_recovered_by_the_sweep(
        webhook_settings: Callable, receiver: Receiver, start_worker: Callable, redis_server) -> None:
    settings = webhook_settings()
    engine = _engine(settings)
    redis_server.stop()
    [delivery_id] = webhooks.emit(settings, engine, "upload.created", {"upload_id": "u"})
    assert _row(engine, delivery_id).enqueued_at is None, "the row stays, waiting for the sweep"

    redis_server.start()
    start_worker(settings)
    swept = subprocess.run([TUSFLOW, "webhooks", "sweep", "--config", str(settings.config_path)],
                           capture_output=True, text=True, timeout=60)
    assert swept.returncode == 0 and "1 deliveries" in swept.stdout, swept.stdout + swept.stderr
    receiver.wait_for(lambda rs: delivery_id in receiver.acked)
    assert webhooks.sweep(settings, engine) == [], "nothing left to sweep"
    engine.dispose()


def test_sweep_rewakes_overdue_deliveries_once(webhook_settings: Callable) -> None:
    settings = webhook_settings()
    engine = _engine(settings)
    [delivery_id] = webhooks.emit(settings, engine, "media.ready", {"media_id": "m"})
    with Session(engine) as s:  # the wake-up was enqueued, then Redis lost it long ago
        row = s.get(WebhookDelivery, delivery_id)
        assert row is not None and row.enqueued_at is not None
        row.next_attempt_at = row.created_at - timedelta(hours=1)
        s.add(row)
        s.commit()
    assert webhooks.sweep(settings, engine, grace=60) == [delivery_id]
    assert webhooks.sweep(settings, engine, grace=60) == [], "swept rows are due again, not overdue"
    engine.dispose()


def test_list_shows_pending_deliveries(webhook_settings: Callable) -> None:
    settings = webhook_settings()
    engine = _engine(settings)
    with Session(engine) as s:
        ids = outbox.record(s, settings, "media.ready", {"media_id": "m"}, subject="m")
        s.commit()
    out = subprocess.run([TUSFLOW, "webhooks", "list", "--pending", "--config", str(settings.config_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith(ids[0]))
    assert "media.ready" in line and "pending" in line
    body = json.loads(_row(engine, ids[0]).payload)
    assert body["id"] == ids[0]
    engine.dispose()


# ------------------------------------------------------------------ emitted by the server
def test_a_finished_upload_and_its_transcode_are_announced(
        webhook_settings: Callable, receiver: Receiver, start_worker: Callable, start_server: Callable,
        tmp_path) -> None:
    import base64

    import httpx

    from tests.support.media import make_clip
    clip = make_clip(tmp_path / "lecture.mp4", width=160, height=120, seconds=1.0, fps=10).read_bytes()
    settings = webhook_settings(events=["upload.completed", "media.ready", "media.failed"])
    cfg = settings.config_path.read_text() + (
        '\n[transcode]\npreset = "ultrafast"\n'
        'ladder = [{ name = "120p", height = 120, video_kbps = 200, audio_kbps = 64 }]\n')
    settings.config_path.write_text(cfg)
    server = start_server(config=settings.config_path)
    start_worker(load_settings(settings.config_path, env={}), tusflow=True)  # serves both queues
    meta = "filename " + base64.b64encode("Lecture 1.mp4".encode()).decode()
    created = httpx.post(server.url, headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(clip)),
                                              "Upload-Metadata": meta}, timeout=10)
    url = created.headers["Location"]
    upload_id = url.rstrip("/").rsplit("/", 1)[1]
    octet = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    done = httpx.patch(url, content=clip, timeout=30, headers={**octet, "Upload-Offset": "0"})
    assert done.status_code == 204

    got = receiver.wait_for(lambda rs: len(rs) >= 2, timeout=90)
    assert all(r.signature_ok for r in got)
    events = {r.headers["tusflow-event"]: r.json for r in got}
    assert sorted(events) == ["media.ready", "upload.completed"], [r.body[:300] for r in got]
    completed = events["upload.completed"]["data"]
    assert completed["upload_id"] == upload_id and completed["media_id"] == upload_id
    assert completed["length"] == len(clip) and completed["metadata"] == {"filename": "Lecture 1.mp4"}
    assert completed["completed_at"] is not None
    ready = events["media.ready"]["data"]
    assert ready["media_id"] == upload_id and ready["state"] == "ready"
    assert ready["renditions"] and ready["duration"] == pytest.approx(1.0, abs=0.3)
    # Completing the same upload again (an empty PATCH at the end) announces nothing new.
    httpx.patch(url, content=b"", timeout=10, headers={**octet, "Upload-Offset": str(len(clip))})
    time.sleep(1.0)
    assert len(receiver.requests) == 2


def test_created_and_deleted_are_announced(webhook_settings: Callable, receiver: Receiver,
                                           start_worker: Callable, start_server: Callable) -> None:
    import httpx
    settings = webhook_settings(events=["upload.created", "media.deleted"])
    server = start_server(config=settings.config_path)
    start_worker(settings, tusflow=True)
    tus = {"Tus-Resumable": "1.0.0"}
    octet = {**tus, "Content-Type": "application/offset+octet-stream"}
    # A partial upload (a piece of a parallel upload) is not announced; the final one is.
    part = httpx.post(server.url, headers={**octet, "Upload-Length": "3", "Upload-Concat": "partial"},
                      content=b"abc", timeout=10).headers["Location"]
    final = httpx.post(server.url, headers={**tus, "Upload-Concat": f"final;{part}"}, timeout=10)
    assert final.status_code == 201
    media_id = final.headers["Location"].rstrip("/").rsplit("/", 1)[1]

    created = receiver.wait_for(lambda rs: len(rs) >= 1)
    assert [r.headers["tusflow-event"] for r in created] == ["upload.created"]
    assert created[0].json["data"]["upload_id"] == media_id

    gone = httpx.delete(f"{server.origin}/api/media/{media_id}", timeout=10)
    assert gone.status_code == 204, gone.text
    got = receiver.wait_for(lambda rs: len(rs) >= 2)
    assert got[1].headers["tusflow-event"] == "media.deleted" and got[1].signature_ok
    assert got[1].json["data"]["media_id"] == media_id
    time.sleep(1.0)
    assert len(receiver.requests) == 2
