"""The webhook outbox: one row per (event, receiver URL), written before anything is sent.

The row, not the RQ job, is the source of truth. RQ jobs only wake a delivery up; a job that
finds its row already delivered, given up or held by another attempt does nothing. So a lost
job (Redis restarted) is found again by the sweep, and a duplicate job cannot send twice at
once. ``id`` is the idempotency key the receiver sees; every retry and every manual
redelivery reuses it together with the byte-identical ``payload``.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from models.tables import Timestamp
from models.clock import utcnow


class DeliveryState:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_delivery"

    id: str = Field(primary_key=True, max_length=32)  # uuid4 hex, sent as Tusflow-Delivery
    event: str = Field(index=True, max_length=64)
    url: str = ""
    subject: str = Field(default="", index=True, max_length=64)  # upload/media id the event is about
    payload: str = ""  # the exact JSON body sent, so retries are byte-identical
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=Timestamp)
    # created_at + max_age: no retry after it. A manual redelivery moves it.
    give_up_at: datetime | None = Field(default=None, sa_type=Timestamp)
    attempts: int = 0
    last_status: int | None = None  # HTTP status of the last attempt; None = no answer
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(default=None, index=True, sa_type=Timestamp)
    # None = the wake-up job has not reached Redis yet (the sweep enqueues it).
    enqueued_at: datetime | None = Field(default=None, sa_type=Timestamp)
    # Lease of the attempt in progress, so a duplicate wake-up cannot send at the same time.
    locked_until: datetime | None = Field(default=None, sa_type=Timestamp)
    delivered_at: datetime | None = Field(default=None, sa_type=Timestamp)
    failed_at: datetime | None = Field(default=None, index=True, sa_type=Timestamp)

    @property
    def state(self) -> str:
        if self.delivered_at is not None:
            return DeliveryState.DELIVERED
        if self.failed_at is not None:
            return DeliveryState.FAILED
        return DeliveryState.PENDING
