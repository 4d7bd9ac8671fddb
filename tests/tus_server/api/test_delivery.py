"""/media/{id}/{path}: types, gzip, Range, caching, nosniff, readiness, and no way out of the
media folder."""

from __future__ import annotations

import gzip
import os
from typing import Awaitable, Callable

import httpx
import pytest

from models.lifecycle import MediaState
from tests.support.store import Store, new_id
from tus_server.auth.signing import PlaybackSigner


@pytest.fixture
def ready(store: Store) -> str:
    media_id = store.media()
    store.ladder(media_id)
    return media_id


@pytest.mark.parametrize("path, content_type, cache", [
    ("master.m3u8", "application/vnd.apple.mpegurl", "public, max-age=60"),
    ("360p/index.m3u8", "application/vnd.apple.mpegurl", "public, max-age=60"),
    ("360p/init.mp4", "video/mp4", "immutable"),
    ("360p/seg_00001.m4s", "video/iso.segment", "immutable"),
    ("240p/seg_00000.ts", "video/mp2t", "immutable"),
    ("storyboard.vtt", "text/vtt; charset=utf-8", "max-age=3600"),
    ("storyboard.jpg", "image/jpeg", "max-age=3600"),
    ("poster.jpg", "image/jpeg", "max-age=3600"),
])
async def test_types_cache_and_nosniff(api: httpx.AsyncClient, store: Store, ready: str, path: str,
                                       content_type: str, cache: str) -> None:
    r = await api.get(f"/media/{ready}/{path}", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.headers["x-content-type-options"] == "nosniff"
    assert cache in r.headers["cache-control"]
    assert r.content == (store.layout.media_dir(ready) / path).read_bytes()
    head = await api.head(f"/media/{ready}/{path}", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(r.content)


async def test_playlists_are_gzipped_when_accepted(api: httpx.AsyncClient, store: Store, ready: str) -> None:
    plain = (store.layout.media_dir(ready) / "master.m3u8").read_bytes()
    assert len(plain) > 256
    raw = await api.get(f"/media/{ready}/master.m3u8", headers={"Accept-Encoding": "gzip, br"})
    assert raw.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in raw.headers["vary"].lower()
    assert raw.content == plain  # httpx decodes; check the wire form too
    async with api.stream("GET", f"/media/{ready}/master.m3u8", headers={"Accept-Encoding": "gzip"}) as s:
        wire = b"".join([chunk async for chunk in s.aiter_raw()])
    assert gzip.decompress(wire) == plain and len(wire) < len(plain)
    for refused in ("identity", "gzip;q=0", "br", ""):
        r = await api.get(f"/media/{ready}/master.m3u8", headers={"Accept-Encoding": refused})
        assert "content-encoding" not in r.headers, refused
        assert r.content == plain


async def test_playlist_revalidates_with_etag(api: httpx.AsyncClient, ready: str) -> None:
    first = await api.get(f"/media/{ready}/master.m3u8", headers={"Accept-Encoding": "gzip"})
    again = await api.get(f"/media/{ready}/master.m3u8",
                          headers={"Accept-Encoding": "gzip", "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    plain = await api.get(f"/media/{ready}/master.m3u8", headers={"Accept-Encoding": "identity",
                                                                      "If-None-Match": first.headers["etag"]})
    assert plain.status_code == 200  # another representation, another tag


async def test_segments_answer_byte_ranges(api: httpx.AsyncClient, store: Store, ready: str) -> None:
    body = (store.layout.media_dir(ready) / "360p" / "seg_00002.m4s").read_bytes()
    r = await api.get(f"/media/{ready}/360p/seg_00002.m4s", headers={"Range": "bytes=100-1099"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 100-1099/{len(body)}"
    assert r.content == body[100:1100]
    assert r.headers["content-type"] == "video/iso.segment"
    assert r.headers["x-content-type-options"] == "nosniff"
    tail = await api.get(f"/media/{ready}/360p/seg_00002.m4s", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == body[-10:]
    beyond = await api.get(f"/media/{ready}/360p/seg_00002.m4s", headers={"Range": f"bytes={len(body) + 5}-"})
    assert beyond.status_code == 416
    full = await api.get(f"/media/{ready}/360p/seg_00002.m4s")
    assert full.headers.get("accept-ranges") == "bytes" and full.content == body


@pytest.mark.parametrize("state", [MediaState.QUEUED, MediaState.PROCESSING, MediaState.FAILED])
async def test_nothing_is_served_before_ready(api: httpx.AsyncClient, store: Store, state: str) -> None:
    media_id = store.media(state=state)
    store.ladder(media_id)  # even if files are there (a retry re-publishing over an old run)
    r = await api.get(f"/media/{media_id}/master.m3u8")
    assert r.status_code == 404
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_unknown_media_and_files_are_404(api: httpx.AsyncClient, ready: str) -> None:
    assert (await api.get(f"/media/{new_id()}/master.m3u8")).status_code == 404
    assert (await api.get(f"/media/{ready}/1080p/index.m3u8")).status_code == 404
    assert (await api.get(f"/media/{ready}/360p")).status_code == 404  # a folder


@pytest.mark.parametrize("path", [
    "..%2f..%2foutside.m3u8", "%2e%2e/%2e%2e/outside.m3u8", "360p/..%2f..%2f..%2foutside.m3u8",
    "..%2fOTHER%2fmaster.m3u8", "%2e%2e/OTHER/master.m3u8", "..%5c..%5coutside.m3u8", "%2fetc%2fpasswd",
    "..%2f..%2ftusflow.db", "360p//index.m3u8", ".hidden.m3u8", "360p/.x.m4s", "master.m3u8%00.jpg",
    "a/b/c/d/e.m4s", "notes.txt", "master.M3U8.php", "master.m3u8/",
])
async def test_paths_outside_the_allow_list_are_refused(api: httpx.AsyncClient, store: Store, ready: str,
                                                        path: str) -> None:
    folder = store.layout.media_dir(ready)
    (folder / "notes.txt").write_text("secret")
    (folder / ".hidden.m3u8").write_text("#EXTM3U\n# hidden\n")
    (store.layout.root / "outside.m3u8").write_text("#EXTM3U\n# outside\n")
    (store.layout.media / "outside.m3u8").write_text("#EXTM3U\n# outside\n")
    other = store.media(state=MediaState.PROCESSING)  # not ready: must stay unreachable
    store.ladder(other)
    r = await api.get(f"/media/{ready}/{path.replace('OTHER', other)}")
    assert r.status_code == 404, (path, r.status_code)
    assert b"SQLite" not in r.content and b"secret" not in r.content and b"#EXT" not in r.content


async def test_traversal_through_the_id_is_refused(api: httpx.AsyncClient, ready: str) -> None:
    for url in (f"/media/..%2f{ready}/master.m3u8", "/media/%2e%2e/tusflow.db", "/media/..%2f..%2fvar/x.m3u8"):
        r = await api.get(url)
        assert r.status_code == 404, url
        assert b"SQLite" not in r.content


async def test_symlinks_out_of_the_media_folder_are_refused(api: httpx.AsyncClient, store: Store, ready: str) -> None:
    folder = store.layout.media_dir(ready)
    outside = store.layout.root / "outside.m3u8"
    outside.write_text("#EXTM3U\n# outside\n")
    os.symlink(outside, folder / "escape.m3u8")
    os.symlink(store.layout.root, folder / "root")
    assert (await api.get(f"/media/{ready}/escape.m3u8")).status_code == 404
    assert (await api.get(f"/media/{ready}/root/outside.m3u8")).status_code == 404
    # a link that stays inside is fine
    os.symlink(folder / "poster.jpg", folder / "cover.jpg")
    assert (await api.get(f"/media/{ready}/cover.jpg")).status_code == 200


SIGNING_KEY = "playback-signing-key-for-delivery-tests-0123456789"


async def test_a_signed_playlist_is_rewritten_whole_even_when_gzip_and_etag_are_asked(
        make_api: Callable[..., Awaitable[httpx.AsyncClient]]) -> None:
    """Under a playback signature delivery carries the signature into every URI of the
    playlist: always the full plain text (a 304 or a gzip body would hold unsigned URIs) and
    never cached, since its URIs expire with the link."""
    api = await make_api(auth={"playback_signing_key": SIGNING_KEY, "signed_playback": True})
    store: Store = api.store  # type: ignore[attr-defined]
    ready = store.media()
    store.ladder(ready)
    plain = (store.layout.media_dir(ready) / "master.m3u8").read_text()
    query = PlaybackSigner(SIGNING_KEY).query_string(ready, "alice")
    r = await api.get(f"/media/{ready}/master.m3u8?{query}",
                      headers={"Accept-Encoding": "gzip", "If-None-Match": '"anything"'})
    assert r.status_code == 200 and "content-encoding" not in r.headers and "etag" not in r.headers
    assert r.headers["cache-control"] == "private, no-store"
    assert int(r.headers["content-length"]) == len(r.content)
    variants = [line for line in r.text.splitlines() if line and not line.startswith("#")]
    expected = [line for line in plain.splitlines() if line and not line.startswith("#")]
    assert variants == [f"{line}?{query}" for line in expected]
    # following a rewritten URI works: it carries a valid grant, and its own URIs are signed too
    variant = await api.get(f"/media/{ready}/{variants[0]}")
    assert variant.status_code == 200 and f'URI="init.mp4?{query}"' in variant.text
    head = await api.head(f"/media/{ready}/master.m3u8?{query}")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(r.content)
