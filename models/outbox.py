"""The webhook outbox: events written as rows, in the transaction of the change they announce.

``record`` adds one ``WebhookDelivery`` row per receiver URL to the caller's session, so an
event exists exactly when the change does (a crash right after the commit cannot lose it).
Waking the delivery up and sending it is the worker's job (``transcoder.webhooks``); this
module only decides what is sent: the payload, its signature and the retry backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from models.clock import iso, utcnow
from models.config import Settings
from models.metadata import stored_metadata
from models.tables import Media, Upload
from models.webhooks import WebhookDelivery as WD

SIGNATURE_HEADER = "Tusflow-Signature"
DELIVERY_HEADER = "Tusflow-Delivery"
EVENT_HEADER = "Tusflow-Event"


# ---------------------------------------------------------------------------------- signing
def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Tusflow-Signature`` value. The timestamp is inside the MAC so a captured request
    cannot be replayed later with a fresh ``t``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps.
    Several ``v1=`` entries are accepted so a secret rotation can sign with both secrets."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rsplit("v1=", 1)[1]
    return any(hmac.compare_digest(expected, got) for got in fields.get("v1", []))


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (1 → retry_base)."""
    w = settings.webhooks
    return min(w.retry_base * 2 ** max(attempts - 1, 0), w.retry_max)


# ---------------------------------------------------------------------------------- payloads




def upload_data(upload: Upload) -> dict[str, Any]:
    return {"upload_id": upload.id, "media_id": upload.id if upload.concat != "partial" else None,
            "owner": upload.owner, "length": upload.length, "offset": upload.offset,
            "partial": upload.concat == "partial", "metadata": stored_metadata(upload.metadata_raw).as_text(),
            "created_at": iso(upload.created_at), "completed_at": iso(upload.completed_at)}


def media_data(media: Media) -> dict[str, Any]:
    return {"media_id": media.id, "upload_id": media.id, "owner": media.owner, "state": media.state,
            "title": media.title, "filename": media.filename, "size": media.size,
            "duration": media.duration, "width": media.width, "height": media.height,
            "renditions": media.renditions, "error": media.error,
            "api_path": f"/api/media/{media.id}", "finished_at": iso(media.finished_at)}


def make_body(delivery_id: str, event: str, created_at: datetime, data: dict[str, Any]) -> str:
    return json.dumps({"id": delivery_id, "event": event, "created_at": iso(created_at),
                       "data": data}, separators=(",", ":"), sort_keys=True, default=str)


# ---------------------------------------------------------------------------------- emitting
def wanted(settings: Settings, event: str) -> bool:
    w = settings.webhooks
    return bool(w.urls) and event in w.events


def record(session: Session, settings: Settings, event: str, data: dict[str, Any],
           subject: str = "") -> list[str]:
    """Add one delivery per receiver to ``session`` (the caller commits). Returns their ids."""
    if not wanted(settings, event):
        return []
    now = utcnow()
    ids = []
    for url in settings.webhooks.urls:
        delivery_id = uuid.uuid4().hex
        session.add(WD(id=delivery_id, event=event, url=url, subject=subject,
                       payload=make_body(delivery_id, event, now, data), created_at=now,
                       give_up_at=now + timedelta(seconds=settings.webhooks.max_age),
                       next_attempt_at=now))
        ids.append(delivery_id)
    return ids
