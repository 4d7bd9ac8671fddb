"""When an upload has expired: one rule, shared by the tus handler and ``tusflow cleanup``."""

from __future__ import annotations

from datetime import datetime

from models.clock import aware, utcnow
from models.tables import Upload


def is_expired(upload: Upload, now: datetime | None = None) -> bool:
    """Unfinished uploads expire; so do finished partials, which nobody can use once their
    final is built. Published uploads never do."""
    if upload.expires_at is None:
        return False
    if upload.is_complete and upload.concat != "partial":
        return False
    return aware(upload.expires_at) < (now or utcnow())
