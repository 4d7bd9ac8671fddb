"""SQLModel tables: the source of truth for uploads and media state.

Upload bytes live on disk under ``data_dir``; a row says where, how long the upload is, what the
client sent as metadata (the raw header, so values round-trip byte-exact) and whether it has
completed.  A Media row shares its id with the upload it was made from, so completing the same
upload twice can never create two media items or two jobs.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping, TypeVar

from sqlalchemy import BigInteger, DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import configure_mappers
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from models.clock import utcnow

Row = TypeVar("Row", bound=SQLModel)


class UTCDateTime(TypeDecorator[datetime]):
    """timestamptz on PostgreSQL, so the instant survives any session time zone. SQLite stores
    the wall time it is given and drops the zone, so aware values (columns and query
    parameters alike) become UTC first; SQLite then gives back naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(timezone.utc)
        return value


def from_row(cls: type[Row], values: Mapping[str, Any]) -> Row:
    """A detached instance built the way the ORM builds what it loads: ``__new__`` (where
    SQLModel readies pydantic's state) and ``values``, a whole row, straight into the
    instance dict (no defaults are applied: a column left out reads as None).
    ``cls(**values)`` sends every column through SQLAlchemy's attribute events and pydantic's
    setattr, 44 us for an Upload against 2 us here, and the tus handler reads an upload row
    on every PATCH and HEAD. Setting attributes afterwards works as on any instance.

    The mappers must be configured first (the constructor and every query do that on first
    use): until then the class's attributes cannot read the instance dict."""
    if not cls.__mapper__.configured:  # type: ignore[attr-defined]
        configure_mappers()
    obj = cls._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    obj.__dict__.update(values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    return obj


# Every timestamp column uses this (``sa_type=Timestamp``); migrations render it as
# ``sa.DateTime(timezone=True)``.
Timestamp = UTCDateTime()


class Upload(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)
    length: int | None = Field(default=None, sa_type=BigInteger)  # bytes: past 2 GiB, so 64-bit
    offset: int = Field(default=0, sa_type=BigInteger)
    metadata_raw: str = ""
    concat: str | None = None  # None, "partial" or "final"
    concat_parts: str | None = None  # final: JSON list of partial ids, in order
    owner: str | None = Field(default=None, index=True)
    storage_path: str = ""  # where the bytes are now, relative to data_dir
    created_at: datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    expires_at: datetime | None = Field(default=None, index=True, sa_type=Timestamp)
    completed_at: datetime | None = Field(default=None, sa_type=Timestamp)
    # The newest fencing token of a Redis lock on this upload (tus_server/tus/redislocks.py):
    # offset updates carrying an older one are refused. Stays 0 with file locks.
    lock_token: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})

    @property
    def is_complete(self) -> bool:
        return self.completed_at is not None

    @property
    def parts(self) -> list[str]:
        return json.loads(self.concat_parts) if self.concat_parts else []


class Media(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)  # == the upload id
    owner: str | None = Field(default=None, index=True)
    title: str = ""
    description: str = ""
    filename: str = ""
    filetype: str = ""
    size: int = Field(default=0, sa_type=BigInteger)
    source_path: str = ""  # original, relative to data_dir
    # A models.lifecycle.MediaState value, moved on only by models.lifecycle (which imports this
    # module, so the default is spelled out here).
    state: str = Field(default="queued", index=True)
    progress: float = 0.0  # 0..100 while processing
    eta_seconds: float | None = None
    error: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    # Every rendition planned for this media, each with its own state (a
    # models.lifecycle.RenditionState value) and progress; the ready ones are in the master.
    renditions_json: str = "[]"
    # The fast path's verdict (transcoder/fastpath.py): {"eligible", "reason", "top_rung", ...}.
    fast_path_json: str = "{}"
    has_poster: bool = False
    has_storyboard: bool = False
    attempts: int = 0
    job_id: str | None = None
    enqueued_at: datetime | None = Field(default=None, sa_type=Timestamp)  # None while the job still has to reach Redis
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=Timestamp)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    started_at: datetime | None = Field(default=None, sa_type=Timestamp)
    playable_at: datetime | None = Field(default=None, sa_type=Timestamp)  # first rendition out
    finished_at: datetime | None = Field(default=None, sa_type=Timestamp)

    @property
    def renditions(self) -> list[dict[str, Any]]:
        return json.loads(self.renditions_json or "[]")
