"""Pure parsing and rendering of tus headers: no I/O, so every rule is unit-testable."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from models.metadata import BASE64, Metadata, MetadataError, decode_metadata
from tus_server.tus import errors as E

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
INT64_MAX = 2**63 - 1
CHECKSUM_ALGORITHMS = ("sha1", "md5", "sha256", "sha512")
# X-HTTP-Method-Override (T10 of the tus spec checklist) is honoured on POST only,
# as tusd does, for the tus methods a restricted client may be unable to send: PATCH and DELETE
# (tus-js-client's ``overridePatchMethod``, proxies and HTTP stacks limited to GET/POST) and
# HEAD, without which such a client could upload but never learn its offset to resume. Not GET,
# which every client can send, so a POST that turns into a download would only mislead caches
# and logs; not OPTIONS, which is discovery and the CORS preflight and must stay a real OPTIONS.
# A POST with any other value stays a creation. Everything that classifies a tus request (the
# handler, the auth middleware) uses this one set, so they agree on what a request is.
OVERRIDABLE = frozenset({"PATCH", "DELETE", "HEAD"})

_DIGITS = re.compile(r"[0-9]+")
_ID = re.compile(r"[0-9a-f]{32}")


def parse_uint(value: str | None, err: E.TusError) -> int:
    """Strict non-negative decimal below int64: no sign, no spaces, no exponent, ASCII only."""
    if value is None or not _DIGITS.fullmatch(value) or len(value) > 19:
        raise err()
    number = int(value)
    if number > INT64_MAX:
        raise err()
    return number


def is_valid_id(value: str) -> bool:
    """Upload ids are 128-bit random hex; only that exact shape ever reaches the filesystem."""
    return bool(_ID.fullmatch(value))


def check_tus_resumable(value: str | None) -> None:
    if value != TUS_VERSION:
        raise E.ERR_UNSUPPORTED_VERSION()


def parse_metadata(header: str | None, max_size: int, max_pairs: int) -> Metadata:
    """The creation-time check: 400 on any malformation (see ``models.metadata``)."""
    try:
        return decode_metadata(header, max_size, max_pairs)
    except MetadataError as exc:
        raise E.ERR_INVALID_METADATA(str(exc)) from None


def encode_metadata(values: dict[str, bytes | str]) -> str:
    """Render a metadata header (clients and tests use this)."""
    out = []
    for key, value in values.items():
        raw = value.encode() if isinstance(value, str) else value
        out.append(f"{key} {base64.b64encode(raw).decode()}" if raw else key)
    return ",".join(out)


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes


def parse_checksum(header: str | None) -> Checksum | None:
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise E.ERR_INVALID_CHECKSUM()
    algorithm, encoded = parts
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise E.ERR_CHECKSUM_ALGORITHM(
            f"unsupported checksum algorithm {algorithm[:32]!r}; supported: {','.join(CHECKSUM_ALGORITHMS)}")
    if not BASE64.fullmatch(encoded):
        raise E.ERR_INVALID_CHECKSUM("Upload-Checksum digest is not base64")
    return Checksum(algorithm, base64.b64decode(encoded))


@dataclass(frozen=True)
class Concat:
    kind: str  # "partial" or "final"
    parts: tuple[str, ...] = ()  # final: the URLs as received


def parse_concat(header: str | None) -> Concat | None:
    if header is None:
        return None
    header = header.strip()
    if header == "partial":
        return Concat("partial")
    if header.startswith("final;"):
        urls = tuple(u for u in header[len("final;"):].strip().split(" ") if u)
        if not urls:
            raise E.ERR_INVALID_CONCAT("Upload-Concat final lists no partial uploads")
        return Concat("final", urls)
    raise E.ERR_INVALID_CONCAT("Upload-Concat must be 'partial' or 'final;<urls>'")


def id_from_url(url: str, base_path: str) -> str | None:
    """The upload id a partial URL names, if it points under this server's base path."""
    path = url
    match = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*(/.*)?$", url)
    if match:
        path = match.group(1) or "/"
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith(base_path):
        return None
    candidate = path[len(base_path):]
    return candidate if is_valid_id(candidate) else None


def effective_method(method: str, override: str | None) -> str:
    """The method a tus request stands for: POST with an allowed override becomes that method."""
    wanted = (override or "").upper()
    return wanted if method == "POST" and wanted in OVERRIDABLE else method


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
