"""Signed playback links: the grant and its refusals, and the playlist rewriting that lets a
player follow a signed master to its variants and segments."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tus_server.auth.errors import AuthError
from tus_server.auth.signing import PlaybackSigner
from tus_server.delivery import rewrite_playlist

from tests.support.credentials import SIGNING_KEY

MEDIA = "a" * 32
OTHER = "b" * 32


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def refusal(signer: PlaybackSigner, media: str, params: dict[str, str]) -> AuthError:
    with pytest.raises(AuthError) as info:
        signer.verify(media, params)
    assert info.value.status == 403
    return info.value


def test_good_signature_grants_media_until_expiry() -> None:
    clock = Clock()
    signer = PlaybackSigner(SIGNING_KEY, ttl=600, clock=clock)
    params = signer.sign(MEDIA, user="alice")
    exp = int(params["exp"])
    assert clock.now + 600 <= exp < clock.now + 660 and exp % 60 == 0
    grant = signer.verify(MEDIA, params)
    assert (grant.media_id, grant.user, grant.expires) == (MEDIA, "alice", exp)
    clock.now = exp  # still valid at the second it names
    signer.verify(MEDIA, params)


def test_expired_signature_is_refused_as_expired() -> None:
    clock = Clock()
    signer = PlaybackSigner(SIGNING_KEY, ttl=60, clock=clock)
    params = signer.sign(MEDIA)
    clock.now = int(params["exp"]) + 1
    assert refusal(signer, MEDIA, params).code == "ERR_PLAYBACK_EXPIRED"


@pytest.mark.parametrize("change", ["exp", "sig", "user", "drop-user"])
def test_tampered_link_is_refused(change: str) -> None:
    signer = PlaybackSigner(SIGNING_KEY, clock=Clock())
    params = signer.sign(MEDIA, user="alice")
    signer.verify(MEDIA, params)
    if change == "exp":
        params["exp"] = str(int(params["exp"]) + 86400)  # extend the link's life
    elif change == "sig":
        params["sig"] = ("A" if params["sig"][0] != "A" else "B") + params["sig"][1:]
    elif change == "user":
        params["u"] = "bob"
    else:
        del params["u"]
    assert refusal(signer, MEDIA, params).code == "ERR_PLAYBACK_INVALID"


def test_signature_for_one_media_does_not_open_another() -> None:
    signer = PlaybackSigner(SIGNING_KEY, clock=Clock())
    params = signer.sign(MEDIA)
    signer.verify(MEDIA, params)
    assert refusal(signer, OTHER, params).code == "ERR_PLAYBACK_INVALID"


def test_other_key_and_malformed_params_are_refused() -> None:
    params = PlaybackSigner(SIGNING_KEY, clock=Clock()).sign(MEDIA)
    refusal(PlaybackSigner("another-playback-key-0123456789abcdef", clock=Clock()), MEDIA, params)
    refusal(PlaybackSigner(SIGNING_KEY, clock=Clock()), MEDIA, {"exp": "soon", "sig": params["sig"]})
    refusal(PlaybackSigner(SIGNING_KEY, clock=Clock()), MEDIA, {"exp": params["exp"]})


MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="a",URI="audio/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",AUDIO="aud"
720p/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=300000,URI="720p/iframes.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360
https://cdn.example/elsewhere.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=700000,RESOLUTION=640x360
/media/{id}/360p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=600000,RESOLUTION=640x360
/media/{other}/360p/index.m3u8
"""

VARIANT = """#EXTM3U\r
#EXT-X-MAP:URI="init.mp4"\r
#EXTINF:6.0,\r
seg_00000.m4s\r
#EXTINF:2.5,\r
seg_00001.m4s?v=2\r
#EXT-X-ENDLIST\r
"""


def test_rewrite_carries_signature_into_every_local_uri() -> None:
    query = "exp=1&sig=abc"
    out = rewrite_playlist(MASTER.format(id=MEDIA, other=OTHER), query, f"/media/{MEDIA}/")
    assert 'URI="audio/index.m3u8?exp=1&sig=abc"' in out
    assert "\n720p/index.m3u8?exp=1&sig=abc\n" in out
    assert 'URI="720p/iframes.m3u8?exp=1&sig=abc"' in out
    assert f"\n/media/{MEDIA}/360p/index.m3u8?exp=1&sig=abc\n" in out
    assert "\nhttps://cdn.example/elsewhere.m3u8\n" in out  # never hand the signature to others
    assert f"\n/media/{OTHER}/360p/index.m3u8\n" in out  # a signature for one item only
    assert 'CODECS="avc1.64001f,mp4a.40.2"' in out


def test_rewrite_keeps_line_endings_and_existing_queries() -> None:
    out = rewrite_playlist(VARIANT, "exp=1&sig=abc", f"/media/{MEDIA}/")
    assert out.count("\r\n") == VARIANT.count("\r\n")
    assert '#EXT-X-MAP:URI="init.mp4?exp=1&sig=abc"' in out
    assert "seg_00000.m4s?exp=1&sig=abc\r\n" in out
    assert "seg_00001.m4s?v=2&exp=1&sig=abc\r\n" in out
    assert "#EXTINF:6.0,\r\n" in out


def test_rewritten_uri_verifies_for_the_same_media() -> None:
    signer = PlaybackSigner(SIGNING_KEY, clock=Clock())
    query = signer.query_string(MEDIA, "alice")
    line = rewrite_playlist("seg_1.m4s\n", query, "").strip()
    params = {k: v[0] for k, v in parse_qs(urlsplit(line).query).items()}
    assert signer.verify(MEDIA, params).user == "alice"
