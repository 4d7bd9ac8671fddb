"""Upload-Metadata, decoded once for every layer: the tus handler validates it at creation, the
publisher takes titles and file names from it, the webhook outbox shows it to the platform.

Pure functions, no I/O. A malformed header raises ``MetadataError`` with a one-line reason;
the tus layer turns that into its 400.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass

BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # visible ASCII except ','
# What a stored header was accepted with at creation is re-read without limits.
UNLIMITED = 1 << 62


class MetadataError(ValueError):
    """The header is not a valid tus Upload-Metadata value; ``str()`` says why in one line."""


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

    def as_text(self) -> dict[str, str]:
        """Every value as UTF-8 text (invalid bytes replaced), for JSON."""
        return {key: value.decode("utf-8", "replace") for key, value in self.values.items()}


def decode_metadata(header: str | None, max_size: int = UNLIMITED, max_pairs: int = UNLIMITED) -> Metadata:
    """Validate strictly but keep the raw header for the round trip."""
    if header is None:
        return Metadata("", {})
    header = header.strip(" \t")
    if not header:
        return Metadata("", {})
    if len(header) > max_size:
        raise MetadataError(f"Upload-Metadata is longer than {max_size} bytes")
    pairs = header.split(",")
    if len(pairs) > max_pairs:
        raise MetadataError(f"Upload-Metadata has more than {max_pairs} pairs")
    values: dict[str, bytes] = {}
    for pair in pairs:
        parts = pair.strip(" \t").split(" ")
        if len(parts) > 2 or not parts[0]:
            raise MetadataError("Upload-Metadata pairs must be 'key base64value'")
        key = parts[0]
        if not _KEY.fullmatch(key):
            raise MetadataError("Upload-Metadata keys must be visible ASCII")
        if key in values:
            raise MetadataError(f"Upload-Metadata key {key!r} appears twice")
        encoded = parts[1] if len(parts) == 2 else ""
        if not BASE64.fullmatch(encoded):
            raise MetadataError(f"Upload-Metadata value of {key!r} is not base64")
        try:
            values[key] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise MetadataError(f"Upload-Metadata value of {key!r} is not base64") from None
    return Metadata(header, values)


def stored_metadata(raw: str) -> Metadata:
    """A header that was accepted at creation; one that no longer parses reads as empty."""
    try:
        return decode_metadata(raw)
    except MetadataError:
        return Metadata(raw, {})
