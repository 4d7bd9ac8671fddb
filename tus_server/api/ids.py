"""Media ids as they appear in URLs.

Ids are the tus upload ids (32 lowercase hex digits). Every route checks them before they reach
the database or the filesystem, so an id can never name a path outside ``media_dir``.
"""

from __future__ import annotations

import re

MEDIA_ID = re.compile(r"[0-9a-f]{32}")


def is_media_id(value: str) -> bool:
    return MEDIA_ID.fullmatch(value) is not None
