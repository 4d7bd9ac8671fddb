"""/metrics scraped from real servers while uploads, queues and transcodes change under it."""

from __future__ import annotations

import base64
import threading
from datetime import timedelta
from typing import Callable, Iterator

import httpx
import pytest
from sqlmodel import Session

from models.config import load_settings
from models.db import init_db, make_engine
from models.lifecycle import MediaState
from models.tables import Media
from models.clock import utcnow
from tests.support.metrics import scrape, value
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {**TUS, "Content-Type": "application/offset+octet-stream"}


def _patch(url: str, offset: int, body: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.patch(url, headers={**OCTET, "Upload-Offset": str(offset)}, content=body, timeout=30)


def test_upload_counters_follow_the_uploads(start_server: Callable, redis_server) -> None:
    server = start_server(redis={"url": redis_server.url})
    before = scrape(server.origin)

    created = httpx.post(server.url, headers={**TUS, "Upload-Length": "10"}, timeout=10)
    assert created.status_code == 201
    url = created.headers["Location"]
    assert _patch(url, 0, b"abcd").status_code == 204
    mid = scrape(server.origin)
    assert value(mid, "tusflow_uploads_created_total") == value(before, "tusflow_uploads_created_total") + 1
    assert value(mid, "tusflow_upload_bytes_received_total") == value(before, "tusflow_upload_bytes_received_total") + 4
    assert value(mid, "tusflow_uploads_completed_total") == value(before, "tusflow_uploads_completed_total")
    assert value(mid, "tusflow_uploads_incomplete") == value(before, "tusflow_uploads_incomplete") + 1

    assert _patch(url, 0, b"abcd").status_code == 409  # wrong offset: a failed PATCH
    done = _patch(url, 4, b"efghij")
    assert done.status_code == 204 and 'rel="media"' in done.headers.get("Link", "")
    # A repeated empty PATCH at the end also carries the media link; it completes nothing.
    assert _patch(url, 10, b"").status_code == 204

    after = scrape(server.origin)
    assert value(after, "tusflow_uploads_completed_total") == value(before, "tusflow_uploads_completed_total") + 1
    # The refused PATCH's body was never read, so it is not counted as received.
    assert value(after, "tusflow_upload_bytes_received_total") == value(before, "tusflow_upload_bytes_received_total") + 10
    assert value(after, "tusflow_uploads_failed_total", status="409") == 1
    assert value(after, "tusflow_upload_patch_duration_seconds_count") == \
        value(before, "tusflow_upload_patch_duration_seconds_count") + 4
    assert value(after, "tusflow_upload_patch_duration_seconds_sum") > 0
    assert value(after, "tusflow_uploads_incomplete") == value(before, "tusflow_uploads_incomplete")
    assert value(after, "tusflow_media", state="queued") + value(after, "tusflow_media", state="processing") \
        + value(after, "tusflow_media", state="ready") + value(after, "tusflow_media", state="failed") >= 1

    # Creation With Upload: one POST that brings every byte is created and completed.
    whole = httpx.post(server.url, headers={**OCTET, "Upload-Length": "3"}, content=b"xyz", timeout=10)
    assert whole.status_code == 201
    last = scrape(server.origin)
    assert value(last, "tusflow_uploads_created_total") == value(after, "tusflow_uploads_created_total") + 1
    assert value(last, "tusflow_uploads_completed_total") == value(after, "tusflow_uploads_completed_total") + 1
    assert value(last, "tusflow_upload_bytes_received_total") == value(after, "tusflow_upload_bytes_received_total") + 3


def test_counters_follow_the_upload_events_not_the_answers(start_server: Callable, redis_server) -> None:
    """Counted where things happen: an upload whose creation-with-upload body is refused was
    still created; partials are created but only their final completes; DELETE terminates."""
    server = start_server(redis={"url": redis_server.url})
    before = scrape(server.origin)

    bad = httpx.post(server.url, headers={**OCTET, "Upload-Length": "3",
                                          "Upload-Checksum": "sha1 " + base64.b64encode(b"x" * 20).decode()},
                     content=b"xyz", timeout=10)
    assert bad.status_code == 460 and bad.headers["Location"]
    parts = []
    for chunk in (b"ab", b"cd"):
        r = httpx.post(server.url, headers={**OCTET, "Upload-Length": "2", "Upload-Concat": "partial"},
                       content=chunk, timeout=10)
        assert r.status_code == 201 and r.headers["Upload-Offset"] == "2" and "Link" not in r.headers
        parts.append(r.headers["Location"])
    final = httpx.post(server.url, headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)}, timeout=10)
    assert final.status_code == 201 and 'rel="media"' in final.headers.get("Link", "")
    assert httpx.delete(bad.headers["Location"], headers=TUS, timeout=10).status_code == 204

    after = scrape(server.origin)
    assert value(after, "tusflow_uploads_created_total") == value(before, "tusflow_uploads_created_total") + 4
    assert value(after, "tusflow_uploads_completed_total") == value(before, "tusflow_uploads_completed_total") + 1
    assert value(after, "tusflow_uploads_terminated_total") == value(before, "tusflow_uploads_terminated_total") + 1
    # The refused body was read (and staged) before its checksum failed: received, not stored.
    assert value(after, "tusflow_upload_bytes_received_total") == \
        value(before, "tusflow_upload_bytes_received_total") + 3 + 4
    assert value(after, "tusflow_uploads_active") == 0


def test_active_uploads_and_bytes_move_during_a_patch(start_server: Callable, redis_server) -> None:
    server = start_server(redis={"url": redis_server.url})
    url = httpx.post(server.url, headers={**TUS, "Upload-Length": "8"}, timeout=10).headers["Location"]
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"1234"
        release.wait(20)
        yield b"5678"

    result: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: result.append(_patch(url, 0, body())))
    sender.start()
    try:
        during = wait_until(lambda: (s := scrape(server.origin)) and
                            value(s, "tusflow_upload_bytes_received_total") == 4 and s,
                            timeout=15, what="first half counted while the PATCH is open")
        assert value(during, "tusflow_uploads_active") == 1
    finally:
        release.set()
        sender.join(30)
    assert result and result[0].status_code == 204
    after = scrape(server.origin)
    assert value(after, "tusflow_uploads_active") == 0
    assert value(after, "tusflow_upload_bytes_received_total") == 8
    assert value(after, "tusflow_uploads_completed_total") == 1


def test_queue_length_and_jobs_by_state_come_from_redis(start_server: Callable, redis_server) -> None:
    server = start_server(redis={"url": redis_server.url})
    from rq import Queue
    from redis import Redis
    conn = Redis.from_url(redis_server.url)
    queue = "tusflow-transcode-webhooks"
    before = scrape(server.origin)
    assert value(before, "tusflow_redis_up") == 1
    q = Queue(queue, connection=conn)
    q.enqueue("builtins.print", "queued")
    q.enqueue("builtins.print", "queued")
    q.enqueue_in(timedelta(hours=1), "builtins.print", "later")
    after = scrape(server.origin)
    conn.close()
    assert value(after, "tusflow_queue_length", queue=queue) == value(before, "tusflow_queue_length", queue=queue) + 2
    assert value(after, "tusflow_queue_jobs", queue=queue, state="queued") == 2
    assert value(after, "tusflow_queue_jobs", queue=queue, state="scheduled") == 1
    assert ("tusflow_queue_length", (("queue", "tusflow-transcode"),)) in after

    redis_server.stop()
    gone = scrape(server.origin)
    assert value(gone, "tusflow_redis_up") == 0
    assert ("tusflow_queue_length", (("queue", queue),)) not in gone, "no stale queue numbers"


def test_transcode_histograms_agree_across_processes_and_survive_deletion(
        start_server: Callable, make_config: Callable) -> None:
    config = make_config()
    one, two = start_server(config=config), start_server(config=config)
    settings = load_settings(config, env={})
    engine = make_engine(settings)
    init_db(engine)
    now = utcnow()
    with Session(engine) as s:  # what jobs.py leaves behind: a 4 s transcode of 8 s of video, a failure
        s.add(Media(id="a" * 32, state=MediaState.READY, duration=8.0, started_at=now - timedelta(seconds=4),
                    finished_at=now))
        s.add(Media(id="b" * 32, state=MediaState.FAILED, started_at=now - timedelta(seconds=40),
                    finished_at=now))
        s.add(Media(id="c" * 32, state=MediaState.PROCESSING, started_at=now))
        s.commit()

    first = scrape(one.origin)
    assert value(first, "tusflow_transcode_duration_seconds_count", outcome="ready") == 1
    assert value(first, "tusflow_transcode_duration_seconds_bucket", outcome="ready", le="5.0") == 1
    assert value(first, "tusflow_transcode_duration_seconds_bucket", outcome="ready", le="2.0") == 0
    assert value(first, "tusflow_transcode_duration_seconds_sum", outcome="ready") == pytest.approx(4.0)
    assert value(first, "tusflow_transcode_duration_seconds_count", outcome="failed") == 1
    assert value(first, "tusflow_transcode_duration_seconds_bucket", outcome="failed", le="30.0") == 0
    assert value(first, "tusflow_transcode_realtime_factor_count") == 1
    assert value(first, "tusflow_transcode_realtime_factor_bucket", le="2.0") == 1
    assert value(first, "tusflow_transcode_realtime_factor_bucket", le="1.5") == 0
    assert value(first, "tusflow_transcode_realtime_factor_sum") == pytest.approx(2.0)

    second = scrape(two.origin)  # another process, scraping after the first folded the rows
    transcode = {k: v for k, v in first.items() if k[0].startswith("tusflow_transcode")}
    assert transcode and {k: second[k] for k in transcode} == transcode
    assert scrape(one.origin)["tusflow_transcode_duration_seconds_count", (("outcome", "ready"),)] == 1

    with Session(engine) as s:  # deleting a video does not un-count its transcode
        row = s.get(Media, "a" * 32)
        s.delete(row)
        s.commit()
    assert value(scrape(two.origin), "tusflow_transcode_duration_seconds_count", outcome="ready") == 1
    engine.dispose()


def test_several_server_processes_report_one_sum(start_server: Callable, make_config: Callable,
                                                 tmp_path) -> None:
    """Server processes sharing the multiprocess directory (what ``prepare_multiprocess`` sets
    up for ``tusflow serve --workers N``): whichever one answers the scrape, it reports the
    sums. Two ``serve`` processes stand in for uvicorn's workers here."""
    shared = tmp_path / "prom"
    shared.mkdir()
    config = make_config()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    one, two = start_server(config=config, env=env), start_server(config=config, env=env)
    for server, uploads in ((one, 2), (two, 3)):
        for _ in range(uploads):
            assert httpx.post(server.url, headers={**TUS, "Upload-Length": "2"}, timeout=10).status_code == 201
    url = httpx.post(one.url, headers={**TUS, "Upload-Length": "4"}, timeout=10).headers["Location"]
    assert _patch(url, 0, b"ab").status_code == 204
    assert _patch(url.replace(one.origin, two.origin), 2, b"cd").status_code == 204
    assert len(list(shared.glob("counter_*.db"))) == 2, "each process writes its own file"
    for server in (one, two):
        samples = scrape(server.origin)
        assert value(samples, "tusflow_uploads_created_total") == 6
        assert value(samples, "tusflow_upload_bytes_received_total") == 4
        assert value(samples, "tusflow_uploads_completed_total") == 1
        assert value(samples, "tusflow_upload_patch_duration_seconds_count") == 2
        assert value(samples, "tusflow_uploads_active") == 0
        assert value(samples, "tusflow_uploads_incomplete") == 5, "database gauges are not summed"


def test_prepare_multiprocess_starts_from_an_empty_directory(settings, monkeypatch) -> None:
    import os

    from tus_server.metrics import MULTIPROC_ENV, prepare_multiprocess
    monkeypatch.setenv(MULTIPROC_ENV, "placeholder")  # restored (removed) after the test
    stale = settings.data_dir / "prometheus" / "counter_4242.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by the previous run")
    path = prepare_multiprocess(settings)
    assert os.environ[MULTIPROC_ENV] == str(path) and path.is_dir()
    assert not stale.exists(), "old counts would be added to the new run's"
