"""A durable log of finished transcodes, the source of the transcode histograms in /metrics.

Why a table and not a histogram in memory: the observations happen in worker processes, the
scrape lands on any one of several server processes, and media rows get deleted. Any server
process folds new Media finishes into this log at scrape time (idempotent: the key is the media
id and its finish time, so a re-transcode counts again but a second scraper does not), and the
histogram is aggregated from the log. Every process therefore reports the same monotonic
values, across restarts, whoever scraped first, and deleting a video does not un-count it.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from models.tables import Timestamp


class TranscodeRun(SQLModel, table=True):
    __tablename__ = "transcode_run"

    media_id: str = Field(primary_key=True, max_length=32)
    finished_at: datetime = Field(primary_key=True, sa_type=Timestamp, index=True)
    outcome: str = Field(max_length=16)  # "ready" or "failed"
    seconds: float  # wall time from started_at to finished_at
    media_seconds: float | None = None  # the video's duration; None when unknown
