"""Signed file URLs in the media API when ``[auth] signed_playback`` is on: present in every
item that has files (list, ids, read, events), absent when it is off, opening the files with
no other credential, and refused when tampered with."""

from __future__ import annotations

import asyncio
import json
from typing import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.store import Store
from tus_server.api.changes import ChangeDetector, Changes
from tus_server.api.events import ChangeFeed
from tus_server.api.items import MediaCatalog
from tus_server.api.jobs import JobQueue
from tus_server.api.links import PlaybackLinks
from tus_server.auth.signing import PlaybackSigner

KEY = "playback-signing-key-for-api-tests-0123456789"
TOKENS = [{"token": "alice-token-0123456789", "user": "alice", "role": "user"},
          {"token": "admin-token-0123456789", "user": "root", "role": "admin"}]
SIGNED = {"playback_signing_key": KEY, "signed_playback": True, "playback_ttl": 600}
FILES = ("poster", "playlist", "storyboard")
MakeApi = Callable[..., Awaitable[httpx.AsyncClient]]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def path(url: str) -> str:
    return urlsplit(url).path


@pytest.fixture
async def signed(make_api: MakeApi) -> httpx.AsyncClient:
    """Auth off, signed playback on: the single-machine install that still wants expiring links."""
    return await make_api(auth=SIGNED)


async def test_items_with_files_carry_a_signature_for_their_own_media(signed: httpx.AsyncClient) -> None:
    store: Store = signed.store  # type: ignore[attr-defined]
    ready = store.media()
    store.ladder(ready)
    uploading = store.upload()
    signer = PlaybackSigner(KEY)
    listed = {i["id"]: i for i in (await signed.get("/api/media")).json()["items"]}
    by_ids = (await signed.get(f"/api/media?ids={ready}")).json()["items"][0]
    one = (await signed.get(f"/api/media/{ready}")).json()
    for item in (listed[ready], by_ids, one):
        assert path(item["poster"]) == f"/media/{ready}/poster.jpg"
        assert path(item["playlist"]) == f"/media/{ready}/master.m3u8"
        assert path(item["storyboard"]) == f"/media/{ready}/storyboard.vtt"
        for name in FILES:
            grant = signer.verify(ready, query(item[name]))  # raises when not a valid signature
            assert grant.media_id == ready and grant.user == ""  # auth off: nobody in particular
        assert item["page"] == f"/media/{ready}"  # a page, not a file: never signed
    # the item keeps its shape: the same keys as without signing
    assert set(one) == set(listed[uploading])
    assert all(listed[uploading][name] is None for name in FILES)


async def test_signed_urls_open_the_files_and_tampering_is_refused(signed: httpx.AsyncClient) -> None:
    store: Store = signed.store  # type: ignore[attr-defined]
    ready, other = store.media(), store.media()
    store.ladder(ready)
    store.ladder(other)
    item = (await signed.get(f"/api/media/{ready}")).json()

    assert (await signed.get(item["poster"])).content.startswith(b"\xff\xd8")
    master = await signed.get(item["playlist"])
    assert master.status_code == 200 and "#EXTM3U" in master.text
    variant_uri = next(line for line in master.text.splitlines() if line and not line.startswith("#"))
    assert "sig=" in variant_uri  # the server carries the signature into the playlist
    assert (await signed.get(f"/media/{ready}/{variant_uri}")).status_code == 200
    vtt = await signed.get(item["storyboard"])
    assert vtt.status_code == 200 and "storyboard.jpg#xywh=" in vtt.text
    # the sprite is opened by the storyboard's own signature (the page carries it over)
    sprite = await signed.get(f"/media/{ready}/storyboard.jpg?{urlsplit(item['storyboard']).query}")
    assert sprite.status_code == 200

    # without the signature: refused (signed playback requires one); with a changed one: refused
    assert (await signed.get(path(item["poster"]))).status_code == 403
    q = query(item["poster"])
    tampered = {**q, "sig": ("A" if q["sig"][0] != "A" else "B") + q["sig"][1:]}
    later = {**q, "exp": str(int(q["exp"]) + 60)}
    for params in (tampered, later, {**q, "u": "mallory"}):
        r = await signed.get(path(item["poster"]), params=params)
        assert r.status_code == 403 and "signature" in r.text, params
    # one media's signature does not open another's files
    assert (await signed.get(f"/media/{other}/poster.jpg", params=q)).status_code == 403


async def test_no_signature_when_signed_playback_is_off(make_api: MakeApi) -> None:
    # a signing key alone (for GET /api/media/<id>/playback) does not sign the API's URLs
    api = await make_api(auth={"playback_signing_key": KEY, "signed_playback": False})
    store: Store = api.store  # type: ignore[attr-defined]
    ready = store.media()
    store.ladder(ready)
    item = (await api.get(f"/api/media/{ready}")).json()
    assert item["poster"] == f"/media/{ready}/poster.jpg"
    assert item["playlist"] == f"/media/{ready}/master.m3u8"
    assert item["storyboard"] == f"/media/{ready}/storyboard.vtt"
    listed = (await api.get("/api/media")).json()["items"]
    assert all("sig=" not in (i[name] or "") for i in listed for name in FILES)
    assert (await api.get(item["poster"])).status_code == 200  # auth off: open as before


async def test_with_auth_each_link_names_its_viewer(make_api: MakeApi) -> None:
    api = await make_api(auth={"enabled": True, "tokens": TOKENS, **SIGNED})
    store: Store = api.store  # type: ignore[attr-defined]
    hers = store.media(owner="alice")
    store.ladder(hers)
    alice = {"Authorization": "Bearer alice-token-0123456789"}
    admin = {"Authorization": "Bearer admin-token-0123456789"}
    item = (await api.get(f"/api/media/{hers}", headers=alice)).json()
    assert all(query(item[name])["u"] == "alice" for name in FILES)
    as_admin = (await api.get("/api/media", headers=admin)).json()["items"][0]
    assert query(as_admin["poster"])["u"] == "root"
    # the signed link needs no token; the bare path without one is refused
    assert (await api.get(item["poster"])).status_code == 200
    assert (await api.get(path(item["poster"]))).status_code == 401
    assert (await api.get(path(item["poster"]), headers=alice)).status_code == 200  # own token still works


async def test_events_are_signed_for_each_subscriber(make_api: MakeApi) -> None:
    api = await make_api()
    ctx = api.store.ctx  # type: ignore[attr-defined]
    detector = ChangeDetector(MediaCatalog(ctx.engine, ctx.layout, JobQueue(ctx.settings, ctx.engine)))
    feed = ChangeFeed(detector, interval=3600, links=PlaybackLinks(PlaybackSigner(KEY)))
    media_id = "a" * 32
    ready = {"id": media_id, "owner": "alice", "poster": f"/media/{media_id}/poster.jpg",
             "playlist": f"/media/{media_id}/master.m3u8", "storyboard": None}
    alice = feed.subscribe(user="alice")
    anyone = feed.subscribe(user="")
    try:
        feed.publish(Changes(items=[ready, {"id": "b" * 32, "owner": "alice", "poster": None}]))
        got = {}
        for name, sub in (("alice", alice), ("anyone", anyone)):
            messages = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
            got[name] = [json.loads(m.split("data: ", 1)[1]) for m in messages]
        signer = PlaybackSigner(KEY)
        assert signer.verify(media_id, query(got["alice"][0]["poster"])).user == "alice"
        assert signer.verify(media_id, query(got["anyone"][0]["playlist"])).user == ""
        assert got["alice"][0]["storyboard"] is None and got["alice"][1]["poster"] is None
        assert ready["poster"] == f"/media/{media_id}/poster.jpg"  # the shared item is not changed
    finally:
        for sub in (alice, anyone):
            feed.unsubscribe(sub)
        await asyncio.sleep(0)
    assert feed._task is None
