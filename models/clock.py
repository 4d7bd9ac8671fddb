"""Time as every layer sees it: aware UTC datetimes.

SQLite hands timestamps back naive (they were written as UTC); PostgreSQL hands them back
aware. Comparing the two kinds raises, so every comparison or formatting goes through
``aware`` first, and every new timestamp comes from ``utcnow``.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 with a ``Z``, the form every JSON answer and webhook uses; None stays None."""
    if value is None:
        return None
    return aware(value).isoformat().replace("+00:00", "Z")
