"""Upload bytes on the local disk, behind the narrow interface the handlers use.

File I/O runs on a small thread pool so the event loop never blocks. Appends are batched
(about 1 MiB) and one batch is written while the next is received, which keeps a single upload
near disk speed with bounded memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from models.layout import Layout

BATCH_BYTES = 1 << 20
T = TypeVar("T")


class FileStore:
    def __init__(self, layout: Layout, fsync: bool, executor: ThreadPoolExecutor):
        self.layout = layout
        self.fsync = fsync
        self.executor = executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def path(self, upload_id: str) -> Path:
        return self.layout.upload_file(upload_id)

    async def create(self, upload_id: str) -> None:
        def _create() -> None:
            fd = os.open(self.path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)
        await self.run(_create)

    async def size(self, path: Path) -> int | None:
        def _size() -> int | None:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None
        return await self.run(_size)

    async def truncate(self, path: Path, length: int) -> None:
        await self.run(os.truncate, path, length)

    def appender(self, path: Path, offset: int, hasher: "hashlib._Hash | None" = None) -> "Appender":
        return Appender(self, path, offset, hasher)

    def staging_path(self, upload_id: str) -> Path:
        return self.layout.uploads / f"{upload_id}.stage"

    async def append_file(self, target: Path, offset: int, source: Path) -> int:
        """Append ``source`` at ``offset`` of ``target`` in the kernel (no bytes through Python)."""
        return await self.run(_copy_into, target, offset, source, self.fsync)

    async def concat(self, target: Path, sources: list[Path]) -> int:
        def _concat() -> int:
            offset = 0
            for source in sources:
                offset += _copy_into(target, offset, source, False)
            if self.fsync:
                _sync(target)
            return offset
        return await self.run(_concat)

    async def delete(self, *paths: Path) -> None:
        def _delete() -> None:
            for path in paths:
                path.unlink(missing_ok=True)
        await self.run(_delete)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _copy_into(target: Path, offset: int, source: Path, sync: bool) -> int:
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    dst = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        total = os.fstat(src).st_size
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
    """Writes a stream of chunks at ``offset``; ``written`` counts what reached the file."""

    def __init__(self, store: FileStore, path: Path, offset: int, hasher: Any = None):
        self._store = store
        self._offset = offset
        self._hasher = hasher
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._inflight: asyncio.Future | None = None
        self.written = 0

    def _write(self, data: bytes, position: int) -> None:
        if self._hasher is not None:
            self._hasher.update(data)
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, position)
            position += n
            view = view[n:]

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def write(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= BATCH_BYTES:
            await self._flush_async()

    async def _flush_async(self) -> None:
        await self._drain()
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        position = self._offset + self.written
        self._buffer, self._buffered = [], 0
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(self._store.executor, self._write, data, position)
        self.written += len(data)

    async def close(self, sync: bool | None = None) -> int:
        """Write what is buffered, make it durable, and return the bytes written."""
        try:
            if self._buffered:
                await self._flush_async()
            await self._drain()
            if self._store.fsync if sync is None else sync:
                await self._store.run(os.fdatasync, self._fd)
        finally:
            os.close(self._fd)
        return self.written
