"""Ask the endpoint what it is before touching any file.

One OPTIONS request answers the three questions that otherwise surface as confusing per-file
errors much later: is anything listening, is it a tus 1.0 server (``Tus-Version``), and how
large may an upload be (``Tus-Max-Size``, so oversized files fail up front, not after hours).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urljoin

import requests

from tusflow_client.net import Timeouts, describe

TUS_VERSION = "1.0.0"
# Strongest first; tuspy's own default is sha1, which every checksum-capable server must accept.
CHECKSUM_PREFERENCE = ("sha256", "sha512", "sha1", "md5")


class EndpointError(RuntimeError):
    """The endpoint cannot be used at all; nothing was uploaded."""


@dataclass(frozen=True)
class ServerInfo:
    endpoint: str
    versions: tuple[str, ...]
    extensions: frozenset[str]
    max_size: int | None
    checksum_algorithms: tuple[str, ...]

    def checksum(self) -> tuple[str, Callable[..., "hashlib._Hash"]] | None:
        """The algorithm for per-chunk Upload-Checksum, or None if the server has no checksum
        extension (sending the header then would only earn 400s)."""
        if "checksum" not in self.extensions:
            return None
        offered = {a.lower() for a in self.checksum_algorithms} or {"sha1"}
        for name in CHECKSUM_PREFERENCE:
            if name in offered:
                return name, getattr(hashlib, name)
        return None


def probe(endpoint: str, session: requests.Session, timeouts: Timeouts) -> ServerInfo:
    """A redirect (``/files`` → ``/files/``) is followed and its target becomes the endpoint:
    POSTs and PATCHes must not depend on redirects, which clients handle inconsistently."""
    for _ in range(4):
        try:
            response = session.options(endpoint, timeout=timeouts.pair(), allow_redirects=False)
        except requests.RequestException as exc:
            raise EndpointError(f"cannot reach {endpoint}: {describe(exc)}") from None
        location = response.headers.get("Location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            break
        endpoint = urljoin(endpoint, location)
    status = response.status_code
    if status in (401, 403):
        raise EndpointError(f"{endpoint} refused the request ({status} {response.reason}); "
                            "check --token / TUSFLOW_TOKEN")
    versions_header = response.headers.get("Tus-Version")
    if not versions_header:
        what = response.headers.get("Server") or response.headers.get("Content-Type") or "an HTTP server"
        raise EndpointError(f"{endpoint} is not a tus server: OPTIONS answered {status} {response.reason} "
                            f"without a Tus-Version header ({what}); is --endpoint the tus upload URL?")
    if status >= 300:
        raise EndpointError(f"{endpoint} answered OPTIONS with {status} {response.reason}")
    versions = tuple(v.strip() for v in versions_header.split(",") if v.strip())
    if TUS_VERSION not in versions:
        raise EndpointError(f"{endpoint} speaks tus {versions_header}, not {TUS_VERSION}")
    extensions = frozenset(e.strip().lower() for e in response.headers.get("Tus-Extension", "").split(",") if e.strip())
    if "creation" not in extensions:
        raise EndpointError(f"{endpoint} does not offer the tus creation extension, so uploads cannot be created")
    max_size: int | None = None
    raw_max = response.headers.get("Tus-Max-Size", "").strip()
    if raw_max.isdigit():
        max_size = int(raw_max) or None
    algorithms = tuple(a.strip() for a in response.headers.get("Tus-Checksum-Algorithm", "").split(",") if a.strip())
    return ServerInfo(endpoint, versions, extensions, max_size, algorithms)
