"""Signed, expiring playback links, so a video link copied out of the platform stops working.

The signature covers the media id (not one file) plus the expiry and, optionally, the viewer:
one grant opens every file under ``/media/<id>/`` (master, variant playlists, init segments,
segments, poster, storyboard). Players resolve the URIs inside a playlist relative to it and
drop its query string, so when a playlist is served under a signature, delivery
(``tus_server.delivery``) appends the same ``exp``/``sig`` (and ``u``) to every URI in it. That keeps the
files on disk unsigned and the same for everyone, works for hls.js and for native HLS players
that cannot send headers or cookies, and never needs a cookie across origins.

Message: ``tusflow-playback-v1\\n<media id>\\n<exp>\\n<user>``, HMAC-SHA256, base64url without
padding; ``exp`` is Unix seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import urlencode

from models.config import Settings
from tus_server.auth.errors import ERR_PLAYBACK_EXPIRED, ERR_PLAYBACK_INVALID

_DOMAIN = "tusflow-playback-v1"
_EXP = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class PlaybackGrant:
    media_id: str
    expires: int
    user: str

    def query(self, sig: str) -> dict[str, str]:
        params = {"exp": str(self.expires), "sig": sig}
        if self.user:
            params["u"] = self.user
        return params


class PlaybackSigner:
    def __init__(self, key: str, ttl: int = 3600, clock: Callable[[], float] = time.time):
        if not key:
            raise ValueError("a playback signing key is required")
        self._key = key.encode("utf-8")
        self.ttl = ttl
        self.clock = clock

    def _sig(self, media_id: str, expires: int, user: str) -> str:
        msg = f"{_DOMAIN}\n{media_id}\n{expires}\n{user}".encode("utf-8")
        digest = hmac.new(self._key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, media_id: str, user: str = "", ttl: int | None = None) -> dict[str, str]:
        """Query parameters for a link valid for ``ttl`` seconds. The expiry is rounded up to a
        whole minute so links made for the same viewer within a minute are identical and
        caches (browser, CDN) can share the segments."""
        expires = int(math.ceil((self.clock() + (self.ttl if ttl is None else ttl)) / 60.0) * 60)
        grant = PlaybackGrant(media_id, expires, user)
        return grant.query(self._sig(media_id, expires, user))

    def query_string(self, media_id: str, user: str = "", ttl: int | None = None) -> str:
        return urlencode(self.sign(media_id, user, ttl))

    def verify(self, media_id: str, params: Mapping[str, str]) -> PlaybackGrant:
        """The grant the parameters carry, or an AuthError: expired or invalid (tampered,
        another media id, another key)."""
        exp, sig, user = params.get("exp", ""), params.get("sig", ""), params.get("u", "")
        if not _EXP.fullmatch(exp) or not sig:
            raise ERR_PLAYBACK_INVALID("invalid playback link: exp and sig are required")
        expected = self._sig(media_id, int(exp), user)
        if not hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "surrogateescape")):
            raise ERR_PLAYBACK_INVALID()
        if int(exp) < self.clock():
            raise ERR_PLAYBACK_EXPIRED()
        return PlaybackGrant(media_id, int(exp), user)


def playback_signer(settings: Settings) -> PlaybackSigner | None:
    """The app's signer, None without ``[auth] playback_signing_key`` (then nothing is signed
    and no signature is accepted)."""
    a = settings.auth
    return PlaybackSigner(a.playback_signing_key, a.playback_ttl) if a.playback_signing_key else None
