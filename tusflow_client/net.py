"""HTTP plumbing shared by the probe, the transfers and ``--wait``: sessions that carry the
auth header, timeouts, and turning requests' exceptions into one-line messages."""

from __future__ import annotations

import errno
from dataclasses import dataclass

import requests

USER_AGENT = "tusflow-upload/0.1 (tuspy)"


@dataclass(frozen=True)
class Timeouts:
    """tuspy sets no timeout at all, so one stalled connection would hang a file forever;
    every request made here has these. ``read`` is per socket operation, not per request, so
    a slow but moving transfer never times out."""
    connect: float = 10.0
    read: float = 60.0

    def pair(self) -> tuple[float, float]:
        return (self.connect, self.read)


def auth_headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def new_session(token: str | None) -> requests.Session:
    """One session per thread: requests sessions are not meant to be shared across threads,
    and keep-alive saves a TCP handshake per chunk."""
    session = requests.Session()
    session.headers.update(auth_headers(token))
    session.trust_env = False  # a proxy from the environment must not silently reroute uploads
    return session


def describe(exc: BaseException) -> str:
    """The innermost reason, in words: 'connection refused', not three nested reprs."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException) and id(arg) not in seen:
                chain.append(arg)
                seen.add(id(arg))
                reason = getattr(arg, "reason", None)
                if isinstance(reason, BaseException):
                    chain.append(reason)
        current = current.__cause__ or current.__context__ or getattr(current, "reason", None)  # type: ignore[assignment]
    for item in chain:
        if isinstance(item, ConnectionRefusedError) or getattr(item, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(item, ConnectionResetError):
            return "connection reset by peer"
    text = " ".join(str(item) for item in chain)
    for needle, words in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("Temporary failure in name resolution", "host name lookup failed"),
        ("Connection reset", "connection reset by peer"),
        ("RemoteDisconnected", "server closed the connection without answering"),
        ("Connection aborted", "connection aborted"),
        ("Broken pipe", "connection broken (broken pipe)"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network is unreachable"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
    ):
        if needle in text:
            return words
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, (requests.exceptions.ReadTimeout, TimeoutError)):
        return "timed out waiting for the server"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-response"
    first = str(exc).strip() or type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."
