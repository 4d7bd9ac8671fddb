"""One request at a time per upload, across every server process on the machine.

An ``flock`` on a per-upload lock file is dropped by the kernel when its holder dies, so a
SIGKILLed server never leaves an upload locked. A request that finds the upload held asks the
holder to stop (it touches ``<id>.release``; the holder checks a few times a second, saves what
it has received and lets go), as tusd's lock release requests do, so a client resuming after a
network drop never waits for the dead connection's read timeout.

That is the single-machine ``Locker``. Behind a load balancer every instance must see the same
lock, so ``[locks] backend = "redis"`` swaps in ``RedisLocks`` (``redislocks.py``): same
interface, plus a fencing token per acquisition (``LockHandle.token``), for a lease can run out
under a holder that froze, whereas an flock cannot. ``open_locks`` picks one from the settings.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncContextManager, AsyncIterator, Awaitable, Callable, ContextManager, Iterator, Protocol

from models.config import Settings
from models.layout import Layout

from tus_server.tus import errors as E

POLL_SECONDS = 0.02
RENEW_RELEASE_SECONDS = 0.5


Precheck = Callable[[], Awaitable[object]]
# Writes the lock's fencing token into the upload's row unless a newer one is there; answers
# the row's token afterwards (== the one given when it was taken), None when there is no row.
Fence = Callable[[str, int], Awaitable[int | None]]


class LockHandle(Protocol):
    # The fencing token of this acquisition, which every offset update of the holder carries
    # (the row refuses an older one); None for locks that cannot go stale under a live holder.
    token: int | None

    def release_requested(self) -> bool:
        """True once another request asked for the upload, or the lock was lost: stop, save, let go."""
        ...


class Locker(Protocol):
    """One request at a time per upload: what the tus handlers and ``tusflow cleanup`` need."""

    timeout: float

    def hold(self, upload_id: str, precheck: Precheck | None = None) -> AsyncContextManager[LockHandle]:
        """Hold the upload's lock, asking a current holder to let go; 423 after ``timeout``.
        ``precheck`` runs only when another request holds it, before that one is asked to stop:
        a request bound to fail (unknown, expired, not the owner's) must never interrupt a
        running upload, and the usual free lock costs no extra read."""
        ...

    def try_hold(self, upload_id: str) -> ContextManager[bool]:
        """Take the lock only if it is free right now (maintenance, blocking, no event loop)."""
        ...

    def forget(self, upload_id: str) -> None:
        """The upload no longer exists: drop what its lock left behind."""
        ...

    async def aclose(self) -> None: ...


def open_locks(settings: Settings, layout: Layout, fence: Fence | None = None,
               timeout: float | None = None) -> Locker:
    """The locker ``[locks] backend`` names (``auto``: Redis when the bytes live in S3).
    ``fence`` (the upload repo's claim) is what makes the Redis lock's token stick."""
    timeout = settings.server.lock_timeout if timeout is None else timeout
    if settings.locks.resolved(settings.storage) == "redis":
        from tus_server.tus.redislocks import RedisLocks  # redis.asyncio loads only when used
        return RedisLocks(settings, timeout, fence)
    return UploadLocks(layout.locks, timeout)


class FileLockHandle:
    token: int | None = None  # the kernel drops an flock with its holder: nothing to fence

    def __init__(self, release_path: Path):
        self._release_path = release_path

    def release_requested(self) -> bool:
        return self._release_path.exists()


class UploadLocks:
    """The file ``Locker``: flock files in ``<data_dir>/locks``."""

    def __init__(self, lock_dir: Path, timeout: float):
        self.lock_dir = lock_dir
        self.timeout = timeout

    @asynccontextmanager
    async def hold(self, upload_id: str, precheck: Precheck | None = None) -> AsyncIterator[LockHandle]:
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
                yield FileLockHandle(release_path)
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

    async def aclose(self) -> None:
        pass

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
