"""Per-upload locks in Redis, so that any instance behind a load balancer may serve any request.

The same ``Locker`` as the flock files of ``locks.py``, built from what the notes measured
(../shared/s3-scaleout-notes.md, section 4):

- ``tus:lock:{id}`` holds the owner (a random string per acquisition), set with NX and a lease
  (``[locks] lease``) that a task renews every lease/3 while the request runs. A crashed or
  frozen instance therefore loses the lock after at most one lease, which an flock never needs.
- Each acquisition takes a **fencing token** (``INCR tus:fence:{id}``) in the same script, and
  ``fence`` writes it into the upload's row (``Upload.lock_token``) before the holder reads
  anything: the row keeps the newest token and ``UploadRepo.update(..., fence=t)`` refuses an
  older one. A holder that froze past its lease and wakes up finds its next offset update
  refused (423) instead of overwriting what the newer holder recorded. When the row refuses a
  fresh token (Redis lost its counter: a restart without persistence), the counter is raised
  past the row's and the lock taken again.
- **Release requests across instances**: a request that finds the upload held PUBLISHes on
  ``tus:release:{id}`` and repeats every half second (pub/sub delivers at most once, and the
  holder may not be subscribed yet), then takes the lock as soon as it is free (polled every
  20 ms: a hand-off costs tens of milliseconds, not a read timeout). Every process keeps one
  pattern subscription and flags its own holders of that id, whose body reader then stops,
  saves what arrived and lets go, as with the ``.release`` files on one machine.
- A lost lease (the renewal finds another owner) reads as a release request too, so the holder
  stops at once rather than at its next write.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterator

import redis.asyncio as aioredis
from redis import Redis
from redis.exceptions import RedisError

from models.config import Settings
from models.redis_conn import connect, redis_url
from tus_server.tus import errors as E
from tus_server.tus.locks import Fence, Precheck

log = logging.getLogger("tusflow.tus.locks")

PREFIX = "tus:"
POLL_SECONDS = 0.02
RENEW_RELEASE_SECONDS = 0.5
# A fence counter outlives its upload by this much, then goes (a longer idle upload is handled
# by the reseed: the row's token wins).
FENCE_TTL_MS = 30 * 86400 * 1000

# KEYS: lock, fence; ARGV: owner, lease ms, fence ttl ms. The token, or nil when held.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return token
end
return false
"""
# KEYS: lock; ARGV: owner, lease ms. 1 while we own it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lock; ARGV: owner. Delete only our own lock (a lapsed lease may be someone else's now).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS: fence; ARGV: at least this value.
_RAISE_FENCE = """
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""


def lock_key(upload_id: str) -> str:
    return f"{PREFIX}lock:{upload_id}"


def fence_key(upload_id: str) -> str:
    return f"{PREFIX}fence:{upload_id}"


def release_channel(upload_id: str) -> str:
    return f"{PREFIX}release:{upload_id}"


class RedisLockHandle:
    def __init__(self, token: int):
        self.token: int | None = token
        self.requested = False  # another request, on any instance, asked for the upload
        self.lost = False  # the lease ran out and someone else may hold the lock now

    def release_requested(self) -> bool:
        return self.requested or self.lost


class RedisLocks:
    """The Redis ``Locker``: one per process, with one pub/sub listener for release requests."""

    def __init__(self, settings: Settings, timeout: float, fence: Fence | None):
        self.timeout = timeout
        self.lease_ms = max(1, int(settings.locks.lease * 1000))
        self.fence = fence
        self._settings = settings
        self._url = redis_url(settings)
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None
        self._holders: dict[str, set[RedisLockHandle]] = {}

    # ------------------------------------------------------------------ connection
    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self._url, socket_timeout=5.0,
                                                  socket_connect_timeout=5.0)
        return self._redis

    async def _listen(self) -> None:
        """Flag local holders of every upload some instance asks for; reconnect when cut."""
        assert self._subscribed is not None
        while True:
            pubsub = self._client().pubsub()
            try:
                await pubsub.psubscribe(release_channel("*"))
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    channel = message["channel"]
                    upload_id = (channel.decode() if isinstance(channel, bytes) else channel)[
                        len(release_channel("")):]
                    for handle in self._holders.get(upload_id, ()):
                        handle.requested = True
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("release-request subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(0.2)
            finally:
                await pubsub.aclose()

    async def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._subscribed = asyncio.Event()
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        assert self._subscribed is not None
        try:
            await asyncio.wait_for(self._subscribed.wait(), 1.0)
        except asyncio.TimeoutError:  # requests repeat; the listener keeps trying meanwhile
            pass

    # ------------------------------------------------------------------ the lock
    async def _try(self, upload_id: str, owner: str) -> int | None:
        token = await self._client().eval(_ACQUIRE, 2, lock_key(upload_id), fence_key(upload_id),
                                          owner, self.lease_ms, FENCE_TTL_MS)
        return None if token is None else int(token)

    async def _acquire(self, upload_id: str, owner: str, precheck: Precheck | None) -> int:
        token = await self._try(upload_id, owner)
        if token is not None:
            return token
        if precheck is not None:
            await precheck()
        redis = self._client()
        deadline = time.monotonic() + self.timeout
        last_request = float("-inf")
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise E.ERR_LOCKED()
            if now - last_request >= RENEW_RELEASE_SECONDS:
                await redis.publish(release_channel(upload_id), owner)
                last_request = now
            await asyncio.sleep(POLL_SECONDS)
            token = await self._try(upload_id, owner)
            if token is not None:
                return token

    async def _release(self, upload_id: str, owner: str) -> None:
        try:
            await self._client().eval(_RELEASE, 1, lock_key(upload_id), owner)
        except (RedisError, OSError) as exc:  # the lease frees it anyway
            log.warning("upload=%s lock release failed: %s", upload_id, exc)

    async def _claim(self, upload_id: str, owner: str, token: int) -> int:
        """Write the token into the row; when the row holds a newer one (the counter was lost),
        raise the counter past it and take the lock again. Answers the token that stuck."""
        for _ in range(3):
            if self.fence is None:
                return token
            stored = await self.fence(upload_id, token)
            if stored is None or stored == token:
                return token
            log.warning("upload=%s fence counter behind the row (%d < %d); raising it",
                        upload_id, token, stored)
            await self._client().eval(_RAISE_FENCE, 1, fence_key(upload_id), stored)
            await self._release(upload_id, owner)
            token = await self._acquire(upload_id, owner, None)
        raise E.ERR_LOCKED("the upload's lock token could not be recorded; retry")

    async def _renew(self, upload_id: str, owner: str, handle: RedisLockHandle) -> None:
        """Keep the lease while the request runs; a lost lease stops the holder."""
        interval = self.lease_ms / 3000
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self._client().eval(_RENEW, 1, lock_key(upload_id), owner, self.lease_ms)
            except (RedisError, OSError) as exc:
                log.warning("upload=%s lock renewal failed: %s", upload_id, exc)
                if time.monotonic() - last_ok >= self.lease_ms / 1000:
                    handle.lost = True
                    return
                continue
            if not renewed:
                log.warning("upload=%s lock lease lapsed; stopping this request", upload_id)
                handle.lost = True
                return
            last_ok = time.monotonic()

    @asynccontextmanager
    async def hold(self, upload_id: str, precheck: Precheck | None = None) -> AsyncIterator[RedisLockHandle]:
        owner = secrets.token_hex(12)
        await self._ensure_listener()
        token = await self._acquire(upload_id, owner, precheck)
        try:
            token = await self._claim(upload_id, owner, token)
        except BaseException:
            await self._release(upload_id, owner)
            raise
        handle = RedisLockHandle(token)
        self._holders.setdefault(upload_id, set()).add(handle)
        renewer = asyncio.get_running_loop().create_task(self._renew(upload_id, owner, handle))
        try:
            yield handle
        finally:
            renewer.cancel()
            holders = self._holders.get(upload_id)
            if holders is not None:
                holders.discard(handle)
                if not holders:
                    del self._holders[upload_id]
            await self._release(upload_id, owner)

    @contextmanager
    def try_hold(self, upload_id: str) -> Iterator[bool]:
        """For ``tusflow cleanup``: a plain blocking client, no token (it deletes the row, which
        refuses every later write of a stale holder anyway)."""
        owner = secrets.token_hex(12)
        client: Redis = connect(self._settings)
        try:
            if not client.set(lock_key(upload_id), owner, nx=True, px=self.lease_ms):
                yield False
                return
            try:
                yield True
            finally:
                client.eval(_RELEASE, 1, lock_key(upload_id), owner)
        finally:
            client.close()

    async def newest_token(self, upload_id: str) -> int | None:
        """The last fencing token issued for the upload (None when its counter is gone): a
        writer holding an older one has lost the lock, whatever its renewer believes yet."""
        value = await self._client().get(fence_key(upload_id))
        return None if value is None else int(value)

    def forget(self, upload_id: str) -> None:
        """Nothing to remove: the lock key goes with its holder, the fence counter by its TTL."""

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
            self._listener = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
