"""/api/media: listing (order, pages, uploads), reading, deleting, retrying, id checks."""

from __future__ import annotations

import base64
from typing import Any, Awaitable, Callable

import httpx
import pytest
from sqlmodel import Session

from models.lifecycle import MediaState
from models.tables import Media, Upload
from tests.support.store import RENDITIONS, T0, Store, minutes, new_id
from tus_server.auth.principal import Principal

BAD_IDS = ["ABCDEF0123456789ABCDEF0123456789", "0" * 31, "0" * 33, "g" * 32, "..", "%2e%2e"]


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


async def all_pages(api: httpx.AsyncClient, url: str) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    pages = 0
    while url:
        r = await api.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        url = body["next"]
        pages += 1
        assert pages < 50
    return items, pages


async def test_empty_list(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/media")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["items"] == [] and r.json()["next"] is None


async def test_list_is_newest_first_and_pages_cover_everything_once(api: httpx.AsyncClient, store: Store) -> None:
    expected = []
    for n in range(5):
        expected.append(store.media(created=T0 + minutes(n)))
    twins = sorted([new_id(), new_id()], reverse=True)  # same created_at: ordered by id, descending
    for twin in twins:
        store.media(twin, created=T0 + minutes(10))
    uploading = store.upload(created=T0 + minutes(2.5), length=4000, offset=1000, metadata=meta(title="Half way"))
    store.upload(created=T0 + minutes(20), concat="partial")  # a concatenation part: not a video
    store.upload(created=T0 + minutes(21), completed_at=T0 + minutes(21))  # complete, no media: not listed
    order = [*twins, *reversed(expected[3:]), uploading, *reversed(expected[:3])]

    items, pages = await all_pages(api, "/api/media?limit=2")
    assert [i["id"] for i in items] == order
    assert pages == 4
    whole = (await api.get("/api/media?limit=100")).json()
    assert [i["id"] for i in whole["items"]] == order and whole["next"] is None

    half = next(i for i in items if i["id"] == uploading)
    assert half["state"] == "uploading" and half["title"] == "Half way"
    assert half["progress"] == 25.0 and half["upload"]["offset"] == 1000 and half["upload"]["length"] == 4000

    no_uploads, _ = await all_pages(api, "/api/media?limit=3&uploads=0")
    assert [i["id"] for i in no_uploads] == [i for i in order if i != uploading]


async def test_cursor_survives_rows_added_and_removed_between_pages(api: httpx.AsyncClient, store: Store) -> None:
    ids = [store.media(created=T0 + minutes(n)) for n in range(6)]
    first = (await api.get("/api/media?limit=3")).json()
    assert [i["id"] for i in first["items"]] == ids[::-1][:3]
    store.media(created=T0 + minutes(100))  # newer: belongs before the first page
    assert (await api.delete(f"/api/media/{ids[2]}")).status_code == 204
    second = (await api.get(first["next"])).json()
    assert [i["id"] for i in second["items"]] == [ids[1], ids[0]]
    assert second["next"] is None


@pytest.mark.parametrize("query, reason", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"),
    ("cursor=not-a-cursor", "cursor"), ("cursor=" + base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", "x"]').decode(), "cursor"),
    ("uploads=2", "uploads"), ("ids=" + "z" * 32, "ids"),
])
async def test_bad_list_parameters_are_400_with_a_reason(api: httpx.AsyncClient, query: str, reason: str) -> None:
    r = await api.get(f"/api/media?{query}")
    assert r.status_code == 400
    error = r.json()["error"]
    assert reason in error and "\n" not in error


async def test_list_by_ids_keeps_the_order_asked(api: httpx.AsyncClient, store: Store) -> None:
    a, b = store.media(created=T0), store.media(created=T0 + minutes(1))
    c = store.upload(created=T0 + minutes(2))
    r = await api.get(f"/api/media?ids={c},{a},{new_id()},{b}")
    assert [i["id"] for i in r.json()["items"]] == [c, a, b]


async def test_get_ready_media_describes_playback(api: httpx.AsyncClient, store: Store) -> None:
    media_id = store.media(created=T0, title="Thermodynamics 1", description="Week one")
    r = await api.get(f"/api/media/{media_id}")
    assert r.status_code == 200
    item = r.json()
    assert item["id"] == media_id and item["state"] == "ready" and item["title"] == "Thermodynamics 1"
    assert item["playlist"] == f"/media/{media_id}/master.m3u8"
    assert item["poster"] == f"/media/{media_id}/poster.jpg"
    assert item["storyboard"] == f"/media/{media_id}/storyboard.vtt"
    assert item["page"] == f"/media/{media_id}"
    assert [r["name"] for r in item["renditions"]] == ["240p", "360p"]
    assert "internal" not in item["renditions"][0] and "playlist" not in item["renditions"][0]
    assert item["renditions"][1]["bandwidth"] == RENDITIONS[1]["bandwidth"]
    assert item["duration"] == 12.5 and item["created_at"] == "2026-01-01T12:00:00Z"


async def test_get_states_show_only_what_applies(api: httpx.AsyncClient, store: Store) -> None:
    processing = store.media(state=MediaState.PROCESSING, progress=42.345, eta_seconds=17.0)
    failed = store.media(state=MediaState.FAILED, error="This file is not a video.")
    queued = store.media(state=MediaState.QUEUED)
    p = (await api.get(f"/api/media/{processing}")).json()
    assert (p["state"], p["progress"], p["eta_seconds"], p["playlist"], p["poster"]) == ("processing", 42.3, 17.0, None, None)
    f = (await api.get(f"/api/media/{failed}")).json()
    assert (f["state"], f["error"], f["renditions"]) == ("failed", "This file is not a video.", [])
    q = (await api.get(f"/api/media/{queued}")).json()
    assert q["state"] == "queued" and q["queue_position"] is None  # no Redis here: unknown, not an error


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_are_400(api: httpx.AsyncClient, bad: str) -> None:
    for method, url in (("GET", f"/api/media/{bad}"), ("DELETE", f"/api/media/{bad}"),
                        ("POST", f"/api/media/{bad}/retry")):
        r = await api.request(method, url)
        assert r.status_code in (400, 404), (method, url, r.status_code)
        if bad not in ("..", "%2e%2e"):
            assert r.status_code == 400 and "32" in r.json()["error"]


async def test_unknown_ids_are_404(api: httpx.AsyncClient) -> None:
    missing = new_id()
    assert (await api.get(f"/api/media/{missing}")).status_code == 404
    assert (await api.delete(f"/api/media/{missing}")).json() == {"error": "no such media"}
    assert (await api.post(f"/api/media/{missing}/retry")).status_code == 404


async def test_delete_removes_outputs_original_and_rows(api: httpx.AsyncClient, store: Store) -> None:
    media_id = store.media()
    keep = store.media()
    folder = store.ladder(media_id)
    store.ladder(keep)
    original = store.layout.original_file(media_id)
    assert folder.is_dir() and original.exists()

    r = await api.delete(f"/api/media/{media_id}")
    assert r.status_code == 204, r.text
    assert not folder.exists() and not original.exists()
    with Session(store.engine) as session:
        assert session.get(Media, media_id) is None and session.get(Upload, media_id) is None
    assert (await api.get(f"/api/media/{media_id}")).status_code == 404
    assert (await api.get(f"/media/{media_id}/master.m3u8")).status_code == 404
    assert (await api.delete(f"/api/media/{media_id}")).status_code == 404
    assert store.layout.media_dir(keep).is_dir() and store.layout.original_file(keep).exists()


async def test_delete_of_an_unfinished_upload_points_to_tus_termination(api: httpx.AsyncClient, store: Store) -> None:
    upload_id = store.upload(offset=10)
    r = await api.delete(f"/api/media/{upload_id}")
    assert r.status_code == 409
    assert f"/files/{upload_id}" in r.json()["error"]
    assert store.layout.upload_file(upload_id).exists()


async def test_retry_only_for_failed_media(api: httpx.AsyncClient, store: Store) -> None:
    ready = store.media()
    r = await api.post(f"/api/media/{ready}/retry")
    assert r.status_code == 409 and "ready" in r.json()["error"]


async def test_retry_resets_a_failed_media_even_while_redis_is_down(api: httpx.AsyncClient, store: Store) -> None:
    failed = store.media(state=MediaState.FAILED, error="ffmpeg crashed")
    r = await api.post(f"/api/media/{failed}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "queued" and r.json()["error"] is None
    with Session(store.engine) as session:
        row = session.get(Media, failed)
        assert row is not None and row.state == MediaState.QUEUED and row.enqueued_at is None


async def test_retry_and_delete_go_through_the_real_queue(make_api: Callable[..., Awaitable[httpx.AsyncClient]],
                                                          redis_server: Any) -> None:
    import redis
    api = await make_api(redis={"url": redis_server.url})
    store: Store = api.store  # type: ignore[attr-defined]
    first = store.media(state=MediaState.FAILED, error="boom", created=T0)
    second = store.media(state=MediaState.FAILED, error="boom", created=T0 + minutes(1))
    assert (await api.post(f"/api/media/{first}/retry")).status_code == 202
    r = await api.post(f"/api/media/{second}/retry")
    assert r.status_code == 202 and r.json()["queue_position"] == 2
    listed = {i["id"]: i for i in (await api.get("/api/media")).json()["items"]}
    assert (listed[first]["queue_position"], listed[second]["queue_position"]) == (1, 2)

    client = redis.Redis.from_url(redis_server.url)
    queue_key = f"rq:queue:{api.settings.redis.queue}"  # type: ignore[attr-defined]
    assert client.llen(queue_key) == 2
    assert (await api.delete(f"/api/media/{first}")).status_code == 204
    jobs = [j.decode() for j in client.lrange(queue_key, 0, -1)]
    assert len(jobs) == 1 and first not in jobs[0] and second in jobs[0]
    assert (await api.get(f"/api/media/{second}")).json()["queue_position"] == 1
    client.close()


TOKENS = [{"token": "alice-token-0123456789", "user": "alice", "role": "user"},
          {"token": "admin-token-0123456789", "user": "root", "role": "admin"}]


async def test_users_see_and_manage_only_their_own(make_api: Callable[..., Awaitable[httpx.AsyncClient]]) -> None:
    # The auth middleware decides who is asking; the API applies it (the principal is set both
    # ways so this holds whether or not this build wires the middleware in).
    alice = await make_api(Principal(user="alice", role="user"), auth={"enabled": True, "tokens": TOKENS})
    alice.headers["Authorization"] = "Bearer alice-token-0123456789"
    store: Store = alice.store  # type: ignore[attr-defined]
    hers = store.media(owner="alice", created=T0)
    his = store.media(owner="bob", created=T0 + minutes(1))
    her_upload = store.upload(owner="alice", created=T0 + minutes(2))
    store.upload(owner="bob", created=T0 + minutes(3))

    listed = (await alice.get("/api/media")).json()["items"]
    assert [i["id"] for i in listed] == [her_upload, hers]
    assert (await alice.get(f"/api/media/{his}")).status_code == 404
    assert (await alice.get(f"/api/media?ids={his},{hers}")).json()["items"][0]["id"] == hers
    assert (await alice.delete(f"/api/media/{his}")).status_code == 404
    assert (await alice.post(f"/api/media/{his}/retry")).status_code == 404
    with Session(store.engine) as session:
        assert session.get(Media, his) is not None
    assert (await alice.delete(f"/api/media/{hers}")).status_code == 204
