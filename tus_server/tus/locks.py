"""One request at a time per upload, across every server process on the machine.

An ``flock`` on a per-upload lock file is dropped by the kernel when its holder dies, so a
SIGKILLed server never leaves an upload locked. A request that finds the upload held asks the
holder to stop (it touches ``<id>.release``; the holder checks a few times a second, saves what
it has received and lets go), as tusd's lock release requests do, so a client resuming after a
network drop never waits for the dead connection's read timeout.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator

from tus_server.tus import errors as E

POLL_SECONDS = 0.02
RENEW_RELEASE_SECONDS = 0.5


class LockHandle:
    def __init__(self, release_path: Path):
        self._release_path = release_path

    def release_requested(self) -> bool:
        return self._release_path.exists()


class UploadLocks:
    def __init__(self, lock_dir: Path, timeout: float):
        self.lock_dir = lock_dir
        self.timeout = timeout

    @asynccontextmanager
    async def hold(self, upload_id: str,
                   precheck: Callable[[], Awaitable[object]] | None = None) -> AsyncIterator[LockHandle]:
        """Hold the upload's lock. ``precheck`` runs only when another request holds it, before
        that one is asked to stop: a request bound to fail (unknown, expired, not the owner's)
        must never interrupt a running upload, and the usual free lock costs no extra read."""
        lock_path = self.lock_dir / f"{upload_id}.lock"
        release_path = self.lock_dir / f"{upload_id}.release"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _try_flock(fd):
                if precheck is not None:
                    await precheck()
                await self._acquire(fd, release_path)
            try:
                release_path.unlink(missing_ok=True)
                yield LockHandle(release_path)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def _acquire(self, fd: int, release_path: Path) -> None:
        deadline = time.monotonic() + self.timeout
        last_request = 0.0
        while True:
            if _try_flock(fd):
                return
            now = time.monotonic()
            if now >= deadline:
                raise E.ERR_LOCKED()
            if now - last_request >= RENEW_RELEASE_SECONDS:
                release_path.touch()
                last_request = now
            await asyncio.sleep(POLL_SECONDS)

    def forget(self, upload_id: str) -> None:
        """Remove the lock files of an upload that no longer exists."""
        for suffix in (".lock", ".release"):
            (self.lock_dir / f"{upload_id}{suffix}").unlink(missing_ok=True)

    @contextmanager
    def try_hold(self, upload_id: str) -> Iterator[bool]:
        """Take the lock only if it is free right now (for maintenance, which must never stop
        or wait for a live request): yields whether it was taken."""
        fd = os.open(self.lock_dir / f"{upload_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _try_flock(fd):
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
