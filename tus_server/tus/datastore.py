"""The narrow interface between the tus handler and where upload bytes live.

Split the way tusd splits its stores (DataStore / Upload / Terminater / Concater): what every
store must do to take a tus upload in (``DataStore``), and the two extensions that need help
from the storage itself (``Terminater``, ``Concater``). ``UploadStore`` is all of them; both
stores implement it: ``FileStore`` (``store.py``, data_dir on one machine) and ``S3Store``
(``s3store.py``, any S3-compatible bucket, shared by every instance). The handler, the
completion path (``tus_server.publish``) and ``tusflow cleanup`` only use this interface, and
``open_store`` picks the store from ``[storage] backend``.

The contract the handler relies on:
- ``stored_offset`` says how many bytes the storage really holds (after a crash it may differ
  from the row); the handler records it. It never answers from memory.
- A writer's ``close`` returns the bytes that reached durable storage, however the body ended;
  after a failed write nothing more is written, so the stored bytes never have a hole.
- A stager keeps a body aside until the handler has verified its checksum; ``commit`` appends
  it, ``discard`` forgets it. Either way the offset never covers unverified bytes.
- ``finish`` makes a complete upload's bytes whole before its completion is recorded;
  ``publish`` moves them into originals after (idempotent: a crash in between is repaired by
  calling it again). Neither passes bytes through Python.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from models.config import Settings
from models.layout import Layout
from models.tables import Upload


# The newest fencing token issued for an upload's lock (None when unknown): RedisLocks.newest_token.
NewestToken = Callable[[str], Awaitable[int | None]]


class UploadWriter(Protocol):
    """Appends one request body at the upload's offset."""

    failed: OSError | None

    async def write(self, chunk: bytes) -> None: ...

    async def close(self) -> int:
        """Store what is buffered; the bytes written, durable (a failure stays in ``failed``)."""
        ...


class RecordingWriter(UploadWriter, Protocol):
    """What ``DataStore.writer`` returns: ``close`` and the handler's offset update in one
    trip to the thread pool (the file store shares it with its fdatasync, a noticeable share
    of the CPU with small PATCHes; the S3 store has no such trip to share)."""

    async def close_then(self, record: Callable[[int], None]) -> int:
        """``close``, and then, on the same worker thread, ``record(written)`` when anything
        was written: only after those bytes are durable, never when making them durable
        failed. What ``record`` raises is raised here; the bytes written are returned."""
        ...


class StagedWriter(UploadWriter, Protocol):
    """A body kept aside (and hashed by the caller's hasher) until it is verified."""

    async def commit(self) -> None:
        """Append the whole staged body to the upload."""
        ...

    async def discard(self) -> None: ...


@dataclass
class Content:
    """A finished upload's bytes for download: a local file (served with Range support) or a
    stream of chunks."""

    size: int
    path: Path | None = None
    chunks: Callable[[], AsyncIterator[bytes]] | None = None
    # Bytes [start, end) of a streamed content (S3: one ranged GET), so a download answers a
    # Range request without reading what comes before it.
    read_range: Callable[[int, int], AsyncIterator[bytes]] | None = None


class DataStore(Protocol):
    # The longest upload this store can hold, None when only [uploads] max_size limits it.
    max_length: int | None
    max_length_reason: str  # why, for the 413 that refuses a longer one

    async def create(self, upload_id: str, partial: bool = False) -> str:
        """Make room for a new, empty upload; its ``storage_path`` (before it is published)."""
        ...

    async def stored_offset(self, upload: Upload) -> int | None:
        """How many bytes of this unfinished upload storage holds (never more than its
        length), made durable; None when its data is gone."""
        ...

    def writer(self, upload: Upload) -> RecordingWriter:
        """A writer that appends at ``upload.offset``."""
        ...

    def stager(self, upload: Upload, hasher: Any) -> StagedWriter:
        """A writer that stages a body at ``upload.offset`` until ``commit``."""
        ...

    async def finish(self, upload: Upload) -> None:
        """All ``upload.length`` bytes are stored: make them one whole object."""
        ...

    def published_path(self, upload_id: str) -> str:
        """The ``storage_path`` of a published upload (its original)."""
        ...

    async def publish(self, upload: Upload) -> str:
        """Move a finished upload into originals (idempotent); its new ``storage_path``."""
        ...

    async def content(self, upload: Upload) -> Content | None:
        """A finished upload's bytes, None when they are no longer stored."""
        ...

    def read(self, upload: Upload) -> AsyncIterator[bytes]:
        """The bytes of an upload ``finish`` has made whole (published or not), streamed in
        blocks of bounded size: what needs all of them (the draft's Repr-Digest) reads them
        the same way from every store. FileNotFoundError when they are not stored."""
        ...

    def fence_writes(self, newest_token: "NewestToken") -> None:
        """Writers of an upload whose ``lock_token`` is set ask ``newest_token`` before each
        write and store nothing once a newer lock token was issued (a holder whose lease ran
        out while it was frozen). A store whose writes cannot outlive their lock ignores it."""
        ...


class Terminater(Protocol):
    async def terminate(self, upload: Upload) -> None:
        """Delete what an upload stored (a published original belongs to its media and stays)."""
        ...

    def purge(self, upload: Upload) -> None:
        """``terminate`` for maintenance (``tusflow cleanup``): blocking, no event loop."""
        ...


class Concater(Protocol):
    async def concatenate(self, upload_id: str, parts: list[Upload]) -> str:
        """Store a new upload made of the finished partials' bytes, one after the other; its
        ``storage_path``. FileNotFoundError when a partial's data is gone."""
        ...


class UploadStore(DataStore, Terminater, Concater, Protocol):
    """Everything the tus handler needs of a store."""


def open_store(settings: Settings, layout: Layout, executor: ThreadPoolExecutor) -> UploadStore:
    """The store ``[storage] backend`` names; its blocking calls run on ``executor``."""
    if settings.storage.backend == "s3":
        from tus_server.tus.s3store import S3Store  # botocore loads only when S3 is used
        return S3Store(settings.storage.s3, executor)
    from tus_server.tus.store import FileStore
    return FileStore(layout, settings.storage.fsync, executor)
