"""Upload bytes on the local disk, behind the narrow interface the handlers use.

File I/O runs on a small thread pool so the event loop never blocks. Appends are batched
(about 1 MiB) and one batch is written while the next is received, which keeps a single upload
near disk speed with bounded memory; the body's last batch, the fdatasync and the offset update
take one trip to the pool together, so a PATCH of up to 1 MiB costs one hand-off. Concatenation and checksum commits copy inside the kernel
(``copy_file_range``), so no byte of a final upload passes through Python.

With ``fsync`` on, every written batch but the last also starts its own writeback
(``sync_file_range(SYNC_FILE_RANGE_WRITE)``): the disk then writes while the rest of the body is
still arriving, instead of the whole PATCH sitting dirty in the page cache until the
``fdatasync`` before the answer. That fdatasync still runs and is still what makes the offset
durable; it merely finds little left to flush. Writeback is only a hint, so where the call does
not exist (not Linux) or fails, nothing changes but the speed.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from models.layout import Layout
from models.tables import Upload
from tus_server.tus.datastore import Content

BATCH_BYTES = 1 << 20
BATCH_CHUNKS = 256  # tiny chunks from a slow client must not pile up as many objects
IOV_MAX = 1024
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, don't wait
T = TypeVar("T")

Writeback = Callable[[int, int, int], object]


def writeback_starter() -> Writeback | None:
    """``start(fd, offset, nbytes)``: ask the kernel to begin writing a just-written range to
    the disk, without waiting for it; None where there is no such call. Python's ``os`` has no
    ``sync_file_range``, so it comes from the C library."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    fn.restype = ctypes.c_int

    def start(fd: int, offset: int, nbytes: int) -> object:
        return fn(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)  # -1 (e.g. EINVAL) changes nothing
    return start


class FileStore:
    def __init__(self, layout: Layout, fsync: bool, executor: ThreadPoolExecutor):
        self.layout = layout
        self.fsync = fsync
        self.executor = executor
        # Only worth it when the bytes are fdatasynced anyway: without fsync the page cache
        # absorbing a burst is the point, and early writeback would only add disk traffic.
        self.writeback = writeback_starter() if fsync else None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def path(self, upload_id: str) -> Path:
        return self.layout.upload_file(upload_id)

    async def create(self, upload_id: str, partial: bool = False) -> str:
        def _create() -> None:
            fd = os.open(self.path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)
        await self.run(_create)
        return self.layout.relative(self.path(upload_id))

    async def size(self, path: Path) -> int | None:
        return await self.run(self.size_now, path)

    @staticmethod
    def size_now(path: Path) -> int | None:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    async def truncate(self, path: Path, length: int) -> None:
        await self.run(os.truncate, path, length)

    async def sync(self, path: Path) -> None:
        await self.run(_sync, path)

    def appender(self, path: Path, offset: int, hasher: "hashlib._Hash | None" = None,
                 truncate: bool = False, writeback: bool = True) -> "Appender":
        return Appender(self, path, offset, hasher, truncate, writeback)

    def staging_path(self, upload_id: str) -> Path:
        return self.layout.uploads / f"{upload_id}.stage"

    async def append_file(self, target: Path, offset: int, source: Path, length: int) -> None:
        """Append ``source`` at ``offset`` of ``target`` in the kernel (no bytes through Python)."""
        def _append() -> None:
            copied = _copy_into(target, offset, source, length, self.fsync)
            if copied != length:
                raise OSError(f"staged chunk has {copied} of {length} bytes")
        await self.run(_append)

    async def concat(self, target: Path, sources: list[tuple[Path, int]]) -> int:
        """Write the sources one after the other into ``target``; each must hold its length."""
        def _concat() -> int:
            offset = 0
            for source, length in sources:
                copied = _copy_into(target, offset, source, length, False)
                if copied != length:
                    raise FileNotFoundError(f"{source.name} holds {copied} of {length} bytes")
                offset += copied
            if self.fsync:
                _sync(target)
            return offset
        return await self.run(_concat)

    async def delete(self, *paths: Path) -> None:
        def _delete() -> None:
            for path in paths:
                path.unlink(missing_ok=True)
        await self.run(_delete)

    # -------------------------------------------------- the UploadStore interface (datastore.py)
    max_length: int | None = None  # one file holds any length
    max_length_reason = ""

    async def stored_offset(self, upload: Upload) -> int | None:
        path = self.path(upload.id)
        size = self.size_now(path)  # one stat: cheaper inline than a hop to the pool per request
        if size is None:
            return None
        if upload.length is not None and size > upload.length:
            await self.truncate(path, upload.length)
            size = upload.length
        if size > upload.offset and self.fsync:
            await self.sync(path)  # only durable bytes may be acknowledged
        return size

    def writer(self, upload: Upload) -> "Appender":
        return self.appender(self.path(upload.id), upload.offset)

    def stager(self, upload: Upload, hasher: Any) -> "StagedFile":
        return StagedFile(self, upload, hasher)

    async def finish(self, upload: Upload) -> None:
        """Nothing to do: the upload's one file already holds every byte."""

    def published_path(self, upload_id: str) -> str:
        return self.layout.relative(self.layout.original_file(upload_id))

    async def publish(self, upload: Upload) -> str:
        await self.run(self.layout.finalize, upload.id)  # a rename, whatever the size
        return self.published_path(upload.id)

    async def content(self, upload: Upload) -> Content | None:
        path = self.layout.resolve(upload.storage_path)
        size = await self.size(path)
        if size is None and upload.concat != "partial":
            # Completion commits before the bytes move to originals/: a process that died in
            # between left them in uploads/. Publishing is idempotent, so repair it here too.
            path = self.layout.resolve(await self.publish(upload))
            size = await self.size(path)
        return None if size is None else Content(size, path=path)

    async def terminate(self, upload: Upload) -> None:
        await self.run(self.purge, upload)

    def purge(self, upload: Upload) -> None:
        paths = [self.path(upload.id), self.staging_path(upload.id)]
        if not (upload.is_complete and upload.concat != "partial"):
            paths.append(self.layout.resolve(upload.storage_path))  # never an original media owns
        for path in paths:
            path.unlink(missing_ok=True)

    async def concatenate(self, upload_id: str, parts: list[Upload]) -> str:
        target = self.path(upload_id)
        await self.create(upload_id)
        sources = [(self.layout.resolve(part.storage_path), part.length or 0) for part in parts]
        try:
            await self.concat(target, sources)
        except BaseException:
            await self.delete(target)
            raise
        return self.layout.relative(target)

    async def read(self, upload: Upload) -> AsyncIterator[bytes]:
        """The upload's file in blocks of 1 MiB, read on the pool: where its row says, or
        in originals/ when it was published since (the row read may be older)."""
        path = self.layout.resolve(upload.storage_path)
        if not path.exists() and upload.concat != "partial":
            path = self.layout.original_file(upload.id)
        f = await self.run(open, path, "rb")  # FileNotFoundError when neither is there
        try:
            while block := await self.run(f.read, 1 << 20):
                yield block
        finally:
            f.close()

    def fence_writes(self, newest_token: Callable[[str], Awaitable[int | None]]) -> None:
        """Nothing to fence: an appender writes only while its request runs under the lock."""


class StagedFile:
    """A checksummed body staged in ``<id>.stage``, appended in the kernel once verified."""

    def __init__(self, store: FileStore, upload: Upload, hasher: Any):
        self._store = store
        self._upload = upload
        self._path = store.staging_path(upload.id)
        self._appender = store.appender(self._path, 0, hasher, truncate=True, writeback=False)

    @property
    def failed(self) -> OSError | None:
        return self._appender.failed

    async def write(self, chunk: bytes) -> None:
        await self._appender.write(chunk)

    async def close(self) -> int:
        return await self._appender.close(sync=False)  # synced by the append, if it is kept

    async def commit(self) -> None:
        store = self._store
        await store.append_file(store.path(self._upload.id), self._upload.offset, self._path,
                                self._appender.written)

    async def discard(self) -> None:
        await self._store.delete(self._path)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _copy_into(target: Path, offset: int, source: Path, total: int, sync: bool) -> int:
    """Copy the first ``total`` bytes of ``source``; returns fewer if the source is shorter."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    dst = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        copied = 0
        while copied < total:
            n = os.copy_file_range(src, dst, total - copied, copied, offset + copied)
            if n == 0:
                break
            copied += n
        if sync:
            os.fdatasync(dst)
        return copied
    finally:
        os.close(src)
        os.close(dst)


class Appender:
    """Writes a stream of chunks at ``offset``; ``written`` counts only what reached the file.

    Chunks are gathered into batches and handed to ``pwritev`` on the thread pool, one batch in
    flight while the next is received: the event loop never blocks on the disk, memory stays
    bounded (two batches), and no batch is joined into one big copy. After a failed write
    nothing more is written, so the file never gets a hole and ``written`` stays exact.
    """

    def __init__(self, store: FileStore, path: Path, offset: int, hasher: Any = None,
                 truncate: bool = False, writeback: bool = True):
        self._store = store
        self._offset = offset
        # A staged body that may still be refused is not worth pushing to the disk early.
        self._writeback = store.writeback if writeback else None
        self._hasher = hasher
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(path, flags, 0o600)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._scheduled = 0
        self._inflight: asyncio.Future[int] | None = None
        self.written = 0
        self.failed: OSError | None = None

    def _write(self, buffers: list[bytes], position: int, writeback: bool = True) -> int:
        """Runs on the pool; returns the bytes written, recording (not raising) a failure."""
        if self._hasher is not None:
            for data in buffers:
                self._hasher.update(data)
        done = 0
        try:
            for start in range(0, len(buffers), IOV_MAX):
                group: list[Any] = buffers[start:start + IOV_MAX]
                left = sum(len(b) for b in group)
                while left:
                    n = os.pwritev(self._fd, group, position + done)
                    done += n
                    left -= n
                    if left:
                        group = _skip(group, n)
        except OSError as exc:
            self.failed = exc
        if writeback and self._writeback is not None and done:
            self._writeback(self._fd, position, done)
        return done

    def _write_last(self, buffers: list[bytes], position: int, sync: bool) -> int:
        """The last batch and the fdatasync in one trip to the pool (one hand-off per PATCH
        fewer); the sync covers every byte written, also when this batch failed."""
        done = self._write(buffers, position, writeback=False) if buffers and self.failed is None else 0
        if sync and (self.written or done):
            os.fdatasync(self._fd)
        return done

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            self.written += await inflight

    async def write(self, chunk: bytes) -> None:
        if self.failed is not None:
            raise self.failed
        # A full batch goes to the pool when the next chunk arrives, not as it fills: the end
        # of a body then always has bytes left for ``close``, whose one hand-off writes them,
        # fdatasyncs and (``close_then``) records the offset. A body of up to a batch (1 MiB
        # PATCHes) costs that one hand-off and one disk write; smaller early batches cost
        # more CPU in thread switches, and their writeback split the fdatasync's I/O in two.
        if self._buffered >= BATCH_BYTES or len(self._buffer) >= BATCH_CHUNKS:
            await self._flush_async()
            if self.failed is not None:
                raise self.failed
        self._buffer.append(chunk)
        self._buffered += len(chunk)

    async def _flush_async(self) -> None:
        await self._drain()
        if self.failed is not None:
            return
        buffers, position = self._buffer, self._offset + self._scheduled
        self._scheduled += self._buffered
        self._buffer, self._buffered = [], 0
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(self._store.executor, self._write, buffers, position)

    async def close(self, sync: bool | None = None) -> int:
        """Write what is buffered, make it durable, and return the bytes written.

        A write failure is not raised here but left in ``failed``: the caller still records
        the bytes that did reach the file."""
        sync = self._store.fsync if sync is None else sync
        try:
            await self._drain()
            buffers, position = self._buffer, self._offset + self._scheduled
            self._buffer, self._buffered = [], 0
            if buffers or (sync and self.written):
                self.written += await self._store.run(self._write_last, buffers, position, sync)
        finally:
            os.close(self._fd)
        return self.written

    async def close_then(self, record: Callable[[int], None]) -> int:
        """``close``, then ``record(written)`` on the same pool thread once those bytes are
        durable (the handler's offset update): one hand-off at the end of a PATCH instead of
        two. Nothing is recorded when nothing was written, nor when the fdatasync failed."""
        try:
            await self._drain()
            buffers, position = self._buffer, self._offset + self._scheduled
            self._buffer, self._buffered = [], 0
            if buffers or self.written:
                await self._store.run(self._write_last_then, buffers, position, record)
        finally:
            os.close(self._fd)
        return self.written

    def _write_last_then(self, buffers: list[bytes], position: int, record: Callable[[int], None]) -> None:
        """On the pool: the last batch, the fdatasync, then ``record``. The event loop is
        awaiting this call, so ``written`` is counted here, before ``record`` may raise."""
        self.written += self._write_last(buffers, position, self._store.fsync)
        if self.written:
            record(self.written)


def _skip(buffers: list[Any], n: int) -> list[Any]:
    """The buffers left after a short ``pwritev`` wrote the first ``n`` bytes."""
    out: list[Any] = []
    for data in buffers:
        if n >= len(data):
            n -= len(data)
            continue
        out.append(memoryview(data)[n:] if n else data)
        n = 0
    return out
