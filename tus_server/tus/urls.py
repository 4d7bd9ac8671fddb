"""Absolute URLs for Location and links, from the request unless told otherwise.

Built from the request's own Host so an upload started through a proxy keeps going through it;
X-Forwarded-* / Forwarded are believed only when ``trust_forwarded_headers`` is on.
"""

from __future__ import annotations

import re

from starlette.requests import Request

from models.config import Settings

_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


class UrlBuilder:
    def __init__(self, settings: Settings):
        self.public_url = settings.server.public_url.rstrip("/")
        self.trust_forwarded = settings.server.trust_forwarded_headers
        self.base_path = settings.server.base_path.rstrip("/") + "/"

    def origin(self, request: Request) -> str:
        if self.public_url:
            return self.public_url
        scheme = request.url.scheme
        host = request.headers.get("host", "")
        if self.trust_forwarded:
            proto, fwd_host = _forwarded(request)
            scheme = proto or scheme
            host = fwd_host or host
        if scheme not in ("http", "https"):
            scheme = "http"
        if not _HOST.fullmatch(host):
            server = request.scope.get("server") or ("localhost", None)
            host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
        return f"{scheme}://{host}"

    def upload_url(self, request: Request, upload_id: str) -> str:
        return f"{self.origin(request)}{self.base_path}{upload_id}"


def _forwarded(request: Request) -> tuple[str | None, str | None]:
    h = request.headers
    proto = h.get("x-forwarded-proto")
    host = h.get("x-forwarded-host")
    forwarded = h.get("forwarded")
    if forwarded:
        first = forwarded.split(",", 1)[0]
        for part in first.split(";"):
            key, _, value = part.strip().partition("=")
            value = value.strip('"')
            if key.lower() == "proto":
                proto = value
            elif key.lower() == "host":
                host = value
    proto = proto.split(",", 1)[0].strip().lower() if proto else None
    host = host.split(",", 1)[0].strip() if host else None
    return proto, host
