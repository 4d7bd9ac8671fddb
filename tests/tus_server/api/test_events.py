"""Live updates: the change detector, the bounded fan-out, and /api/events end to end against a
real ``tusflow serve`` process sharing the SQLite file with this test."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from sqlmodel import Session, delete

from models.config import Settings, load_settings
from models.db import make_engine
from models.layout import Layout
from models.lifecycle import MediaState
from models.tables import Media, Upload
from tests.support.store import Store, new_id
from tus_server.api.access import Viewer
from tus_server.api.changes import ChangeDetector
from tus_server.api.events import ChangeFeed, EventStream, Subscriber
from tus_server.api.items import MediaCatalog
from tus_server.api.jobs import JobQueue
from tus_server.context import AppContext


class Direct(Store):
    """The Store helpers on an AppContext, without an app."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.engine = ctx.engine
        self.layout = ctx.layout


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    context = AppContext.build(settings)
    yield context
    context.close()


@pytest.fixture
def db(ctx: AppContext) -> Direct:
    return Direct(ctx)


@pytest.fixture
def detector(ctx: AppContext) -> ChangeDetector:
    return ChangeDetector(MediaCatalog(ctx.engine, ctx.layout, JobQueue(ctx.settings, ctx.engine)))


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_detector_reports_inserts_updates_and_deletes(detector: ChangeDetector, db: Direct) -> None:
    old = db.media(state=MediaState.READY)
    assert not detector.poll()  # the first look is the baseline
    assert not detector.poll()

    fresh = db.media(state=MediaState.QUEUED)
    changes = detector.poll()
    assert [i["id"] for i in changes.items] == [fresh] and changes.items[0]["state"] == "queued"
    assert not detector.poll()

    db.update(fresh, state=MediaState.PROCESSING, progress=12.0, updated_at=now())
    assert [(i["id"], i["state"], i["progress"]) for i in detector.poll().items] == [(fresh, "processing", 12.0)]

    # a writer that forgets updated_at is still seen while the row is active
    db.update(fresh, progress=55.0)
    assert [i["progress"] for i in detector.poll().items] == [55.0]

    db.update(fresh, state=MediaState.READY, progress=100.0)
    assert [i["state"] for i in detector.poll().items] == ["ready"]

    with Session(db.engine) as session:
        session.exec(delete(Media).where(Media.id == old))  # type: ignore[call-overload]
        session.commit()
    changes = detector.poll()
    assert changes.deleted == [(old, None)] and not changes.items


def test_detector_sees_a_change_committed_late_with_an_older_stamp(detector: ChangeDetector, db: Direct) -> None:
    a = db.media(state=MediaState.READY, created=now() - timedelta(minutes=5))
    b = db.media(state=MediaState.READY, created=now() - timedelta(minutes=5))
    detector.poll()
    db.update(a, title="new title", updated_at=now())
    assert [i["id"] for i in detector.poll().items] == [a]
    # b's transaction stamped earlier than a's but committed after the detector looked
    db.update(b, title="late", updated_at=now() - timedelta(seconds=3))
    assert [(i["id"], i["title"]) for i in detector.poll().items] == [(b, "late")]


def test_detector_follows_uploads_until_they_become_media(detector: ChangeDetector, db: Direct) -> None:
    detector.poll()
    upload_id = db.upload(length=1000, offset=0)
    items = detector.poll().items
    assert [(i["id"], i["state"], i["progress"]) for i in items] == [(upload_id, "uploading", 0.0)]
    with Session(db.engine) as session:
        row = session.get(Upload, upload_id)
        assert row is not None
        row.offset = 400
        session.add(row)
        session.commit()
    assert [i["progress"] for i in detector.poll().items] == [40.0]
    # completion: the upload row is complete and a media row with the same id appears
    with Session(db.engine) as session:
        row = session.get(Upload, upload_id)
        assert row is not None
        row.offset, row.completed_at = 1000, now()
        session.add(row)
        session.add(Media(id=upload_id, title="done", size=1000, state=MediaState.QUEUED))
        session.commit()
    changes = detector.poll()
    assert [(i["id"], i["state"]) for i in changes.items] == [(upload_id, "queued")]
    assert changes.deleted == []
    # an upload terminated with tus DELETE disappears
    gone = db.upload(owner="carol")
    detector.poll()
    with Session(db.engine) as session:
        session.exec(delete(Upload).where(Upload.id == gone))  # type: ignore[call-overload]
        session.commit()
    assert detector.poll().deleted == [(gone, "carol")]


async def test_a_slow_subscriber_gets_resync_instead_of_a_backlog() -> None:
    sub = Subscriber(None, asyncio.Queue(3))
    for n in range(10):
        sub.offer(f"event: media\ndata: {n}\n\n")
    drained = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert drained == ["event: resync\ndata: {}\n\n"]
    assert sub.overflowed


async def test_feed_delivers_only_what_each_subscriber_may_see(detector: ChangeDetector) -> None:
    from tus_server.api.changes import Changes
    feed = ChangeFeed(detector, interval=3600)
    everyone = feed.subscribe()
    alice = feed.subscribe(viewer=Viewer("alice"))
    one = feed.subscribe(frozenset({"a" * 32}))
    try:
        feed.publish(Changes(items=[{"id": "a" * 32, "owner": "bob"}, {"id": "b" * 32, "owner": "alice"}],
                             deleted=[("c" * 32, "bob")]))
        got = {name: [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
               for name, sub in (("everyone", everyone), ("alice", alice), ("one", one))}
        assert len(got["everyone"]) == 3
        assert len(got["alice"]) == 1 and '"b' in got["alice"][0]
        assert len(got["one"]) == 1 and '"a' in got["one"][0]
    finally:
        for sub in (everyone, alice, one):
            feed.unsubscribe(sub)
    assert feed._task is None  # the detector stops with the last listener


async def test_stream_sends_retry_heartbeats_and_ends_on_shutdown(detector: ChangeDetector) -> None:
    import threading
    stopping = threading.Event()
    feed = ChangeFeed(detector, interval=3600)
    stream = EventStream(feed, stopping, heartbeat=0.2)
    sub = feed.subscribe()
    chunks: list[str] = []

    async def read() -> None:
        async for chunk in stream._stream(sub):
            chunks.append(chunk)
            if sum(c.startswith(": heartbeat") for c in chunks) == 2:
                stopping.set()
    await asyncio.wait_for(read(), timeout=5)
    assert chunks[0].startswith("retry: ")
    assert sum(c.startswith(": heartbeat") for c in chunks) == 2
    assert sub not in feed.subscribers


def read_events(lines: Iterator[str], wanted: Callable[[str, Any], bool], timeout: float) -> list[tuple[str, Any]]:
    """Parse SSE lines until ``wanted(event, data)``; bounded by timeout (and the read timeout)."""
    seen: list[tuple[str, Any]] = []
    event, data = "message", ""
    deadline = time.monotonic() + timeout
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "":
            if data:
                payload = json.loads(data)
                seen.append((event, payload))
                if wanted(event, payload):
                    return seen
            event, data = "message", ""
    raise AssertionError(f"event not seen within {timeout}s; got {seen}")


@pytest.mark.e2e
def test_events_stream_pushes_changes_made_in_the_database(start_server: Callable[..., Any],
                                                           make_config: Callable[..., Path]) -> None:
    config = make_config()
    server = start_server(config)
    settings = load_settings(config, env={})
    engine = make_engine(settings)
    db = Direct(AppContext(settings=settings, engine=engine, layout=Layout(settings.data_dir)))
    media_id = new_id()
    try:
        with httpx.Client(base_url=server.origin, timeout=httpx.Timeout(10, read=6)) as client:
            with client.stream("GET", "/api/events", headers={"Accept": "text/event-stream"}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                assert r.headers["cache-control"].startswith("no-cache")
                lines = r.iter_lines()
                assert next(lines).startswith("retry:")
                time.sleep(1.2)  # let the detector take its baseline
                started = time.monotonic()
                db.media(media_id, state=MediaState.QUEUED)
                seen = read_events(lines, lambda e, d: e == "media" and d["id"] == media_id, timeout=5)
                assert time.monotonic() - started < 4
                assert seen[-1][1]["state"] == "queued"
                db.update(media_id, state=MediaState.PROCESSING, progress=30.0, eta_seconds=9.0,
                          updated_at=datetime.now(timezone.utc))
                seen = read_events(lines, lambda e, d: e == "media" and d.get("state") == "processing", timeout=5)
                assert seen[-1][1]["progress"] == 30.0
                assert httpx.delete(f"{server.origin}/api/media/{media_id}").status_code == 204
                read_events(lines, lambda e, d: e == "delete" and d["id"] == media_id, timeout=5)
    finally:
        engine.dispose()


@pytest.mark.e2e
def test_open_event_streams_do_not_hold_up_shutdown(start_server: Callable[..., Any]) -> None:
    server = start_server()
    with httpx.Client(base_url=server.origin, timeout=httpx.Timeout(10, read=10)) as client:
        with client.stream("GET", "/api/events") as r:
            assert r.status_code == 200
            next(r.iter_lines())
            started = time.monotonic()
            server.stop()
            took = time.monotonic() - started
    assert took < 5, f"shutdown took {took:.1f}s with an event stream open"
    assert server.proc.popen.returncode is not None
