"""Signed file URLs in media items, when ``[auth] signed_playback`` is on.

A page cannot put a header on ``<img src>``, ``<video poster>``, a CSS background or the
requests of a native HLS player, and with signed playback the server refuses those files
without a signature (or the caller's own token). So every item the API hands out, in a list,
a read, a retry answer or an event pushed over SSE, carries the signature in ``poster``,
``playlist`` and ``storyboard`` (the page carries it on to the sprite; the server carries it
into every playlist URI). The item keeps its shape: the same keys, the URLs only gain a query.

The signature names the viewer (``u``) when the request proved who it is, like
``GET /api/media/{id}/playback`` (tus_server/auth/routes.py), so one link is one person's and
an SSE event is signed for each subscriber, not once for all. Signing is HMAC only, cheap
enough for every item of every answer; the expiry is rounded up to a minute by the signer, so
answers within a minute give identical URLs and the browser's cache keeps working.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import HTTPConnection

from models.config import Settings
from tus_server.auth.signing import PlaybackSigner, playback_signer

SIGNED_FIELDS = ("poster", "playlist", "storyboard")


class PlaybackLinks:
    def __init__(self, signer: PlaybackSigner):
        self.signer = signer

    def sign(self, item: dict[str, Any], user: str = "") -> dict[str, Any]:
        """A copy of ``item`` whose file URLs carry a signature for ``user``; items without
        files (not ready, uploads) come back unchanged."""
        urls = {k: item[k] for k in SIGNED_FIELDS if item.get(k)}
        if not urls:
            return item
        query = urlencode(self.signer.sign(item["id"], user), quote_via=quote)
        return {**item, **{k: f"{v}{'&' if '?' in v else '?'}{query}" for k, v in urls.items()}}

    def sign_all(self, items: list[dict[str, Any]], user: str = "") -> list[dict[str, Any]]:
        return [self.sign(item, user) for item in items]


def playback_links(settings: Settings) -> PlaybackLinks | None:
    """Links are signed only when the server demands signatures: otherwise the URLs stay as
    they were and a page sends its own credential."""
    signer = playback_signer(settings)
    return PlaybackLinks(signer) if signer is not None and settings.auth.signed_playback else None


def signing_user(conn: HTTPConnection) -> str:
    """Whom a link is made for: the user a credential proved, else nobody in particular (auth
    disabled, where every caller is the anonymous operator)."""
    principal: Any = getattr(conn.state, "principal", None)
    if principal is not None and getattr(principal, "authenticated", False):
        return str(principal.user)
    return ""
