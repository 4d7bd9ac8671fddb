"""Delivery from the media store other than a local folder: a ladder in S3 (weed mini) served
through the app (streamed, byte ranges, ETag, 304, signed playback), and ``[delivery]
public_base_url``, where the media JSON and the playlists point at a CDN."""

from __future__ import annotations

import hashlib
import shutil
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from models.config import S3Config
from models.mediastore import S3MediaStore
from tests.support.s3 import S3Server
from tests.support.store import Store
from tus_server.delivery import parse_range, public_playlist

MakeApi = Callable[..., Awaitable[httpx.AsyncClient]]
KEY = "playback-signing-key-for-store-tests-0123456789"
SIGNED = {"playback_signing_key": KEY, "signed_playback": True, "playback_ttl": 600}
CDN = "https://cdn.example.org/tusflow"


def uris(text: str) -> list[str]:
    import re
    found: list[str] = []
    for line in text.splitlines():
        found += re.findall(r'URI="([^"]*)"', line) if line.startswith("#") else ([line] if line.strip() else [])
    return found


@pytest.fixture
def s3(s3_servers: Callable[[str], S3Server]) -> S3Server:
    return s3_servers("seaweedfs")


async def s3_api(make_api: MakeApi, s3: S3Server, **sections: Any) -> tuple[httpx.AsyncClient, str, S3Server, str]:
    """The app on S3 storage with one ready media whose ladder is in the bucket only."""
    prefix = s3.new_prefix("delivery")
    api = await make_api(storage={"backend": "s3", "s3": s3.storage_section(prefix)}, **sections)
    store: Store = api.store  # type: ignore[attr-defined]
    media_id = store.media()
    local = store.ladder(media_id)
    S3MediaStore(S3Config(**s3.storage_section(prefix))).publish_ladder(media_id, local)
    shutil.rmtree(local, ignore_errors=True)
    return api, media_id, s3, prefix


async def test_s3_segments_stream_with_ranges_etag_and_304(make_api: MakeApi, s3: S3Server) -> None:
    api, media_id, server, prefix = await s3_api(make_api, s3)
    body = server.read(f"{prefix}media/{media_id}/360p/seg_00001.m4s")
    assert body is not None and len(body) == 50_000
    url = f"/media/{media_id}/360p/seg_00001.m4s"
    whole = await api.get(url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/iso.segment"
    assert hashlib.sha256(whole.content).hexdigest() == hashlib.sha256(body).hexdigest()
    assert "immutable" in whole.headers["cache-control"] and whole.headers["x-content-type-options"] == "nosniff"
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["last-modified"]
    ranged = await api.get(url, headers={"Range": "bytes=100-1099"})
    assert ranged.status_code == 206 and ranged.content == body[100:1100]
    assert ranged.headers["content-range"] == f"bytes 100-1099/{len(body)}"
    suffix = await api.get(url, headers={"Range": "bytes=-500"})
    assert suffix.status_code == 206 and suffix.content == body[-500:]
    past = await api.get(url, headers={"Range": f"bytes={len(body)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(body)}"
    stale_if_range = await api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale_if_range.status_code == 200 and stale_if_range.content == body
    again = await api.get(url, headers={"If-None-Match": whole.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    head = await api.head(url)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(body)
    assert (await api.get(f"/media/{media_id}/360p/seg_00009.m4s")).status_code == 404
    master = await api.get(f"/media/{media_id}/master.m3u8", headers={"Accept-Encoding": "gzip"})
    assert master.status_code == 200 and master.headers["content-encoding"] == "gzip"
    assert master.content == server.read(f"{prefix}media/{media_id}/master.m3u8")
    assert (await api.get(f"/media/{media_id}/master.m3u8",
                          headers={"Accept-Encoding": "gzip", "If-None-Match": master.headers["etag"]})).status_code == 304


async def test_s3_signed_playback_carries_the_signature_into_every_uri(make_api: MakeApi, s3: S3Server) -> None:
    api, media_id, server, prefix = await s3_api(make_api, s3, auth=SIGNED)
    item = (await api.get(f"/api/media/{media_id}")).json()
    assert (await api.get(f"/media/{media_id}/master.m3u8")).status_code in (401, 403)  # no signature
    master = await api.get(item["playlist"])
    assert master.status_code == 200
    variant = uris(master.text)[0]
    assert "sig=" in variant
    playlist = await api.get(f"/media/{media_id}/{variant}")
    assert playlist.status_code == 200
    segment = [u for u in uris(playlist.text) if ".m4s" in u][0]
    got = await api.get(f"/media/{media_id}/{variant.split('/')[0]}/{segment}")
    assert got.status_code == 200
    assert got.content == server.read(f"{prefix}media/{media_id}/{variant.split('/')[0]}/{segment.split('?')[0]}")


async def test_public_base_url_puts_files_and_segments_on_the_cdn(make_api: MakeApi) -> None:
    api = await make_api(delivery={"public_base_url": CDN + "/"})
    store: Store = api.store  # type: ignore[attr-defined]
    media_id = store.media()
    store.ladder(media_id)
    item = (await api.get(f"/api/media/{media_id}")).json()
    assert item["playlist"] == f"{CDN}/media/{media_id}/master.m3u8"
    assert item["poster"] == f"{CDN}/media/{media_id}/poster.jpg"
    assert item["storyboard"] == f"{CDN}/media/{media_id}/storyboard.vtt"
    # a playlist the app still serves points its media files there, its playlists here
    master = await api.get(f"/media/{media_id}/master.m3u8")
    assert uris(master.text) == ["240p/index.m3u8", "360p/index.m3u8"]
    playlist = await api.get(f"/media/{media_id}/360p/index.m3u8")
    assert uris(playlist.text) == [f"{CDN}/media/{media_id}/360p/init.mp4"] + \
        [f"{CDN}/media/{media_id}/360p/seg_{n:05d}.m4s" for n in range(3)]


async def test_public_base_url_with_signed_playback_keeps_playlists_on_the_app(make_api: MakeApi) -> None:
    api = await make_api(delivery={"public_base_url": CDN}, auth=SIGNED)
    store: Store = api.store  # type: ignore[attr-defined]
    media_id = store.media()
    store.ladder(media_id)
    item = (await api.get(f"/api/media/{media_id}")).json()
    assert urlsplit(item["playlist"]).path == f"/media/{media_id}/master.m3u8" and "sig" in parse_qs(
        urlsplit(item["playlist"]).query)
    master = await api.get(item["playlist"])
    variant = uris(master.text)[1]
    assert variant.startswith("360p/index.m3u8?") and "sig=" in variant
    playlist = await api.get(f"/media/{media_id}/{variant}")
    assert playlist.status_code == 200 and playlist.headers["cache-control"] == "private, no-store"
    assert uris(playlist.text)[1] == f"{CDN}/media/{media_id}/360p/seg_00000.m4s"


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-9", 100, (0, 10)), ("bytes=90-", 100, (90, 100)), ("bytes=-10", 100, (90, 100)),
    ("bytes=50-500", 100, (50, 100)), ("bytes=-500", 100, (0, 100)), ("bytes=9-3", 100, None),
    ("bytes=0-1,5-6", 100, None), ("items=0-1", 100, None), ("bytes=x-1", 100, None), ("bytes=-", 100, None),
])
def test_parse_range(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 100)


def test_public_playlist_moves_media_uris_only() -> None:
    text = ('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:4,\nseg_1.m4s\n'
            '#EXT-X-I-FRAME-STREAM-INF:URI="360p/iframes.m3u8"\n360p/index.m3u8\nhttps://else.where/x.m4s\n')
    out = public_playlist(text, "https://cdn/x/media/id/")
    assert uris(out) == ["https://cdn/x/media/id/init.mp4", "https://cdn/x/media/id/seg_1.m4s",
                         "360p/iframes.m3u8", "360p/index.m3u8", "https://else.where/x.m4s"]
