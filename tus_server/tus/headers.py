"""Pure parsing and rendering of tus headers: no I/O, so every rule is unit-testable."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass

from tus_server.tus import errors as E

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
INT64_MAX = 2**63 - 1
CHECKSUM_ALGORITHMS = ("sha1", "md5", "sha256", "sha512")

_DIGITS = re.compile(r"[0-9]+")
_ID = re.compile(r"[0-9a-f]{32}")
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # visible ASCII except ','


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


@dataclass(frozen=True)
class Metadata:
    """Upload-Metadata as the client sent it, plus decoded values for the server's own use."""

    raw: str
    values: dict[str, bytes]

    def text(self, key: str, default: str = "") -> str:
        """A value as display text for titles, file names and headers. Control characters are
        dropped: a NUL cannot be stored in a PostgreSQL text column (completion would fail for
        ever), and CR/LF must never reach a header. The exact bytes stay in ``values``/``raw``."""
        value = self.values.get(key)
        if value is None:
            return default
        text = value.decode("utf-8", errors="replace")
        return "".join(ch for ch in text if not unicodedata.category(ch).startswith("C") or ch == " ")


def parse_metadata(header: str | None, max_size: int, max_pairs: int) -> Metadata:
    """Validate strictly (400 on any malformation) but keep the raw header for the round trip."""
    if header is None:
        return Metadata("", {})
    header = header.strip(" \t")
    if not header:
        return Metadata("", {})
    if len(header) > max_size:
        raise E.ERR_INVALID_METADATA(f"Upload-Metadata is longer than {max_size} bytes")
    pairs = header.split(",")
    if len(pairs) > max_pairs:
        raise E.ERR_INVALID_METADATA(f"Upload-Metadata has more than {max_pairs} pairs")
    values: dict[str, bytes] = {}
    for pair in pairs:
        pair = pair.strip(" \t")
        parts = pair.split(" ")
        if len(parts) > 2 or not parts[0]:
            raise E.ERR_INVALID_METADATA("Upload-Metadata pairs must be 'key base64value'")
        key = parts[0]
        if not _KEY.fullmatch(key):
            raise E.ERR_INVALID_METADATA("Upload-Metadata keys must be visible ASCII")
        if key in values:
            raise E.ERR_INVALID_METADATA(f"Upload-Metadata key {key!r} appears twice")
        encoded = parts[1] if len(parts) == 2 else ""
        if not _B64.fullmatch(encoded):
            raise E.ERR_INVALID_METADATA(f"Upload-Metadata value of {key!r} is not base64")
        try:
            values[key] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise E.ERR_INVALID_METADATA(f"Upload-Metadata value of {key!r} is not base64") from None
    return Metadata(header, values)


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
    if not _B64.fullmatch(encoded):
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


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
