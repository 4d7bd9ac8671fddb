"""Ownership in the media API, the player page and HLS delivery; signed playback links through
the real app; "my unfinished uploads"."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlmodel import Session

from models.lifecycle import MediaState
from models.tables import Media
from tus_server.auth.signing import PlaybackSigner

from tests.support.apphelp import TUS, MakeClient, bearer, make_client, new_upload, patch  # noqa: F401
from tests.support.credentials import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, SERVICE_TOKEN, SIGNING_KEY, hs_token

ALICE_MEDIA = "1" * 32
BOB_MEDIA = "2" * 32
MASTER = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/index.m3u8\n"
VARIANT = ('#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:6.0,\nseg_00000.m4s\n'
           "#EXT-X-ENDLIST\n")


def publish(client: httpx.AsyncClient, media_id: str, owner: str) -> None:
    """A ready media item as the transcoder leaves it: the row and the files."""
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    folder: Path = ctx.layout.media_dir(media_id)
    (folder / "360p").mkdir(parents=True)
    (folder / "master.m3u8").write_text(MASTER * 4)  # long enough to be gzipped when asked
    (folder / "360p" / "index.m3u8").write_text(VARIANT)
    (folder / "360p" / "init.mp4").write_bytes(b"\x00\x00\x00\x08ftyp")
    (folder / "360p" / "seg_00000.m4s").write_bytes(b"\x00\x00\x00\x08moof")
    (folder / "poster.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    with Session(ctx.engine) as s:
        s.add(Media(id=media_id, owner=owner, title=f"{owner}'s lecture", state=MediaState.READY, has_poster=True))
        s.commit()


@pytest.fixture
async def client(make_client: MakeClient) -> httpx.AsyncClient:
    c = await make_client()
    publish(c, ALICE_MEDIA, "alice")
    publish(c, BOB_MEDIA, "bob")
    return c


async def test_media_list_shows_own_items_unless_admin(client: httpx.AsyncClient) -> None:
    async def ids(token: str) -> set[str]:
        r = await client.get("/api/media", headers=bearer(token))
        assert r.status_code == 200, r.text
        return {item["id"] for item in r.json()["items"]}
    assert await ids(ALICE_TOKEN) == {ALICE_MEDIA}
    assert await ids(hs_token("bob")) == {BOB_MEDIA}
    assert await ids(ADMIN_TOKEN) == {ALICE_MEDIA, BOB_MEDIA}
    assert await ids(SERVICE_TOKEN) == {ALICE_MEDIA, BOB_MEDIA}
    assert await ids(hs_token("carol")) == set()
    r = await client.get("/api/media")
    assert r.status_code == 401 and r.json()["error"].startswith("authentication required")


async def test_media_get_delete_retry_are_404_for_others(client: httpx.AsyncClient) -> None:
    url = f"/api/media/{ALICE_MEDIA}"
    assert (await client.get(url, headers=bearer(BOB_TOKEN))).status_code == 404
    assert (await client.post(f"{url}/retry", headers=bearer(BOB_TOKEN))).status_code == 404
    assert (await client.delete(url, headers=bearer(BOB_TOKEN))).status_code == 404
    assert (await client.get(url, headers=bearer(ALICE_TOKEN))).json()["title"] == "alice's lecture"
    assert (await client.get(url, headers=bearer(ADMIN_TOKEN))).status_code == 200
    assert (await client.post(f"{url}/retry", headers=bearer(ALICE_TOKEN))).status_code == 409  # not failed
    assert (await client.delete(url, headers=bearer(hs_token("alice", ttl=-120)))).status_code == 401
    assert (await client.delete(url, headers=bearer(ALICE_TOKEN))).status_code == 204
    assert (await client.delete(f"/api/media/{BOB_MEDIA}", headers=bearer(ADMIN_TOKEN))).status_code == 204


async def test_player_page_is_404_for_others(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/media/{ALICE_MEDIA}", headers=bearer(ALICE_TOKEN))).status_code == 200
    others = await client.get(f"/media/{ALICE_MEDIA}", headers=bearer(BOB_TOKEN))
    unknown = await client.get(f"/media/{'9' * 32}", headers=bearer(BOB_TOKEN))
    assert others.status_code == unknown.status_code == 404
    assert others.text == unknown.text  # the same page as for an id that does not exist
    assert (await client.get(f"/media/{ALICE_MEDIA}?token={ADMIN_TOKEN}")).status_code == 200
    assert (await client.get(f"/media/{ALICE_MEDIA}?token={BOB_TOKEN}")).status_code == 404
    assert (await client.get(f"/?token={ALICE_TOKEN}")).status_code == 200


async def test_page_shells_load_without_a_credential_and_hold_no_user_data(client: httpx.AsyncClient) -> None:
    """The platform hands the token over in the fragment (#token=), which no request carries,
    and the page keeps it in sessionStorage, which a navigation cannot send: the shells load
    without one, and the player's shell says nothing about the media, not even whether it
    exists, while every data request still needs the token."""
    for path in ("/", "/media"):
        r = await client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assert "alice" not in r.text and "bob" not in r.text
    alice = await client.get(f"/media/{ALICE_MEDIA}")
    unknown = await client.get(f"/media/{'9' * 32}")
    assert alice.status_code == unknown.status_code == 200
    assert "alice's lecture" not in alice.text and "alice" not in alice.text
    assert alice.text.replace(ALICE_MEDIA, "9" * 32) == unknown.text
    # a stale cookie or query token gives the shell too (the page says the session expired) ...
    stale = hs_token("alice", ttl=-120)
    assert "alice's lecture" not in (await client.get(f"/media/{ALICE_MEDIA}?token={stale}")).text
    client.cookies.set("tusflow_token", stale)
    assert (await client.get("/media")).status_code == 200
    client.cookies.clear()
    # ... but a bad Authorization header (never sent by a navigation) is still refused,
    assert (await client.get("/", headers=bearer("wrong-token-0123456789"))).status_code == 401
    # no credential opens no data, and a shell is only for GET/HEAD
    assert (await client.get("/api/media")).status_code == 401
    assert (await client.get(f"/api/media/{ALICE_MEDIA}")).status_code == 401
    assert (await client.get(f"/media/{ALICE_MEDIA}/poster.jpg")).status_code == 401
    assert (await client.post("/media")).status_code == 401
    assert (await client.head("/")).status_code == 200


async def test_delivery_with_a_token_is_for_owner_and_admin(client: httpx.AsyncClient) -> None:
    seg = f"/media/{ALICE_MEDIA}/360p/seg_00000.m4s"
    assert (await client.get(seg, headers=bearer(ALICE_TOKEN))).content == b"\x00\x00\x00\x08moof"
    assert (await client.get(seg, headers=bearer(ADMIN_TOKEN))).status_code == 200
    assert (await client.get(f"{seg}?token={ALICE_TOKEN}")).status_code == 200
    others = await client.get(seg, headers=bearer(BOB_TOKEN))
    assert others.status_code == 404 and others.text == "media not found\n"
    assert (await client.get(seg)).status_code == 401
    assert (await client.get(seg, headers=bearer(hs_token("alice", ttl=-120)))).status_code == 401


async def test_health_and_metrics_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_protected_metrics(make_client: MakeClient) -> None:
    client = await make_client(auth={"protect_metrics": True})
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=bearer(ALICE_TOKEN))).status_code == 403
    assert (await client.get("/metrics", headers=bearer(SERVICE_TOKEN))).status_code == 200


async def play(client: httpx.AsyncClient, master_url: str) -> list[int]:
    """What a player does: the master, then each variant, then its init segment and segments,
    with no credential but the link's own query."""
    statuses = []
    master = await client.get(master_url, headers={"Accept-Encoding": "gzip"})
    statuses.append(master.status_code)
    base = urlsplit(master_url).path.rsplit("/", 1)[0]
    for line in master.text.splitlines():
        if line and not line.startswith("#"):
            variant = await client.get(f"{base}/{line}")
            statuses.append(variant.status_code)
            vbase = f"{base}/{line.split('?')[0].rsplit('/', 1)[0]}"
            for vline in variant.text.splitlines():
                uri = vline.split('URI="')[1].rstrip('"') if 'URI="' in vline else vline
                if uri and not uri.startswith("#"):
                    statuses.append((await client.get(f"{vbase}/{uri}")).status_code)
    return statuses


async def test_signed_playback_link_plays_and_expires(make_client: MakeClient) -> None:
    client = await make_client(auth={"signed_playback": True, "playback_ttl": 120})
    publish(client, ALICE_MEDIA, "alice")
    r = await client.get(f"/api/media/{ALICE_MEDIA}/playback", headers=bearer(hs_token("alice")))
    assert r.status_code == 200
    body = r.json()
    assert body["expires_at"] and "sig=" in body["url"] and "u=alice" in body["url"]
    assert await play(client, body["url"]) == [200] * 13  # master, 4 variants, each with init + 1 segment
    # the same files without a signature (and without a token) are refused
    bare = await client.get(f"/media/{ALICE_MEDIA}/360p/seg_00000.m4s")
    assert bare.status_code == 401
    # another user cannot even get a link
    assert (await client.get(f"/api/media/{ALICE_MEDIA}/playback", headers=bearer(BOB_TOKEN))).status_code == 404
    # tampered: another media id, an extended expiry
    query = body["query"]
    assert (await client.get(f"/media/{BOB_MEDIA}/master.m3u8?{query}")).status_code == 403
    exp = query.split("exp=")[1].split("&")[0]
    longer = query.replace(f"exp={exp}", f"exp={int(exp) + 86400}")
    r = await client.get(f"/media/{ALICE_MEDIA}/master.m3u8?{longer}")
    assert r.status_code == 403 and r.text == "invalid playback signature\n"
    # expired: a link signed an hour ago with a 60 s lifetime
    old = PlaybackSigner(SIGNING_KEY, 60, clock=lambda: 1_000_000_000.0).query_string(ALICE_MEDIA, "alice")
    r = await client.get(f"/media/{ALICE_MEDIA}/360p/seg_00000.m4s?{old}")
    assert r.status_code == 403 and r.text == "playback link expired\n"


async def test_signed_playback_with_auth_disabled(make_client: MakeClient) -> None:
    client = await make_client(auth={"enabled": False, "signed_playback": True})
    publish(client, ALICE_MEDIA, "alice")
    bare = await client.get(f"/media/{ALICE_MEDIA}/master.m3u8")
    assert bare.status_code == 403 and "signed link" in bare.text
    link = (await client.get(f"/api/media/{ALICE_MEDIA}/playback")).json()["url"]
    assert await play(client, link) == [200] * 13


async def test_my_unfinished_uploads(client: httpx.AsyncClient) -> None:
    meta = {"Upload_Metadata": "filename bGVjdHVyZS5tcDQ="}
    first = await new_upload(client, ALICE_TOKEN, 10, **meta)
    assert (await patch(client, ALICE_TOKEN, first, 0, b"abc")).status_code == 204
    done = await new_upload(client, ALICE_TOKEN, 2)
    assert (await patch(client, ALICE_TOKEN, done, 0, b"ok")).status_code == 204
    bobs = await new_upload(client, BOB_TOKEN, 5)

    r = await client.get("/api/uploads/mine", headers=bearer(hs_token("alice")))
    assert r.status_code == 200
    uploads = r.json()["uploads"]
    assert [u["id"] for u in uploads] == [first]
    assert uploads[0]["offset"] == 3 and uploads[0]["length"] == 10
    assert uploads[0]["metadata"] == {"filename": "lecture.mp4"}
    assert uploads[0]["url"].endswith(f"/files/{first}")
    # the listed URL resumes on "another device": HEAD with the owner's token
    head = await client.head(urlsplit(uploads[0]["url"]).path, headers={**TUS, **bearer(ALICE_TOKEN)})
    assert head.headers["upload-offset"] == "3"
    assert [u["id"] for u in (await client.get("/api/uploads/mine", headers=bearer(BOB_TOKEN))).json()["uploads"]] == [bobs]
    assert (await client.get("/api/uploads/mine?user=bob", headers=bearer(ALICE_TOKEN))).status_code == 403
    r = await client.get("/api/uploads/mine?user=alice", headers=bearer(SERVICE_TOKEN))
    assert [u["id"] for u in r.json()["uploads"]] == [first]
    assert (await client.get("/api/uploads/mine")).status_code == 401
