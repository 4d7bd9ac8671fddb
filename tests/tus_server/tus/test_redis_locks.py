"""The Redis locker (tus_server/tus/redislocks.py) against a real redis-server and database.

Two ``RedisLocks`` objects stand for two server instances: they share nothing but Redis and
the database, exactly like instances on two machines.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis
from sqlalchemy.engine import Engine

from models.config import S3Config, Settings, load_settings
from models.db import init_db, make_engine
from models.layout import Layout
from models.tables import Upload
from tests.support.procs import RedisServer
from tests.support.s3 import BUCKET, S3Server
from tests.support.waiting import wait_until_async
from tus_server.tus import errors as E
from tus_server.tus.locks import UploadLocks, open_locks
from tus_server.tus.redislocks import RedisLocks, fence_key, lock_key
from tus_server.tus.repo import UploadRepo
from tus_server.tus.s3store import S3Store

LEASE = 0.6
PART = 5 * 1024**2  # S3's minimum part size


@pytest.fixture
def lock_settings(make_config: Callable[..., Path], redis_server: RedisServer) -> Settings:
    return load_settings(make_config(locks={"backend": "redis", "lease": LEASE},
                                     redis={"url": redis_server.url}), env={})


@pytest.fixture
def engine(lock_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(lock_settings)
    init_db(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


async def new_upload(repo: UploadRepo, upload_id: str = "up1") -> str:
    await repo.add(Upload(id=upload_id, length=100, storage_path=f"uploads/{upload_id}"))
    return upload_id


@pytest.mark.file_only  # the S3 pass pins [locks] backend = "file"
def test_backend_follows_the_settings(lock_settings: Settings, make_config: Callable[..., Path]) -> None:
    layout = Layout(lock_settings.data_dir)
    assert isinstance(open_locks(lock_settings, layout), RedisLocks)
    plain = load_settings(make_config(), env={})
    assert isinstance(open_locks(plain, layout), UploadLocks)  # auto + file storage: flock files
    s3 = plain.replace(storage={"backend": "s3"})
    assert isinstance(open_locks(s3, layout), RedisLocks)  # auto + shared bytes: Redis


async def test_stale_holder_write_is_refused(lock_settings: Settings, engine: Engine, raw: redis.Redis) -> None:
    """Instance A's holder froze past its lease; B took the upload. A's late offset update
    carries the old token and changes nothing; B's goes through."""
    repo = UploadRepo(engine, 3600)
    upload_id = await new_upload(repo)
    a = RedisLocks(lock_settings, 2.0, repo.claim)
    b = RedisLocks(lock_settings, 2.0, repo.claim)
    try:
        async with a.hold(upload_id) as stale:
            assert stale.token is not None
            await repo.update(upload_id, fence=stale.token, offset=10)
            raw.delete(lock_key(upload_id))  # the lease ran out while A was frozen
            async with b.hold(upload_id) as fresh:
                assert fresh.token is not None and fresh.token > stale.token
                row = await repo.get(upload_id)
                assert row is not None and row.lock_token == fresh.token
                with pytest.raises(E.TusError) as refused:
                    await repo.update(upload_id, fence=stale.token, offset=40)
                assert refused.value.status == 423
                row = await repo.get(upload_id)
                assert row is not None and row.offset == 10
                await repo.update(upload_id, fence=fresh.token, offset=25)
                # A's renewal finds another owner: A is told to stop at once.
                await wait_until_async(stale.release_requested, what="the stale holder notices its lost lease")
                assert not fresh.release_requested()
        row = await repo.get(upload_id)
        assert row is not None and row.offset == 25
    finally:
        await a.aclose()
        await b.aclose()


async def test_release_request_reaches_the_holder_on_another_instance(
        lock_settings: Settings, engine: Engine) -> None:
    repo = UploadRepo(engine, 3600)
    upload_id = await new_upload(repo)
    other_id = await new_upload(repo, "up2")
    a = RedisLocks(lock_settings, 5.0, repo.claim)
    b = RedisLocks(lock_settings, 5.0, repo.claim)
    prechecks: list[str] = []

    async def precheck() -> None:
        prechecks.append(upload_id)

    try:
        async with a.hold(other_id) as bystander:
            async with a.hold(upload_id) as holder:
                async def take() -> int | None:
                    async with b.hold(upload_id, precheck) as taken:
                        return taken.token
                waiter = asyncio.ensure_future(take())
                await wait_until_async(holder.release_requested, what="the holder on A is asked to let go")
                assert not waiter.done()  # B waits for A to save and let go
                first = holder.token
            token = await asyncio.wait_for(waiter, 5)
            assert token is not None and first is not None and token > first
            assert prechecks == [upload_id]
            assert not bystander.release_requested()  # only the asked-for upload is stopped
    finally:
        await a.aclose()
        await b.aclose()


async def test_free_lock_runs_no_precheck_and_a_stuck_holder_gives_423(
        lock_settings: Settings, engine: Engine) -> None:
    repo = UploadRepo(engine, 3600)
    upload_id = await new_upload(repo)
    a = RedisLocks(lock_settings, 5.0, repo.claim)
    b = RedisLocks(lock_settings, 0.4, repo.claim)
    calls: list[int] = []

    async def precheck() -> None:
        calls.append(1)

    try:
        async with b.hold(upload_id, precheck):
            pass
        assert calls == []
        async with a.hold(upload_id):  # a holder that never stops (it ignores the request)
            with pytest.raises(E.TusError) as locked:
                async with b.hold(upload_id, precheck):
                    pass
        assert locked.value.status == 423 and calls == [1]
        async with b.hold(upload_id) as again:  # and once it let go, the lock is free again
            assert again.token is not None
    finally:
        await a.aclose()
        await b.aclose()


async def test_dead_instance_lock_is_taken_over_after_its_lease(
        lock_settings: Settings, engine: Engine, raw: redis.Redis) -> None:
    repo = UploadRepo(engine, 3600)
    upload_id = await new_upload(repo)
    raw.set(lock_key(upload_id), "a-crashed-instance", px=int(LEASE * 1000))
    b = RedisLocks(lock_settings, 5.0, repo.claim)
    try:
        async with b.hold(upload_id) as taken:
            assert taken.token is not None
            assert raw.get(lock_key(upload_id)) != b"a-crashed-instance"
        assert raw.get(lock_key(upload_id)) is None  # released on exit
    finally:
        await b.aclose()


async def test_lost_fence_counter_is_raised_past_the_row(
        lock_settings: Settings, engine: Engine, raw: redis.Redis) -> None:
    """Redis restarted without persistence: its counter starts again below the row's token,
    and the lock raises it rather than being refused forever."""
    repo = UploadRepo(engine, 3600)
    upload_id = await new_upload(repo)
    assert await repo.claim(upload_id, 50) == 50
    raw.delete(fence_key(upload_id))
    a = RedisLocks(lock_settings, 2.0, repo.claim)
    try:
        async with a.hold(upload_id) as held:
            assert held.token is not None and held.token > 50
            await repo.update(upload_id, fence=held.token, offset=3)
        row = await repo.get(upload_id)
        assert row is not None and row.offset == 3 and row.lock_token == held.token
    finally:
        await a.aclose()


async def test_try_hold_never_waits(lock_settings: Settings, engine: Engine) -> None:
    repo = UploadRepo(engine, 3600)
    upload_id = await new_upload(repo)
    a = RedisLocks(lock_settings, 2.0, repo.claim)
    maintenance = open_locks(lock_settings, Layout(lock_settings.data_dir), None, 0)
    try:
        async with a.hold(upload_id):
            with maintenance.try_hold(upload_id) as held:
                assert held is False
        with maintenance.try_hold(upload_id) as held:
            assert held is True
    finally:
        await a.aclose()


async def test_superseded_holder_uploads_no_s3_part(lock_settings: Settings, engine: Engine, raw: redis.Redis,
                                                    s3_servers: Callable[[str], S3Server]) -> None:
    """Instance A's PATCH froze past its lease with half a part buffered; B took the upload
    (a newer fencing token). When A wakes and fills its part, the S3 writer asks for the newest
    token first and uploads nothing; B's bytes are what the object ends up holding."""
    server = s3_servers("seaweedfs")
    cfg = S3Config(**server.storage_section(server.new_prefix("fence"), part_size=PART, max_buffered_parts=4))
    repo = UploadRepo(engine, 3600)
    a = RedisLocks(lock_settings, 2.0, repo.claim)
    b = RedisLocks(lock_settings, 2.0, repo.claim)
    pool = ThreadPoolExecutor(4, "fence-test")
    store_a, store_b = S3Store(cfg, pool), S3Store(cfg, pool)  # two instances
    store_a.fence_writes(a.newest_token)
    store_b.fence_writes(b.newest_token)
    upload_id = secrets.token_hex(16)
    length = 2 * PART
    await repo.add(Upload(id=upload_id, length=length, storage_path=await store_a.create(upload_id)))
    data_a, data_b = os.urandom(length), os.urandom(length)
    try:
        async with a.hold(upload_id) as stale:
            mine = Upload(id=upload_id, length=length, offset=0, storage_path="", lock_token=stale.token)
            writer_a = store_a.writer(mine)
            await writer_a.write(data_a[:PART // 2])  # buffered: below one part, nothing sent yet
            raw.delete(lock_key(upload_id))  # the lease ran out while A was frozen
            async with b.hold(upload_id) as fresh:
                assert fresh.token is not None and stale.token is not None and fresh.token > stale.token
                try:
                    await writer_a.write(data_a[PART // 2:])  # A wakes: a whole part, sent in the background
                except OSError:
                    pass
                assert await writer_a.close() == 0
                assert "superseded" in str(writer_a.failed)
                assert server.client().list_parts(Bucket=BUCKET, Key=store_a.target_key(mine),
                                                  UploadId=store_a.multipart_id(mine)).get("Parts", []) == []
                theirs = Upload(id=upload_id, length=length, offset=0, storage_path="", lock_token=fresh.token)
                writer_b = store_b.writer(theirs)
                for i in range(0, length, 1 << 20):
                    await writer_b.write(data_b[i:i + (1 << 20)])
                assert await writer_b.close() == length and writer_b.failed is None
                theirs.offset = length
                await store_b.finish(theirs)
        stored = server.read(store_b.target_key(theirs)) or b""
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data_b).hexdigest()
    finally:
        await a.aclose()
        await b.aclose()
        pool.shutdown(wait=True)
