"""tus uploads in an S3-compatible bucket, so that any instance can serve any upload.

How an upload maps onto S3 (keys under ``[storage.s3] prefix``):

- A multipart upload, created with the upload, on the key where the finished bytes belong:
  ``originals/<id>``, or ``uploads/<id>`` for a partial (a final's source, never media). Its
  S3 UploadId is found again with ListMultipartUploads, so no instance needs to remember it.
- Every part has the same size P (``part_size``): part n holds bytes [(n-1)P, nP). Part numbers
  follow from offsets, parts are R2-safe (uniform), and 10,000 parts bound an upload to
  10,000 P bytes, which the handler refuses up front (413) instead of failing at part 10,001.
- Bytes past the last whole part wait in a tail object ``uploads/<id>.tail-<start>``, named by
  the part boundary it starts at. The next PATCH reads it back (at most P bytes), completes the
  part with new bytes and deletes it; a tail that a part already covers is stale and ignored,
  so a crash between the part and the delete never counts bytes twice.
- ``Upload-Offset`` is derived from S3 alone: the run of whole parts from part 1 (ListParts)
  plus the tail that starts where they end. Nothing in memory is trusted after a crash.
- A body sent with ``Upload-Checksum`` is staged as ``uploads/<id>.stage-<start>`` objects on
  the same grid; once the digest matches they become parts (UploadPartCopy) and the tail
  (CopyObject), server-side.
- Completion is CompleteMultipartUpload on the final key, so the last PATCH of 4 GiB costs what
  the last PATCH of 4 MiB does, and no byte is copied. A missing multipart upload whose key
  exists means a process completed it and died before recording so (tusd reads NoSuchUpload
  the same way).
- Concatenation copies the partials with UploadPartCopy; only when a partial other than the
  last is below S3's 5 MiB part minimum are the bytes streamed through, one part at a time.
- With Redis locks (``fence_writes``), a writer asks for the upload's newest fencing token
  before every part, tail or stage it stores, and stores nothing once a newer holder took the
  upload: a PATCH that froze past its lease cannot overwrite the parts of the one that took over.
- Reads (``read``, ``content``) are GETs streamed in READ_CHUNK blocks; a download's byte
  range is one ranged GET.

Memory: every part buffer, filling or being sent, holds one of ``max_buffered_parts`` slots of
the process, so the store never holds more than ``max_buffered_parts * part_size`` bytes of
bodies, and there are no temporary files. The buffers themselves are a pool (``PartBuffers``):
at most ``max_buffered_parts`` of exactly ``part_size`` bytes each, made when first needed and
reused by every upload after, filled in place and sent to botocore as a read-only file over
the filled bytes (``PartBody``), so no part is copied and the heap sees no 8 MiB buffers grown
and freed per part (which over-allocated and, with glibc, fragmented it well past the bound).
botocore is blocking: its calls run on the app's thread pool, as the file store's I/O does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from models.config import MAX_PART_SIZE, MIN_PART_SIZE, S3Config
from models.s3client import is_missing, make_client
from models.tables import Upload
from tus_server.tus.datastore import Content, NewestToken

log = logging.getLogger("tusflow.s3store")

MAX_PARTS = 10_000
READ_CHUNK = 1 << 20
T = TypeVar("T")


class PartBuffers:
    """The store's part buffers: a buffer is taken with its slot and given back with it.

    At most ``count`` buffers of exactly ``size`` bytes ever exist: a taker holds a slot, so
    when no free buffer is left every buffer made is held by another slot holder, and there are
    fewer than ``count`` of those. Buffers are made on first need (a store that only ever sees
    small bodies never makes eight) and kept for the life of the store; a reused buffer's old
    bytes are never read, since only the first ``fill`` bytes a writer wrote are ever sent.
    """

    def __init__(self, count: int, size: int):
        self.size = size
        self.slots = asyncio.Semaphore(count)
        self.free: list[bytearray] = []
        self.made = 0

    async def take(self) -> bytearray:
        await self.slots.acquire()
        if self.free:
            return self.free.pop()
        self.made += 1
        return bytearray(self.size)

    def give(self, buffer: bytearray) -> None:
        self.free.append(buffer)
        self.slots.release()


class PartBody:
    """A read-only, seekable file over a memoryview: botocore takes bytes, bytearray or a file
    as a Body, never a memoryview, and ``bytes(view)`` would copy the part. ``read`` returns
    slices of the view (no copy); botocore hashes the payload (SigV4 on plain HTTP) and sends it
    from those, seeking back to 0 to retry."""

    def __init__(self, view: memoryview):
        self._view = view
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int | None = -1) -> memoryview:
        end = len(self._view)
        if size is not None and size >= 0:
            end = min(end, self._position + size)
        start, self._position = self._position, max(self._position, end)
        return self._view[start:self._position]

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def as_os_error(exc: Exception, what: str) -> OSError:
    """The handler's contract: a storage failure is an OSError kept in ``failed``."""
    if isinstance(exc, OSError):
        return exc
    return OSError(f"S3 {what} failed: {exc}")


class S3Store:
    def __init__(self, cfg: S3Config, executor: ThreadPoolExecutor, client: Any = None):
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix
        self.part_size = cfg.part_size
        self.max_length: int | None = MAX_PARTS * cfg.part_size
        self.max_length_reason = (f"S3 multipart uploads have at most {MAX_PARTS} parts of "
                                  f"[storage.s3] part_size = {cfg.part_size} bytes")
        self.executor = executor
        self.client = client or make_client(cfg, max(10, cfg.max_buffered_parts + 4))
        # Shared by every writer of the store: the slots bound the bodies held, and the buffers
        # they come with are made once and reused.
        self.buffers = PartBuffers(cfg.max_buffered_parts, cfg.part_size)
        self.slots = self.buffers.slots
        # upload id → S3 UploadId. A cache only: it never changes while the upload exists, and a
        # miss (another instance created it, this one restarted) asks S3 again.
        self._multipart: dict[str, str] = {}
        # Set by fence_writes (the Redis locker): asked before every write of a fenced writer.
        self.newest_token: NewestToken | None = None

    # ------------------------------------------------------------------ keys
    def upload_key(self, upload_id: str) -> str:
        return f"{self.prefix}uploads/{upload_id}"

    def original_key(self, upload_id: str) -> str:
        return f"{self.prefix}originals/{upload_id}"

    def target_key(self, upload: Upload) -> str:
        """Where the upload's multipart upload completes."""
        return self.upload_key(upload.id) if upload.concat == "partial" else self.original_key(upload.id)

    def tail_key(self, upload_id: str, start: int) -> str:
        return f"{self.upload_key(upload_id)}.tail-{start:015d}"

    def stage_key(self, upload_id: str, start: int) -> str:
        return f"{self.upload_key(upload_id)}.stage-{start:015d}"

    def key_of(self, storage_path: str) -> str:
        return self.prefix + storage_path

    # ------------------------------------------------------------------ plumbing
    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def head_size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except Exception as exc:
            if is_missing(exc):
                return None
            raise

    def list_keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            if batch:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def multipart_uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Uploads", [])

    def multipart_id(self, upload: Upload) -> str | None:
        """The S3 UploadId of the upload's multipart upload, None once completed or aborted."""
        cached = self._multipart.get(upload.id)
        if cached is not None:
            return cached
        key = self.target_key(upload)
        found = [u for u in self.multipart_uploads(key) if u["Key"] == key]
        if not found:
            return None
        found.sort(key=lambda u: u["Initiated"])
        self._multipart[upload.id] = found[0]["UploadId"]
        return found[0]["UploadId"]

    def parts(self, key: str, multipart: str, after: int = 0) -> dict[int, dict[str, Any]]:
        """Part number → part for the parts numbered above ``after``, over every page of ListParts."""
        found: dict[int, dict[str, Any]] = {}
        marker = after
        for _ in range(MAX_PARTS // 1000 + 2):  # ListParts pages hold up to 1,000 parts
            page = self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=multipart,
                                          **({"PartNumberMarker": marker} if marker else {}))
            for part in page.get("Parts", []):
                found[int(part["PartNumber"])] = part
            following = int(page.get("NextPartNumberMarker") or 0)
            if not page.get("IsTruncated") or following <= marker:
                break
            marker = following
        return found

    def whole_parts_end(self, parts: dict[int, dict[str, Any]], length: int | None,
                        first: int = 1) -> int:
        """Where the run of parts from part ``first`` ends (the parts below it taken as whole):
        each full size, or a shorter last one that ends the upload. A gap (a part that failed
        while a later one was sent) ends the run."""
        end, number = (first - 1) * self.part_size, first
        while number in parts:
            size = int(parts[number]["Size"])
            if size == self.part_size:
                end += size
            elif length is not None and size and end + size == length:
                return end + size
            else:
                break
            number += 1
        return end

    def tails(self, upload_id: str) -> dict[int, int]:
        """Tail start → size."""
        prefix = self.upload_key(upload_id) + ".tail-"
        return {int(item["Key"][len(prefix):]): int(item["Size"]) for item in self.list_keys(prefix)}

    # ------------------------------------------------------------------ DataStore
    async def create(self, upload_id: str, partial: bool = False) -> str:
        key = self.upload_key(upload_id) if partial else self.original_key(upload_id)
        answer = await self.run(self.client.create_multipart_upload, Bucket=self.bucket, Key=key)
        self._multipart[upload_id] = answer["UploadId"]
        return f"uploads/{upload_id}"

    async def stored_offset(self, upload: Upload) -> int | None:
        return await self.run(self.stored_offset_now, upload)

    def stored_offset_now(self, upload: Upload) -> int | None:
        key = self.target_key(upload)
        multipart = self.multipart_id(upload)
        # The row's offset says which parts were already stored and recorded: only the last of
        # them and any after it are listed. Listing every part on every PATCH made a long
        # upload quadratic (512 parts: 30 ms of this process's CPU and 11 ms of SeaweedFS's per
        # ListParts). The frontier still comes from S3: a part written but never recorded (a
        # crash before the offset update) is found, and a row ahead of the bucket (its last
        # counted part missing) falls back to listing from part 1.
        known = upload.offset // self.part_size
        if multipart is not None:
            try:
                parts = self.parts(key, multipart, after=max(known - 1, 0))
                if known and known not in parts:
                    known, parts = 0, self.parts(key, multipart)
            except Exception as exc:
                if not is_missing(exc):
                    raise
                self._multipart.pop(upload.id, None)
                multipart = None
        if multipart is None:  # completed by a process that died before recording it
            return self.head_size(key)
        end = self.whole_parts_end(parts, upload.length, first=max(known, 1))
        size = end + self.tails(upload.id).get(end, 0)
        return size if upload.length is None else min(size, upload.length)

    def writer(self, upload: Upload) -> "S3Writer":
        return S3Writer(self, upload)

    def stager(self, upload: Upload, hasher: Any) -> "S3Writer":
        return S3Writer(self, upload, staged=True, hasher=hasher)

    async def finish(self, upload: Upload) -> None:
        await self.run(self.finish_now, upload)

    def finish_now(self, upload: Upload) -> None:
        """CompleteMultipartUpload from the parts the length needs; a tail that ends the upload
        (a deferred length declared after its last bytes) becomes the last part by copy."""
        key = self.target_key(upload)
        length = upload.length or 0
        multipart = self.multipart_id(upload)
        if multipart is None:
            if self.head_size(key) is None:
                raise FileNotFoundError(f"upload {upload.id}: no multipart upload and no object")
            return
        try:
            if length == 0:  # S3 has no empty multipart upload: an empty object instead
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"")
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart)
            else:
                self.complete_parts(upload, key, multipart, length)
        except Exception as exc:
            if not is_missing(exc) or self.head_size(key) is None:
                raise
        self._multipart.pop(upload.id, None)
        self.delete_keys([item["Key"] for item in self.list_keys(self.upload_key(upload.id) + ".")])

    def complete_parts(self, upload: Upload, key: str, multipart: str, length: int) -> None:
        parts = self.parts(key, multipart)
        count, rest = divmod(length, self.part_size)
        wanted = [(n, self.part_size) for n in range(1, count + 1)]
        if rest:
            wanted.append((count + 1, rest))
        chosen = []
        for number, size in wanted:
            part = parts.get(number)
            if part is None or int(part["Size"]) != size:
                start = (number - 1) * self.part_size
                if number != len(wanted) or self.tails(upload.id).get(start) != size:
                    raise OSError(f"upload {upload.id}: part {number} ({size} bytes) is not stored")
                copied = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=key, UploadId=multipart, PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": self.tail_key(upload.id, start)})
                part = {"ETag": copied["CopyPartResult"]["ETag"]}
            chosen.append({"PartNumber": number, "ETag": part["ETag"]})
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart,
                                              MultipartUpload={"Parts": chosen})

    def published_path(self, upload_id: str) -> str:
        return f"originals/{upload_id}"

    async def publish(self, upload: Upload) -> str:
        """Nothing moves: the multipart upload was completed on the original's key."""
        return self.published_path(upload.id)

    async def content(self, upload: Upload) -> Content | None:
        key = self.key_of(upload.storage_path)
        size = await self.run(self.head_size, key)
        if size is None:
            return None
        return Content(size, chunks=lambda: self.read_key(key),
                       read_range=lambda start, end: self.read_key(key, start, end))

    def read(self, upload: Upload) -> AsyncIterator[bytes]:
        """The object ``finish`` completed, where it stays once published."""
        return self.read_key(self.target_key(upload))

    async def read_key(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) of an object (all of it from ``start`` without ``end``), one GET
        streamed READ_CHUNK at a time; FileNotFoundError when the object is missing."""
        if end is not None and end <= start:
            return
        extra: dict[str, str] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = await self.run(self.client.get_object, Bucket=self.bucket, Key=key, **extra)
        except Exception as exc:
            if is_missing(exc):
                raise FileNotFoundError(f"{key} is not stored") from exc
            raise
        body = answer["Body"]
        try:
            while True:
                data = await self.run(body.read, READ_CHUNK)
                if not data:
                    return
                yield data
        finally:
            body.close()

    def fence_writes(self, newest_token: NewestToken) -> None:
        self.newest_token = newest_token

    async def fenced_out(self, upload: Upload) -> OSError | None:
        """Why this writer must store nothing more: a newer lock token was issued for the
        upload since its holder took it (its lease ran out and another request took over)."""
        token = upload.lock_token
        if not token or self.newest_token is None:  # 0: the row's default, no Redis lock
            return None
        newest = await self.newest_token(upload.id)
        if newest is not None and newest > token:
            return OSError(f"upload {upload.id}: lock token {token} was superseded by {newest}; "
                           "this request no longer holds the upload")
        return None

    # ------------------------------------------------------------------ Terminater
    async def terminate(self, upload: Upload) -> None:
        await self.run(self.purge, upload)

    def purge(self, upload: Upload) -> None:
        """Abort the multipart upload and delete the tails, stages and a partial's object; a
        published original belongs to its media and stays."""
        published = upload.is_complete and upload.concat != "partial"
        for key in {self.upload_key(upload.id), self.original_key(upload.id)}:
            for item in self.multipart_uploads(key):
                if item["Key"] == key:
                    self.abort(key, item["UploadId"])
        self._multipart.pop(upload.id, None)
        keys = [item["Key"] for item in self.list_keys(self.upload_key(upload.id))]
        if not published:
            keys.append(self.original_key(upload.id))  # completed by a process that then died
        self.delete_keys(keys)

    def abort(self, key: str, multipart: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart)
        except Exception as exc:
            if not is_missing(exc):
                raise

    def strays(self, older_than: datetime) -> Iterator[tuple[str, str, str]]:
        """What ``tusflow cleanup`` may find without an owner: (upload id, kind, key) for
        multipart uploads ("multipart", key + "?" + UploadId) and objects under uploads/
        ("object"), last touched before ``older_than``."""
        root = f"{self.prefix}uploads/"
        for item in self.multipart_uploads(self.prefix):
            if item["Initiated"] < older_than:
                name = item["Key"].rsplit("/", 1)[-1]
                yield name, "multipart", f"{item['Key']}?{item['UploadId']}"
        for item in self.list_keys(root):
            if item["LastModified"] < older_than:
                name = item["Key"][len(root):].split(".", 1)[0]
                yield name, "object", item["Key"]

    def remove_stray(self, kind: str, key: str) -> None:
        if kind == "multipart":
            key, _, multipart = key.rpartition("?")
            self.abort(key, multipart)
        else:
            self.delete_keys([key])

    # ------------------------------------------------------------------ Concater
    async def concatenate(self, upload_id: str, parts: list[Upload]) -> str:
        await self.run(self.concatenate_now, upload_id, parts)
        return f"uploads/{upload_id}"

    def concatenate_now(self, upload_id: str, parts: list[Upload]) -> None:
        key = self.original_key(upload_id)
        sources = [(self.key_of(p.storage_path), p.length or 0) for p in parts if p.length]
        if not sources:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"")
            return
        multipart = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            if all(size >= MIN_PART_SIZE for _, size in sources[:-1]):
                done = self.copy_parts(key, multipart, sources)
            else:
                done = self.stream_parts(key, multipart, sources)
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart,
                                                  MultipartUpload={"Parts": done})
        except BaseException as exc:
            self.abort(key, multipart)
            if isinstance(exc, Exception) and is_missing(exc):
                raise FileNotFoundError(f"a partial of {upload_id} is gone: {exc}") from exc
            raise

    def copy_parts(self, key: str, multipart: str, sources: list[tuple[str, int]]) -> list[dict[str, Any]]:
        """One UploadPartCopy per partial (a partial above 5 GiB, the copy limit, in equal
        ranges); S3 copies, Python sees no byte."""
        done: list[dict[str, Any]] = []
        for source, size in sources:
            pieces = -(-size // MAX_PART_SIZE)
            step = -(-size // pieces)
            for start in range(0, size, step):
                end = min(start + step, size) - 1
                extra = {"CopySourceRange": f"bytes={start}-{end}"} if pieces > 1 else {}
                number = len(done) + 1
                copied = self.client.upload_part_copy(Bucket=self.bucket, Key=key, UploadId=multipart,
                                                      PartNumber=number,
                                                      CopySource={"Bucket": self.bucket, "Key": source}, **extra)
                done.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
        return done

    def stream_parts(self, key: str, multipart: str, sources: list[tuple[str, int]]) -> list[dict[str, Any]]:
        """Small partials cannot be parts: read them in order into parts of ``part_size``
        (one part in memory at a time) and upload those."""
        done: list[dict[str, Any]] = []
        buffer = bytearray()

        def send() -> None:
            number = len(done) + 1
            answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=multipart,
                                             PartNumber=number, Body=buffer)
            done.append({"PartNumber": number, "ETag": answer["ETag"]})
            buffer.clear()

        for source, size in sources:
            position = 0
            while position < size:
                want = min(self.part_size - len(buffer), size - position)
                body = self.client.get_object(Bucket=self.bucket, Key=source,
                                              Range=f"bytes={position}-{position + want - 1}")["Body"]
                data = body.read()
                if len(data) != want:
                    raise FileNotFoundError(f"{source} holds fewer bytes than its upload's length")
                buffer += data
                position += want
                if len(buffer) == self.part_size:
                    send()
        if buffer:
            send()
        return done


class S3Writer:
    """Appends one body at the upload's offset as multipart parts of ``part_size``.

    The first part buffer starts with the tail object's bytes, so parts stay on the grid. Full
    parts are sent while the body still arrives, several at once (each holds a store slot);
    ``close`` waits for them and stores what is left as the new tail, or as the last part when
    it ends the upload. After a failed call nothing more is stored, and ``close`` counts only
    the bytes up to the first part that did not make it.

    ``staged``: the parts and the rest go to stage objects instead, and ``commit`` turns them
    into parts and the tail by server-side copies once the caller has verified the digest.
    """

    def __init__(self, store: S3Store, upload: Upload, staged: bool = False, hasher: Any = None):
        self._store = store
        self._upload = upload
        self._staged = staged
        self._hasher = hasher
        self._base = upload.offset
        self._first = upload.offset - upload.offset % store.part_size  # the grid point before it
        self._start = self._first  # where the buffer's bytes begin
        self._begun = False  # the tail was read into the first buffer
        self._buffer: bytearray | None = None  # the filling buffer, from the pool with its slot
        self._fill = 0  # how many of its bytes are this upload's
        self._sending: list[asyncio.Task[None]] = []
        self._stored: dict[int, int] = {}  # start → size of every part, tail or stage that made it
        self._parts: set[int] = set()  # the starts of those that are parts
        self._key = store.target_key(upload)
        self.failed: OSError | None = None
        self.written = 0

    async def _begin(self) -> None:
        store = self._store
        self._begun = True
        self._buffer = await store.buffers.take()
        self._fill = 0
        if self._base > self._first:  # the tail holds the bytes between the grid and the offset
            want = self._base - self._first
            key = store.tail_key(self._upload.id, self._first)
            body = (await store.run(store.client.get_object, Bucket=store.bucket, Key=key))["Body"]
            try:
                while self._fill < want:  # READ_CHUNK at a time: no second copy of the tail
                    data = await store.run(body.read, min(READ_CHUNK, want - self._fill))
                    if not data:
                        break
                    self._buffer[self._fill:self._fill + len(data)] = data
                    self._fill += len(data)
                extra = await store.run(body.read, 1)
            finally:
                body.close()
            if self._fill != want or extra:
                raise OSError(f"tail {key} does not hold exactly the {want} bytes before the offset")

    async def write(self, chunk: bytes) -> None:
        if self.failed is not None:
            raise self.failed
        try:
            if not self._begun:
                await self._begin()
        except Exception as exc:
            self.failed = as_os_error(exc, "read of the tail")
            raise self.failed from exc
        if self._hasher is not None:
            self._hasher.update(chunk)
        size = self._store.part_size
        view = memoryview(chunk)
        done = 0
        while done < len(view):
            if self._buffer is None:  # the first byte after a sent part: a new buffer and its slot
                self._buffer = await self._store.buffers.take()
                self._fill = 0
            n = min(size - self._fill, len(view) - done)
            self._buffer[self._fill:self._fill + n] = view[done:done + n]  # same length: no resize
            self._fill += n
            done += n
            if self._fill == size:
                self._send(self._start, self._buffer)  # the sent part keeps its buffer and slot
                self._start += size
                # A buffer (and its slot) for the next part only when bytes are left for it: a
                # body that ends on the boundary must not wait (behind other writers queued for
                # slots, whose clients may be idle) for a slot it never fills.
                self._buffer, self._fill = None, 0
                if self.failed is not None:
                    raise self.failed

    def _send(self, start: int, buffer: bytearray) -> None:
        """Send one full part; its buffer and slot go with it, given back when S3 has it."""
        kind = "stage" if self._staged else "part"
        task = asyncio.get_running_loop().create_task(
            self._put(start, buffer, self._store.part_size, kind, give_back=True))
        self._sending.append(task)

    async def _put(self, start: int, buffer: bytearray, size: int, kind: str, give_back: bool) -> None:
        """Store the first ``size`` bytes of ``buffer`` at ``start`` as a part, the tail or a
        stage object, straight from the buffer; a failure is recorded in ``failed`` (the first
        one wins), never raised."""
        store = self._store
        client = store.client
        try:
            fenced = await store.fenced_out(self._upload)
            if fenced is not None:
                raise fenced
            body = PartBody(memoryview(buffer)[:size])
            if kind == "stage":
                await store.run(client.put_object, Bucket=store.bucket,
                                Key=store.stage_key(self._upload.id, start), Body=body)
            elif kind == "tail":
                await store.run(client.put_object, Bucket=store.bucket,
                                Key=store.tail_key(self._upload.id, start), Body=body)
            else:
                multipart = await store.run(store.multipart_id, self._upload)
                if multipart is None:
                    raise FileNotFoundError(f"upload {self._upload.id} has no multipart upload")
                await store.run(client.upload_part, Bucket=store.bucket, Key=self._key, UploadId=multipart,
                                PartNumber=start // store.part_size + 1, Body=body)
                self._parts.add(start)
            self._stored[start] = size
        except Exception as exc:
            if self.failed is None:
                self.failed = as_os_error(exc, "write")
                log.warning("upload=%s S3 %s at %d failed: %s", self._upload.id, kind, start, exc)
        finally:
            if give_back:
                store.buffers.give(buffer)

    def _stored_end(self) -> int:
        position = self._first
        while self._stored.get(position):
            position += self._stored[position]
        return position

    async def close(self) -> int:
        """Wait for the parts in flight, store the rest (the new tail, or the last part when it
        ends the upload) unless something failed, and return the new bytes stored."""
        store = self._store
        try:
            if self._sending:
                await asyncio.gather(*self._sending)
                self._sending.clear()
            buffer, fill = self._buffer, self._fill
            if (self.failed is None and buffer is not None and fill and self._start + fill > self._base
                    and self._stored_end() == self._start):
                ends = self._upload.length is not None and self._start + fill == self._upload.length
                kind = "stage" if self._staged else ("part" if ends else "tail")
                await self._put(self._start, buffer, fill, kind, give_back=False)
            if self._base > self._first and self._first in self._parts:
                await self._drop_tail(self._first)
            self.written = max(0, self._stored_end() - self._base)
        finally:
            self._begun = False
            if self._buffer is not None:
                buffer, self._buffer, self._fill = self._buffer, None, 0
                store.buffers.give(buffer)
        return self.written

    async def close_then(self, record: Callable[[int], None]) -> int:
        """``close``, then ``record(written)`` on a pool thread when anything was stored: the
        writer protocol's one way to end a PATCH (``datastore.RecordingWriter``). A failure to
        store the rest means those bytes are not counted, never that they are recorded."""
        written = await self.close()
        if written:
            await self._store.run(record, written)
        return written

    async def _drop_tail(self, start: int) -> None:
        """A part now covers the old tail: it is stale (ignored), delete it."""
        store = self._store
        try:
            await store.run(store.client.delete_object, Bucket=store.bucket,
                            Key=store.tail_key(self._upload.id, start))
        except Exception as exc:  # a stale tail is ignored anyway; finish deletes it
            log.info("upload=%s stale tail at %d not deleted: %s", self._upload.id, start, exc)

    # ------------------------------------------------------------------ staged bodies
    async def commit(self) -> None:
        fenced = await self._store.fenced_out(self._upload)
        if fenced is not None:
            raise fenced
        await self._store.run(self._commit_now)

    def _commit_now(self) -> None:
        """Stage objects → parts (UploadPartCopy) and the tail (CopyObject), server-side."""
        store, upload = self._store, self._upload
        client = store.client
        multipart = store.multipart_id(upload)
        if multipart is None:
            raise FileNotFoundError(f"upload {upload.id} has no multipart upload")
        for start in sorted(self._stored):
            size = self._stored[start]
            source = {"Bucket": store.bucket, "Key": store.stage_key(upload.id, start)}
            ends = upload.length is not None and start + size == upload.length
            if size == store.part_size or ends:
                client.upload_part_copy(Bucket=store.bucket, Key=self._key, UploadId=multipart,
                                        PartNumber=start // store.part_size + 1, CopySource=source)
            else:
                client.copy_object(Bucket=store.bucket, Key=store.tail_key(upload.id, start), CopySource=source)
        if self._base > self._first and self._stored_end() >= self._first + store.part_size:
            try:
                client.delete_object(Bucket=store.bucket, Key=store.tail_key(upload.id, self._first))
            except Exception as exc:
                log.info("upload=%s stale tail not deleted: %s", upload.id, exc)

    async def discard(self) -> None:
        store = self._store
        keys = [store.stage_key(self._upload.id, start) for start in self._stored]
        if keys:
            try:
                await store.run(store.delete_keys, keys)
            except Exception as exc:  # stages are never read unless committed; cleanup removes them
                log.warning("upload=%s stages not deleted: %s", self._upload.id, exc)
