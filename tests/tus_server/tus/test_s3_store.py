"""The S3 upload store against two real S3 servers (SeaweedFS ``weed mini`` and moto's server):
parts on a fixed grid, the tail object, offsets derived from S3 alone (a second store instance
with nothing in memory stands for a crashed or other instance), staged bodies, completion on
the original's key, termination, concatenation by copy and streamed, the 10,000-part limit.
Everything is checked on what the bucket holds: ListParts, keys, sha256 of the objects."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest

from models.clock import utcnow
from models.config import S3Config
from models.tables import Upload
from tests.support.s3 import BUCKET, S3Server
from tus_server.tus.s3store import MAX_PARTS, S3Store

MiB = 1024**2
P = 5 * MiB


@pytest.fixture(params=["seaweedfs", "moto"])
def s3(request: pytest.FixtureRequest, s3_servers: Any) -> S3Server:
    return s3_servers(request.param)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(8, "s3-test")
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture
def prefix(s3: S3Server, request: pytest.FixtureRequest) -> str:
    return s3.new_prefix(request.node.name)


@pytest.fixture
def make_store(s3: S3Server, prefix: str, pool: ThreadPoolExecutor):  # type: ignore[no-untyped-def]
    """A new S3Store on this test's prefix: each one knows nothing but what S3 holds."""
    def _make(**overrides: Any) -> S3Store:
        section = s3.storage_section(prefix, part_size=P, max_buffered_parts=4)
        section.update(overrides)
        return S3Store(S3Config(**section), pool)
    return _make


@pytest.fixture
def store(make_store) -> S3Store:  # type: ignore[no-untyped-def]
    return make_store()


def new_upload(length: int | None, partial: bool = False) -> Upload:
    return Upload(id=secrets.token_hex(16), length=length, offset=0,
                  concat="partial" if partial else None, storage_path="")


async def create(store: S3Store, length: int | None, partial: bool = False) -> Upload:
    upload = new_upload(length, partial)
    upload.storage_path = await store.create(upload.id, partial)
    return upload


async def append(store: S3Store, upload: Upload, data: bytes, chunk: int = 256 * 1024) -> int:
    """One PATCH body through the store's writer; advances ``upload.offset`` like the handler."""
    writer = store.writer(upload)
    for i in range(0, len(data), chunk):
        await writer.write(data[i:i + chunk])
    written = await writer.close()
    assert writer.failed is None
    upload.offset += written
    return written


def sha(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


def parts_of(s3: S3Server, store: S3Store, upload: Upload) -> dict[int, int]:
    key = store.target_key(upload)
    client = s3.client()
    (multipart,) = [u["UploadId"] for u in client.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", [])
                    if u["Key"] == key]
    answer = client.list_parts(Bucket=BUCKET, Key=key, UploadId=multipart)
    return {p["PartNumber"]: p["Size"] for p in answer.get("Parts", [])}


async def test_parts_on_a_fixed_grid_and_a_tail_then_complete_on_the_original(store, make_store, s3, prefix) -> None:
    data = os.urandom(2 * P + 123_456)
    upload = await create(store, len(data))
    assert await append(store, upload, data[:P + 1000]) == P + 1000  # one part, a tail of 1000
    assert parts_of(s3, store, upload) == {1: P}
    tails = {k: v for k, v in s3.keys(prefix).items() if ".tail-" in k}
    assert list(tails.values()) == [1000]
    # Another instance (nothing in memory) sees the same offset, and continues from it.
    other = make_store()
    assert await other.stored_offset(upload) == P + 1000
    assert await append(other, upload, data[P + 1000:]) == len(data) - P - 1000
    assert parts_of(s3, store, upload) == {1: P, 2: P, 3: 123_456}
    assert await other.stored_offset(upload) == len(data)
    await other.finish(upload)
    assert s3.multipart_uploads(prefix) == []
    assert sha(s3.read(f"{prefix}originals/{upload.id}")) == sha(data)
    assert s3.keys(prefix) == {f"{prefix}originals/{upload.id}": len(data)}  # tails are gone
    assert await store.stored_offset(upload) == len(data)  # completed: the object answers
    content = await other.content(Upload(id=upload.id, storage_path=await other.publish(upload)))
    assert content is not None and content.size == len(data) and content.chunks is not None
    assert sha(b"".join([c async for c in content.chunks()])) == sha(data)


async def test_many_small_patches_keep_the_offset_exact(store, make_store) -> None:
    data = os.urandom(P + 300_000)
    upload = await create(store, len(data))
    for i in range(0, len(data), 700_000):  # bodies below the part size, across its boundary
        await append(make_store(), upload, data[i:i + 700_000], chunk=65536)
        assert await make_store().stored_offset(upload) == min(i + 700_000, len(data))
    await store.finish(upload)
    assert sha(store.client.get_object(Bucket=BUCKET, Key=store.original_key(upload.id))["Body"].read()) == sha(data)


async def test_a_stale_tail_under_a_part_is_not_counted_twice(store, s3) -> None:
    """A crash between sending the part that absorbs the tail and deleting the tail."""
    data = os.urandom(P + 10)
    upload = await create(store, None)
    await append(store, upload, data[:3 * MiB])
    multipart = store.multipart_id(upload)
    s3.client().upload_part(Bucket=BUCKET, Key=store.target_key(upload), UploadId=multipart,
                            PartNumber=1, Body=data[:P])
    assert await S3Store(store.cfg, store.executor).stored_offset(upload) == P
    upload.offset = P
    await append(store, upload, data[P:])
    upload.length = len(data)  # a deferred length, declared after the last byte
    await store.finish(upload)  # the tail becomes the last part by copy
    assert sha(s3.read(store.original_key(upload.id))) == sha(data)


async def test_a_part_missing_before_a_later_one_ends_the_offset(store, s3) -> None:
    """Parts go out several at a time: a gap (part 2 lost, part 3 stored) is not counted."""
    upload = await create(store, 4 * P)
    client = s3.client()
    multipart = store.multipart_id(upload)
    for number in (1, 3):
        client.upload_part(Bucket=BUCKET, Key=store.target_key(upload), UploadId=multipart,
                           PartNumber=number, Body=b"x" * P)
    assert await S3Store(store.cfg, store.executor).stored_offset(upload) == P


async def test_staged_body_counts_only_once_committed(store, make_store, s3, prefix) -> None:
    data = os.urandom(P + 2 * MiB)
    upload = await create(store, len(data) + 10)
    await append(store, upload, data[:MiB])
    hasher = hashlib.sha1()
    stager = store.stager(upload, hasher)
    for i in range(MiB, len(data), 300_000):
        await stager.write(data[i:i + 300_000])
    assert await stager.close() == len(data) - MiB
    assert hasher.digest() == hashlib.sha1(data[MiB:]).digest()
    assert await make_store().stored_offset(upload) == MiB  # staged bytes are not the upload's
    await stager.commit()
    await stager.discard()
    assert await make_store().stored_offset(upload) == len(data)
    assert not [k for k in s3.keys(prefix) if ".stage-" in k]
    # A refused body (digest mismatch: the handler discards it) leaves nothing behind.
    upload.offset = len(data)
    refused = store.stager(upload, hashlib.sha1())
    await refused.write(b"0123456789")
    await refused.close()
    await refused.discard()
    assert await make_store().stored_offset(upload) == len(data)
    assert not [k for k in s3.keys(prefix) if ".stage-" in k]


async def test_memory_slots_are_all_returned(make_store) -> None:
    """Parts in flight and the filling buffer each hold one of max_buffered_parts slots."""
    store = make_store(max_buffered_parts=2)
    data = os.urandom(3 * P + 5)
    uploads = [await create(store, len(data)) for _ in range(3)]
    import asyncio
    await asyncio.gather(*(append(store, u, data, chunk=MiB) for u in uploads))
    assert store.slots._value == 2  # noqa: SLF001 - a test of the store's own bound
    for upload in uploads:
        assert await store.stored_offset(upload) == len(data)


async def test_a_failed_write_keeps_what_was_stored_and_the_slots(store, s3, prefix) -> None:
    upload = await create(store, 3 * P)
    await append(store, upload, b"a" * (P + 7))
    (tail,) = [k for k in s3.keys(prefix) if ".tail-" in k]
    s3.client().delete_object(Bucket=BUCKET, Key=tail)  # the tail the next part must start with
    writer = store.writer(upload)
    with pytest.raises(OSError):
        for _ in range(12):
            await writer.write(b"b" * MiB)
    assert await writer.close() == 0
    assert isinstance(writer.failed, OSError)
    assert store.slots._value == 4  # noqa: SLF001


async def test_terminate_aborts_and_deletes_everything_but_a_published_original(store, s3, prefix) -> None:
    upload = await create(store, 3 * P)
    await append(store, upload, b"z" * (P + 100))
    await store.terminate(upload)
    assert s3.multipart_uploads(prefix) == [] and s3.keys(prefix) == {}
    done = await create(store, 10)
    await append(store, done, b"0123456789")
    await store.finish(done)
    done.completed_at = utcnow()
    await store.terminate(done)  # published: the original belongs to its media
    assert s3.keys(prefix) == {store.original_key(done.id): 10}


async def test_empty_upload_completes_to_an_empty_object(store, s3) -> None:
    upload = await create(store, 0)
    await store.finish(upload)
    assert s3.read(store.original_key(upload.id)) == b""


@pytest.mark.parametrize("sizes", [(P, P + 3, 10), (1000, 2 * MiB, 3)], ids=["copied", "streamed"])
async def test_concatenation(store, s3, prefix, sizes) -> None:
    blobs = [os.urandom(n) for n in sizes]
    parts = []
    for blob in blobs:
        partial = await create(store, len(blob), partial=True)
        await append(store, partial, blob)
        await store.finish(partial)
        partial.completed_at = utcnow()
        parts.append(partial)
    final_id = secrets.token_hex(16)
    assert await store.concatenate(final_id, parts + [parts[0]]) == f"uploads/{final_id}"
    assert sha(s3.read(store.original_key(final_id))) == sha(b"".join(blobs + [blobs[0]]))
    assert s3.multipart_uploads(prefix) == []
    await store.terminate(parts[1])
    with pytest.raises(FileNotFoundError):
        await store.concatenate(secrets.token_hex(16), parts)
    assert s3.multipart_uploads(prefix) == []


async def test_limit_is_ten_thousand_parts(store) -> None:
    assert store.max_length == MAX_PARTS * P
    assert "10000 parts" in store.max_length_reason


async def test_strays_list_what_has_no_owner(store, s3) -> None:
    upload = await create(store, 100)
    await append(store, upload, b"t" * 40)
    later = datetime.now(timezone.utc) + timedelta(days=365 * 30)
    found = {(name, kind) for name, kind, _ in store.strays(later)}
    assert found == {(upload.id, "multipart"), (upload.id, "object")}
    for name, kind, key in list(store.strays(later)):
        store.remove_stray(kind, key)
    assert s3.multipart_uploads(store.prefix) == [] and s3.keys(store.prefix) == {}


@pytest.mark.parametrize("buffered", [1, 4])
@pytest.mark.parametrize("chunk", [64 * 1024, 1_000_000])  # the boundary at a chunk's end, inside one
@pytest.mark.parametrize("staged", [False, True])
async def test_patch_from_a_tail_that_ends_on_a_part_boundary(make_store, s3, prefix, buffered, chunk,
                                                               staged) -> None:
    """The reported hang: a PATCH that starts from a saved tail (below the 5 MiB minimum) and
    ends exactly on a part boundary, then one that ends exactly on the next boundary, which
    is also the upload's end. Every append is bounded in time (a hang fails, not blocks)."""
    store = make_store(max_buffered_parts=buffered)
    data = os.urandom(3 * P)
    upload = await create(store, len(data))
    tail = 1_234_567

    async def body(start: int, end: int) -> int:
        if not staged:
            return await append(store, upload, data[start:end], chunk)
        hasher = hashlib.sha256()
        stager = store.stager(upload, hasher)
        for i in range(start, end, chunk):
            await stager.write(data[i:min(i + chunk, end)])
        written = await stager.close()
        assert stager.failed is None and hasher.digest() == hashlib.sha256(data[start:end]).digest()
        await stager.commit()
        await stager.discard()
        upload.offset += written
        return written

    assert await asyncio.wait_for(body(0, tail), 60) == tail
    assert await asyncio.wait_for(body(tail, P), 60) == P - tail  # tail + body == one part
    assert parts_of(s3, store, upload) == {1: P}
    assert [k for k in s3.keys(prefix) if ".tail-" in k] == []  # the absorbed tail is gone
    assert await make_store().stored_offset(upload) == P
    assert await asyncio.wait_for(body(P, P + tail), 60) == tail
    assert await asyncio.wait_for(body(P + tail, 3 * P), 60) == 2 * P - tail  # ends the upload on a boundary
    assert parts_of(s3, store, upload) == {1: P, 2: P, 3: P}
    assert await make_store().stored_offset(upload) == 3 * P
    await store.finish(upload)
    assert sha(s3.read(store.original_key(upload.id))) == sha(data)
    assert store.slots._value == buffered  # every memory slot came back


async def test_ranged_reads_of_a_finished_object(store, s3) -> None:
    """read_range (a GET with Range) returns exactly the asked bytes, across part boundaries."""
    data = os.urandom(2 * P + 77)
    upload = await create(store, len(data))
    await append(store, upload, data, chunk=1 << 20)
    await store.finish(upload)
    content = await store.content(Upload(id=upload.id, storage_path=await store.publish(upload)))
    assert content is not None and content.read_range is not None
    for start, end in [(0, 1), (P - 3, P + 3), (len(data) - 77, len(data)), (123, 2 * P)]:
        got = b"".join([c async for c in content.read_range(start, end)])
        assert got == data[start:end], (start, end)
    assert b"".join([c async for c in store.read(upload)]) == data  # the whole object, streamed


async def test_a_body_ending_on_a_part_boundary_waits_for_no_new_slot(make_store, s3) -> None:
    """A PATCH from a tail that ends exactly on a part boundary hung while other uploads held
    the memory slots: the writer took a slot for a next buffer that never comes, and a writer
    queued for a slot got the one its part gave back, so the PATCH waited for idle clients."""
    store = make_store(max_buffered_parts=2)
    tail = 1_234_567
    data = os.urandom(P)
    upload = await create(store, 2 * P)
    await append(store, upload, data[:tail])
    idle = store.writer(await create(store, P))
    await idle.write(b"x")  # an idle client's PATCH holds a slot
    writer = store.writer(upload)
    await writer.write(data[tail:tail + 1000])  # this one holds the other
    queued_writer = store.writer(await create(store, P))
    queued = asyncio.ensure_future(queued_writer.write(b"y"))  # a third waits for a slot
    for _ in range(100):
        await asyncio.sleep(0.01)
    assert not queued.done()
    await asyncio.wait_for(writer.write(data[tail + 1000:]), 20)  # ends exactly on the boundary
    assert await asyncio.wait_for(writer.close(), 20) == P - tail
    assert parts_of(s3, store, upload) == {1: P}
    await asyncio.wait_for(queued, 20)  # the slot went on to the waiting writer
    assert await queued_writer.close() == 1 and await idle.close() == 1
    assert store.slots._value == 2


async def test_part_buffers_are_made_once_and_reused_across_uploads(make_store, s3) -> None:
    """Parts, tails, stages and last parts are filled into a pool of at most max_buffered_parts
    buffers of exactly part_size, made once per store and reused by every later upload. Each
    upload's bytes differ and every tail is shorter than the part before it in the same buffer,
    so a reused buffer's old bytes reaching S3 would show in the sha256 of the objects."""
    store = make_store(max_buffered_parts=2)

    async def staged(upload: Upload, data: bytes) -> None:
        hasher = hashlib.sha256()
        stager = store.stager(upload, hasher)
        for i in range(0, len(data), 700_000):
            await stager.write(data[i:i + 700_000])
        written = await stager.close()
        assert stager.failed is None
        await stager.commit()
        await stager.discard()
        upload.offset += written

    async def one(length: int, split: int, stage: bool) -> tuple[Upload, bytes]:
        data = os.urandom(length)
        upload = await create(store, length)
        await append(store, upload, data[:split], chunk=1_000_000)  # leaves a tail
        if stage:
            await staged(upload, data[split:])
        else:
            await append(store, upload, data[split:], chunk=1_000_000)
        await store.finish(upload)
        return upload, data

    # three at once on two slots: both buffers are needed, a third never is
    done = await asyncio.gather(one(2 * P + 1_000, P + 333, False), one(3 * P, 2 * P - 1, False),
                                one(P + 77, 12_345, True))
    pool = store.buffers
    assert pool.made == 2 and len(pool.free) == 2
    assert all(type(b) is bytearray and len(b) == P for b in pool.free)
    first = {id(b) for b in pool.free}
    for length, split, stage in [(4 * P + 5, 3 * P + 1, False), (2 * P, P, True), (999, 10, False)]:
        done.append(await one(length, split, stage))
    done += await asyncio.gather(*(one(P + 3, 1, False) for _ in range(3)))
    assert pool.made == 2 and {id(b) for b in pool.free} == first  # the same two buffers, reused
    assert all(len(b) == P for b in pool.free) and store.slots._value == 2  # noqa: SLF001
    for upload, data in done:
        assert sha(s3.read(store.original_key(upload.id))) == sha(data)


@pytest.mark.parametrize("signed", [False, True])
async def test_parts_are_signed_with_their_hash_only_when_configured(make_store, s3, prefix, signed) -> None:
    store = make_store(sign_payload=signed)
    sent: list[str] = []

    def seen(request: Any, **_: Any) -> None:
        value = request.headers.get("X-Amz-Content-SHA256", "")
        sent.append(value.decode() if isinstance(value, bytes) else value)
    store.client.meta.events.register("before-send.s3.UploadPart", seen)
    store.client.meta.events.register("before-send.s3.PutObject", seen)
    data = os.urandom(P + 777)
    upload = await create(store, len(data))
    assert await append(store, upload, data) == len(data)
    assert len(sent) == 2  # one part, one tail
    if signed:
        assert sorted(sent) == sorted([hashlib.sha256(data[:P]).hexdigest(),
                                         hashlib.sha256(data[P:]).hexdigest()])
    else:
        assert sent == ["UNSIGNED-PAYLOAD"] * 2
    await store.finish(upload)
    assert sha(s3.read(f"{prefix}originals/{upload.id}")) == sha(data)


async def test_the_offset_lists_only_the_parts_from_the_recorded_frontier(store, s3) -> None:
    """A PATCH must not list every part (quadratic over a long upload), yet S3 still decides:
    a part stored but never recorded counts, and a row ahead of the bucket is corrected."""
    upload = await create(store, 8 * P)
    client = s3.client()
    multipart = store.multipart_id(upload)
    for number in range(1, 7):
        client.upload_part(Bucket=BUCKET, Key=store.target_key(upload), UploadId=multipart,
                           PartNumber=number, Body=bytes([number]) * P)
    listed: list[int] = []
    fresh = S3Store(store.cfg, store.executor)
    fresh.client.meta.events.register(
        "after-call.s3.ListParts", lambda parsed, **_: listed.append(len(parsed.get("Parts", []))))

    upload.offset = 5 * P  # recorded: five parts; the sixth was stored by a process that died
    assert await fresh.stored_offset(upload) == 6 * P
    assert listed == [2]  # parts 5 and 6, not 1-6

    listed.clear()
    upload.offset = 5 * P + 3  # a tail of 3 bytes was recorded but is gone: the parts decide
    assert await fresh.stored_offset(upload) == 6 * P

    listed.clear()
    client.abort_multipart_upload(Bucket=BUCKET, Key=store.target_key(upload), UploadId=multipart)
    upload2 = await create(store, 8 * P)
    multipart2 = store.multipart_id(upload2)
    for number in (1, 2):
        client.upload_part(Bucket=BUCKET, Key=store.target_key(upload2), UploadId=multipart2,
                           PartNumber=number, Body=b"y" * P)
    upload2.offset = 4 * P  # the row is ahead of the bucket: part 4 is missing
    assert await fresh.stored_offset(upload2) == 2 * P
    assert listed == [0, 2]  # from the frontier (nothing), then from part 1


async def test_close_then_records_what_was_stored_off_the_event_loop(store, s3, prefix) -> None:
    import threading
    data = os.urandom(P + 4321)
    upload = await create(store, len(data))
    seen: list[tuple[int, bool]] = []

    def record(nbytes: int) -> None:
        seen.append((nbytes, threading.current_thread() is threading.main_thread()))
    writer = store.writer(upload)
    await writer.write(data)
    assert await writer.close_then(record) == len(data)
    assert seen == [(len(data), False)]
    upload.offset = len(data)
    assert await store.stored_offset(upload) == len(data)

    seen.clear()
    empty = store.writer(upload)
    assert await empty.close_then(record) == 0
    assert seen == []  # nothing stored, nothing recorded
