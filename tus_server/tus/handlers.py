"""The tus 1.0.0 endpoint: one method per request type, shared header checks, errors as values.

It is a plain ASGI app mounted at ``base_path`` because PATCH needs the raw ``receive`` to keep
every byte of a body that stops half way (see ``body.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import urllib.parse
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Awaitable, Callable, Protocol

from sqlmodel import Session
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from models.config import Settings
from models.tables import Upload
from models.clock import aware
from tus_server.tus import errors as E
from tus_server.tus import headers as H
from tus_server.tus.body import BodyEnd, BodyReader, MinRate, TrackedReceive
from tus_server.tus.draft_headers import is_draft_request
from tus_server.tus.events import UploadEvents
from tus_server.tus.expiry import is_expired
from tus_server.tus.locks import LockHandle, Locker
from tus_server.tus.repo import UploadRepo
from tus_server.tus.datastore import RecordingWriter, UploadStore, UploadWriter
from tus_server.tus.download import streamed_download
from tus_server.tus.urls import UrlBuilder

log = logging.getLogger("tusflow.tus")

EXTENSIONS = ("creation", "creation-with-upload", "creation-defer-length", "expiration",
              "checksum", "termination", "concatenation")
# A Upload-Concat header may spend this much per listed part (a long absolute URL fits).
CONCAT_BYTES_PER_PART = 1024


Authorizer = Callable[[Request, Upload | None], Awaitable[str | None]]


class AccessGuard(Protocol):
    """The seam where auth attaches (``tus_server.auth.tus_guard``): who may touch an upload,
    and whether an upload may be created (size, quota, platform hook; may set metadata)."""

    def check_owner(self, request: Request, upload: Upload) -> None: ...

    async def admit(self, request: Request, length: int | None, metadata: H.Metadata,
                    concat: str | None) -> H.Metadata: ...

    async def declare_length(self, request: Request, upload: Upload, length: int) -> None: ...

    def reservation(self, request: Request, length: int | None) -> Callable[[Session], None] | None: ...


@dataclass
class TusContext:
    settings: Settings
    repo: UploadRepo
    store: UploadStore  # where the bytes live: tus/datastore.py
    locks: Locker  # flock files, or Redis across instances (locks.open_locks)
    # Everything that reacts to an upload (publishing, webhooks, metrics): see events.py.
    events: UploadEvents
    guard: AccessGuard | None = None
    # Set when the process is asked to stop: running PATCH bodies then save what arrived and
    # answer 503, so the server exits in seconds and no SIGKILL cuts a body off unrecorded.
    # ``create_app`` passes the app's own flag; a handler built alone gets one nobody sets.
    stopping: threading.Event = field(default_factory=threading.Event)


class TusHandler:
    def __init__(self, ctx: TusContext, draft: ASGIApp | None = None):
        self.ctx = ctx
        # Requests speaking the IETF resumable-upload draft on this endpoint (tus/draft.py).
        self.draft = draft
        self.settings = ctx.settings
        self.base_path = ctx.settings.server.base_path.rstrip("/") + "/"
        self.max_size = ctx.settings.uploads.max_size
        # The longest upload accepted: [uploads] max_size, and what the store can hold (S3: 10,000 parts).
        self.max_length = min(self.max_size or H.INT64_MAX, ctx.store.max_length or H.INT64_MAX)
        self.urls = UrlBuilder(ctx.settings)

    # ------------------------------------------------------------------ ASGI entry point
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draft is not None and is_draft_request(Headers(scope=scope)):
            await self.draft(scope, receive, send)
            return
        started = time.perf_counter()
        tracked = TrackedReceive(receive)
        request = Request(scope, tracked)
        method = H.effective_method(request.method, request.headers.get("x-http-method-override"))
        response: Response | None = None
        try:
            response = await self.answer(method, request, tracked)
            await response(scope, receive, send)
        finally:
            if method == "PATCH":
                self.ctx.events.patch_answered(None if response is None else response.status_code,
                                               time.perf_counter() - started)

    async def answer(self, method: str, request: Request, receive: TrackedReceive) -> Response:
        """The response to send: errors become tus answers, with the headers every answer needs."""
        try:
            response = await self.dispatch(method, request, receive)
        except E.TusError as err:
            response = self.error_response(err)
        except Exception:  # answer with tus and CORS headers so clients can retry
            log.exception("unexpected error in %s %r", method, request.scope.get("path"))
            response = self.error_response(E.ERR_INTERNAL())
        if method == "HEAD":
            response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("Tus-Resumable", H.TUS_VERSION)
        if not receive.complete and _has_body(request.headers):
            # The rest of the body is not wanted: closing beats reading it into the void, and a
            # stale or stalled client gets its connection ended (T21).
            response.headers["Connection"] = "close"
        return response

    async def dispatch(self, method: str, request: Request, receive: Receive) -> Response:
        if method == "OPTIONS":  # Tus-Resumable is ignored here (T26)
            return self.options()
        upload_id = self._id_from_path(request)
        if upload_id is None:
            if method == "POST":
                H.check_tus_resumable(request.headers.get("tus-resumable"))
                return await self.post(request, receive)
            raise E.ERR_METHOD_NOT_ALLOWED(f"{method} is not allowed on the upload collection")
        if not H.is_valid_id(upload_id):
            raise E.ERR_INVALID_ID()
        if method == "GET":
            return await self.get(request, upload_id)
        H.check_tus_resumable(request.headers.get("tus-resumable"))
        if method == "HEAD":
            return await self.head(request, upload_id)
        if method == "PATCH":
            if self.ctx.stopping.is_set():
                raise E.ERR_SHUTTING_DOWN()
            return await self.patch(request, receive, upload_id)
        if method == "DELETE":
            return await self.delete(request, upload_id)
        raise E.ERR_METHOD_NOT_ALLOWED(f"{method} is not allowed on an upload")

    def _id_from_path(self, request: Request) -> str | None:
        """The raw path after the base path; never decoded, so %2e%2e and %2F stay invalid."""
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        root = self.base_path.rstrip("/")
        if path in (root, root + "/"):
            return None
        if not path.startswith(self.base_path):
            return ""
        return path[len(self.base_path):]

    # ------------------------------------------------------------------ responses
    def error_response(self, err: E.TusError) -> Response:
        headers = {"Tus-Resumable": H.TUS_VERSION, "Content-Type": "text/plain; charset=utf-8", **err.headers}
        if err.status == 412:
            headers["Tus-Version"] = H.TUS_VERSION
        return Response(f"{err.message}\n", status_code=err.status, headers=headers)

    def options(self) -> Response:
        headers = {
            "Tus-Version": H.TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Checksum-Algorithm": ",".join(H.CHECKSUM_ALGORITHMS),
        }
        if self.max_length < H.INT64_MAX:
            headers["Tus-Max-Size"] = str(self.max_length)
        return Response(status_code=204, headers=headers)

    def _expires_header(self, upload: Upload) -> dict[str, str]:
        if upload.expires_at is None or upload.is_complete:
            return {}
        return {"Upload-Expires": format_datetime(aware(upload.expires_at), usegmt=True)}

    # ------------------------------------------------------------------ shared checks
    async def _load(self, upload_id: str, request: Request | None = None, locked: bool = False) -> Upload:
        """With the request, also the owner check (404 for others), before the expiry check so
        a non-owner cannot even learn that an expired upload existed. ``locked``: called with
        the upload's lock held, whose file this request may just have created."""
        upload = await self.ctx.repo.get(upload_id)
        if upload is None:
            if locked:
                self.ctx.locks.forget(upload_id)  # no lock file stays behind for an unknown id
            raise E.ERR_NOT_FOUND()
        if request is not None and self.ctx.guard is not None:
            self.ctx.guard.check_owner(request, upload)
        if is_expired(upload):
            raise E.ERR_GONE()
        return upload

    async def _reconcile(self, upload: Upload) -> Upload:
        """Make the row match the bytes the store holds, for a killed process may have written
        more than it recorded (or, after a power loss without fsync, less), and may have died
        between assembling a final upload and recording its completion. Called with the lock held."""
        if upload.is_complete:
            return upload
        if _is_final(upload):
            await self._complete(upload)
            return upload
        size = await self.ctx.store.stored_offset(upload)
        if size is None:
            raise E.ERR_NOT_FOUND("upload data is missing")
        if size != upload.offset:
            log.info("upload=%s offset reconciled from %d to %d", upload.id, upload.offset, size)
            await self.ctx.repo.update(upload.id, offset=size)
            upload.offset = size
        if upload.length is not None and upload.offset == upload.length:
            await self._complete(upload)
        return upload

    def _check_length(self, length: int) -> None:
        if self.max_size and length > self.max_size:
            raise E.ERR_TOO_LARGE(f"Upload-Length {length} exceeds the maximum size of {self.max_size} bytes")
        store = self.ctx.store
        if store.max_length is not None and length > store.max_length:
            raise E.ERR_TOO_LARGE(f"Upload-Length {length} exceeds the {store.max_length} bytes the "
                                  f"storage can hold: {store.max_length_reason}")

    @staticmethod
    def _content_length(h: Headers) -> int | None:
        value = h.get("content-length")
        return None if value is None else H.parse_uint(value, E.ERR_INVALID_LENGTH)

    def _end(self, length: int | None) -> int:
        """Where an upload's bytes must stop: its length, else the server's maximum."""
        return length if length is not None else self.max_length

    # ------------------------------------------------------------------ POST (creation)
    async def post(self, request: Request, receive: Receive) -> Response:
        h = request.headers
        concat = H.parse_concat(h.get("upload-concat"))
        metadata = H.parse_metadata(h.get("upload-metadata"), self.settings.uploads.max_metadata_size,
                                    self.settings.uploads.max_metadata_pairs)
        # A foreign Content-Type (e.g. a form default) makes a plain creation; the body is ignored (T44).
        with_body = H.media_type(h.get("content-type")) == H.OFFSET_CONTENT_TYPE
        if concat is not None and concat.kind == "final":
            if with_body and _has_body(h):
                raise E.ERR_MODIFY_FINAL("a final upload cannot carry a body")
            return await self._create_final(request, concat, metadata)

        partial = concat is not None
        length = self._creation_length(h, partial)
        checksum = H.parse_checksum(h.get("upload-checksum")) if with_body else None
        content_length = self._content_length(h)
        if with_body:
            self._check_creation_body(content_length, length)
        if self.ctx.guard is not None:
            metadata = await self.ctx.guard.admit(request, length, metadata, "partial" if partial else None)
        upload = await self._create(request, length, metadata, partial)

        location = {"Location": self.urls.upload_url(request, upload.id)}
        headers = dict(location)
        if with_body:
            try:
                async with self.ctx.locks.hold(upload.id) as lock:
                    upload, extra = await self._receive(receive, upload, lock, checksum)
            except E.TusError as err:
                err.headers.update(location)  # the upload exists: let the client resume it
                raise
            headers.update(extra)
            headers["Upload-Offset"] = str(upload.offset)
        elif length == 0:
            headers.update(await self._complete(upload))
        headers.update(self._expires_header(upload))
        return Response(status_code=201, headers=headers)

    def _creation_length(self, h: Headers, partial: bool) -> int | None:
        """The length a creation declares: exactly one of Upload-Length and Upload-Defer-Length: 1;
        a partial upload must know its length, for a final is assembled from whole partials."""
        length_header, defer_header = h.get("upload-length"), h.get("upload-defer-length")
        if length_header is not None and defer_header is not None:
            raise E.ERR_AMBIGUOUS_LENGTH()
        if length_header is None and defer_header is None:
            raise E.ERR_LENGTH_REQUIRED()
        if defer_header is not None:
            if defer_header.strip() != "1":
                raise E.ERR_INVALID_DEFER()
            if partial:
                raise E.ERR_PARTIAL_DEFER()
            return None
        length = H.parse_uint(length_header, E.ERR_INVALID_LENGTH)
        self._check_length(length)
        return length

    def _check_creation_body(self, content_length: int | None, length: int | None) -> None:
        """A body announced longer than the upload is refused before the upload is created."""
        if content_length is not None and content_length > self._end(length):
            raise E.ERR_SIZE_EXCEEDED(f"body of {content_length} bytes is longer than the upload")

    async def _create(self, request: Request, length: int | None, metadata: H.Metadata,
                      partial: bool) -> Upload:
        """The empty upload in the store, then the row that points at it (cleanup removes what
        is stored without a row), then the announcement."""
        upload_id = secrets.token_hex(16)
        store = self.ctx.store
        storage_path = await store.create(upload_id, partial)
        upload = Upload(id=upload_id, length=length, metadata_raw=metadata.raw,
                        concat="partial" if partial else None,
                        owner=getattr(request.state, "user", None),
                        storage_path=storage_path, expires_at=self.ctx.repo.next_expiry())
        try:  # the quota is decided again, atomically, in the insert (tus_guard.reservation)
            upload = await self.ctx.repo.add(upload, self._reservation(request, length))
        except E.TusError:
            await store.terminate(upload)
            raise
        log.info("upload=%s created length=%s partial=%s", upload_id, length, partial)
        await self.ctx.events.created(upload)
        return upload

    def _reservation(self, request: Request, length: int | None) -> Callable[[Session], None] | None:
        return None if self.ctx.guard is None else self.ctx.guard.reservation(request, length)

    async def _create_final(self, request: Request, concat: H.Concat, metadata: H.Metadata) -> Response:
        """Assemble the partials in the kernel, then record the final upload and complete it.
        The row appears only once the bytes are all there, so nobody sees a half-built final.
        A final costs what it copies, so it passes the same admission as any upload (rate,
        size, quota, platform) before a byte is copied, and the quota once more, atomically,
        when its row is inserted."""
        part_ids = self._partial_ids(request.headers, concat)
        rows = await self.ctx.repo.get_many(part_ids)
        total = sum(self._check_partial(request, part_id, rows.get(part_id)) for part_id in part_ids)
        self._check_length(total)
        self._check_final_length(request.headers, total)
        if self.ctx.guard is not None:
            metadata = await self.ctx.guard.admit(request, total, metadata, "final")
        upload = await self._assemble(request, [rows[p] for p in part_ids], total, metadata)
        headers = {"Location": self.urls.upload_url(request, upload.id)}
        headers.update(await self._complete(upload))
        return Response(status_code=201, headers=headers)

    def _partial_ids(self, h: Headers, concat: H.Concat) -> list[str]:
        """The ids the final's URLs name, in order. At most ``[uploads] max_concat_parts`` of
        them, in a header of at most 1 KiB per part, each partial once: a final that listed one
        small partial thousands of times made the server write megabytes from a few bytes of
        request (and answer HEAD with a header clients refuse)."""
        limit = self.settings.uploads.max_concat_parts
        if len(h.get("upload-concat", "")) > limit * CONCAT_BYTES_PER_PART:
            raise E.ERR_INVALID_CONCAT(f"Upload-Concat is longer than {limit * CONCAT_BYTES_PER_PART} bytes")
        if len(concat.parts) > limit:
            raise E.ERR_INVALID_CONCAT(
                f"Upload-Concat final lists {len(concat.parts)} partial uploads; at most {limit} are allowed")
        part_ids: list[str] = []
        for url in concat.parts:
            part_id = H.id_from_url(url, self.base_path)
            if part_id is None:
                raise E.ERR_NOT_FOUND(f"partial upload {url[:200]!r} is not on this server")
            part_ids.append(part_id)
        if len(set(part_ids)) != len(part_ids):
            twice = next(p for i, p in enumerate(part_ids) if p in part_ids[:i])
            raise E.ERR_INVALID_CONCAT(f"partial upload {twice} is listed more than once")
        return part_ids

    def _check_partial(self, request: Request, part_id: str, part: Upload | None) -> int:
        """One listed partial may go into a final: it exists, is the caller's, is a finished,
        unexpired partial. Returns its length."""
        if part is None:
            raise E.ERR_NOT_FOUND(f"partial upload {part_id} not found")
        if self.ctx.guard is not None:
            self.ctx.guard.check_owner(request, part)
        if part.concat != "partial":
            raise E.ERR_NOT_PARTIAL(f"upload {part_id} is not a partial upload")
        if is_expired(part):
            raise E.ERR_EXPIRED_PARTIAL(f"partial upload {part_id} has expired")
        if not part.is_complete:
            raise E.ERR_PARTIAL_NOT_FINISHED(f"partial upload {part_id} is not finished")
        return part.length or 0

    @staticmethod
    def _check_final_length(h: Headers, total: int) -> None:
        """A final's length is its partials' sum; a client that sends one anyway must agree."""
        stray = h.get("upload-length")
        if stray is not None and H.parse_uint(stray, E.ERR_INVALID_LENGTH) != total:
            raise E.ERR_FINAL_LENGTH()

    async def _assemble(self, request: Request, parts: list[Upload], total: int,
                        metadata: H.Metadata) -> Upload:
        """Concatenate the partials' bytes into a new file, then record the final upload. The
        partials are recorded as this server's paths, not as the client sent them, so the
        Upload-Concat that HEAD answers is bounded by the number of parts."""
        upload_id = secrets.token_hex(16)
        store = self.ctx.store
        try:
            storage_path = await store.concatenate(upload_id, parts)
        except FileNotFoundError:
            raise E.ERR_NOT_FOUND("a partial upload's data is gone") from None
        upload = Upload(id=upload_id, length=total, offset=total, metadata_raw=metadata.raw,
                        concat="final;" + " ".join(self.base_path + part.id for part in parts),
                        concat_parts=json.dumps([part.id for part in parts]),
                        owner=getattr(request.state, "user", None),
                        storage_path=storage_path)
        try:
            upload = await self.ctx.repo.add(upload, self._reservation(request, total))
        except E.TusError:
            await store.terminate(upload)
            raise
        log.info("upload=%s final of %d partials, %d bytes", upload_id, len(parts), total)
        await self.ctx.events.created(upload)
        return upload

    # ------------------------------------------------------------------ HEAD
    async def head(self, request: Request, upload_id: str) -> Response:
        # Taking the lock asks a dead or stalled PATCH to save and stop, so the offset answered
        # here is the one the data backs (T92/T93).
        async with self.ctx.locks.hold(upload_id, lambda: self._load(upload_id, request)):
            upload = await self._reconcile(await self._load(upload_id, request, locked=True))
        headers = {"Upload-Offset": str(upload.offset)}
        if upload.length is not None:
            headers["Upload-Length"] = str(upload.length)
        else:
            headers["Upload-Defer-Length"] = "1"
        if upload.metadata_raw:
            headers["Upload-Metadata"] = upload.metadata_raw
        if upload.concat:
            headers["Upload-Concat"] = upload.concat
        headers.update(self._expires_header(upload))
        if upload.is_complete:
            headers.update(self.ctx.events.completion_headers(upload))
        return Response(status_code=200, headers=headers)

    # ------------------------------------------------------------------ PATCH
    async def patch(self, request: Request, receive: Receive, upload_id: str) -> Response:
        h = request.headers
        if H.media_type(h.get("content-type")) != H.OFFSET_CONTENT_TYPE:
            raise E.ERR_INVALID_CONTENT_TYPE()
        offset = H.parse_uint(h.get("upload-offset"), E.ERR_INVALID_OFFSET)
        declared = h.get("upload-length")
        new_length = H.parse_uint(declared, E.ERR_INVALID_LENGTH) if declared is not None else None
        checksum = H.parse_checksum(h.get("upload-checksum"))
        content_length = self._content_length(h)
        async with self.ctx.locks.hold(upload_id, lambda: self._load(upload_id, request)) as lock:
            upload = await self._reconcile(await self._load(upload_id, request, locked=True))
            if _is_final(upload):
                raise E.ERR_MODIFY_FINAL()
            if offset != upload.offset:
                raise E.ERR_MISMATCHED_OFFSET(
                    f"Upload-Offset {offset} does not match the current offset {upload.offset}")
            if new_length is not None:
                self._check_declared(upload, new_length)
                if upload.length is None and self.ctx.guard is not None:
                    await self.ctx.guard.declare_length(request, upload, new_length)
            if upload.is_complete:
                return await self._patch_complete(upload, receive, content_length)
            room = self._end(new_length if upload.length is None else upload.length) - upload.offset
            if content_length is not None and content_length > room:
                raise E.ERR_SIZE_EXCEEDED(
                    f"body of {content_length} bytes goes past the upload's end ({room} bytes left)")
            if new_length is not None and upload.length is None:
                # Everything is checked: the length is now fixed, even if the body fails.
                await self.ctx.repo.update(upload.id, length=new_length)
                upload.length = new_length
            upload, extra = await self._receive(receive, upload, lock, checksum)
        headers = {"Upload-Offset": str(upload.offset), **extra, **self._expires_header(upload)}
        return Response(status_code=204, headers=headers)

    def _check_declared(self, upload: Upload, length: int) -> None:
        """A length may be declared once; repeating the same value is a harmless retry (T48)."""
        if upload.length is not None:
            if length != upload.length:
                raise E.ERR_LENGTH_CHANGED()
            return
        if length < upload.offset:
            raise E.ERR_LENGTH_BELOW_OFFSET()
        self._check_length(length)

    async def _patch_complete(self, upload: Upload, receive: Receive,
                              content_length: int | None) -> Response:
        """An empty PATCH on a finished upload is a harmless retry; bytes are refused (T24)."""
        if content_length:
            raise E.ERR_UPLOAD_COMPLETE()
        if content_length is None:  # chunked: find out whether anything comes
            reader = BodyReader(receive, 0, self.settings.server.body_idle_timeout, lambda: False)
            async with aclosing(reader.chunks()) as chunks:
                async for _ in chunks:
                    pass
            if reader.end != BodyEnd.COMPLETE:
                raise E.ERR_UPLOAD_COMPLETE()
        return Response(status_code=204, headers={"Upload-Offset": str(upload.offset),
                                                  **self.ctx.events.completion_headers(upload)})

    async def _receive(self, receive: Receive, upload: Upload, lock: LockHandle,
                       checksum: H.Checksum | None) -> tuple[Upload, dict[str, str]]:
        """Store the body at the upload's offset: straight into the file, keeping every byte
        that arrived, or, when a checksum was sent, staged and kept only if it verifies. Then
        complete the upload if that was its last byte, and answer for how the body ended."""
        uploads = self.settings.uploads
        if lock.token is not None:  # the fencing token every offset update below carries
            upload.lock_token = lock.token
        reader = BodyReader(receive, self._end(upload.length) - upload.offset,
                            self.settings.server.body_idle_timeout, lock.release_requested,
                            self.ctx.stopping.is_set,
                            min_rate=MinRate(uploads.min_rate, uploads.min_rate_window))
        if checksum is None:
            failed = await self._receive_direct(upload, reader)
        else:
            failed = await self._receive_staged(upload, reader, checksum)
        extra: dict[str, str] = {}
        if upload.length is not None and upload.offset == upload.length:
            extra = await self._complete(upload)
        err = _body_error(upload, reader, failed)
        if err is not None:
            err.headers["Upload-Offset"] = str(upload.offset)
            raise err
        return upload, extra

    async def _receive_direct(self, upload: Upload, reader: BodyReader) -> OSError | None:
        """Append to the upload's bytes and record whatever was written, however the body ended."""
        appender = self.ctx.store.writer(upload)
        try:
            await self._copy_body(upload, reader, appender)
        finally:
            await self._close_and_advance(upload, appender)
        return appender.failed

    async def _close_and_advance(self, upload: Upload, appender: RecordingWriter) -> None:
        """Close the writer and record the bytes it stored, as ``_advance`` does, with the
        offset update on the writer's worker thread right after the bytes are durable."""
        start, expires_at, repo = upload.offset, self.ctx.repo.next_expiry(), self.ctx.repo

        def record(nbytes: int) -> None:  # on the writer's thread, after the bytes are durable
            repo.update_now(upload.id, offset=start + nbytes, expires_at=expires_at,
                            fence=upload.lock_token)  # 423 if a newer holder took over

        written = await appender.close_then(record)
        if written:
            upload.offset, upload.expires_at = start + written, expires_at

    async def _receive_staged(self, upload: Upload, reader: BodyReader,
                              checksum: H.Checksum) -> OSError | None:
        """Stage the body while hashing; append it to the upload only if the whole body came
        and its digest matches (T61-T63), so the offset never covers unverified bytes."""
        hasher = hashlib.new(checksum.algorithm)
        stager = self.ctx.store.stager(upload, hasher)
        try:
            try:
                await self._copy_body(upload, reader, stager)
            finally:
                await stager.close()
            if stager.failed is None and reader.end == BodyEnd.COMPLETE:
                if hasher.digest() != checksum.digest:
                    raise E.ERR_CHECKSUM_MISMATCH()
                await stager.commit()
                await self._advance(upload, reader.received)
        finally:
            await stager.discard()
        return stager.failed

    async def _copy_body(self, upload: Upload, reader: BodyReader, appender: UploadWriter) -> None:
        """Feed the body to the appender, announcing the bytes as they arrive. A write failure
        ends the copy and stays in ``appender.failed``; the bytes before it are kept."""
        events = self.ctx.events
        events.receiving(upload, True)
        try:
            async with aclosing(reader.chunks()) as chunks:
                async for chunk in chunks:
                    events.progress(upload, len(chunk))
                    await appender.write(chunk)
        except OSError:
            pass
        finally:
            events.receiving(upload, False)

    async def _advance(self, upload: Upload, nbytes: int) -> None:
        """Record ``nbytes`` more stored bytes; every stored byte renews the expiry."""
        upload.offset += nbytes
        upload.expires_at = self.ctx.repo.next_expiry()
        await self.ctx.repo.update(upload.id, offset=upload.offset, expires_at=upload.expires_at,
                                   fence=upload.lock_token)  # 423 if a newer holder took over

    # ------------------------------------------------------------------ completion
    async def _complete(self, upload: Upload) -> dict[str, str]:
        """Record completion exactly once, as one state change in the database; only
        non-partial uploads are announced (``completing``/``completed``, see events.py)."""
        events = self.ctx.events
        publish = upload.concat != "partial"
        if not upload.is_complete:
            await self.ctx.store.finish(upload)  # whole before recorded: any instance may read it
        if publish:
            upload.offset = upload.length or 0
            won = await self.ctx.repo.complete(upload.id, upload.offset, None,
                                               lambda session: events.completing(session, upload))
        else:
            won = await self.ctx.repo.complete(upload.id, upload.offset, self.ctx.repo.next_expiry(), None)
        fresh = await self.ctx.repo.get(upload.id)
        if fresh is not None:
            upload.completed_at, upload.storage_path, upload.expires_at = (
                fresh.completed_at, fresh.storage_path, fresh.expires_at)
        if not won:
            return events.completion_headers(upload) if publish else {}
        log.info("upload=%s complete, %s bytes", upload.id, upload.length)
        if not publish:
            return {}
        return await events.completed(upload)

    # ------------------------------------------------------------------ DELETE
    async def delete(self, request: Request, upload_id: str) -> Response:
        async with self.ctx.locks.hold(upload_id, lambda: self._load(upload_id, request)):  # stops an in-flight PATCH first
            upload = await self._load(upload_id, request, locked=True)
            # A published upload's original belongs to its media item now and stays.
            await self.ctx.repo.delete(upload_id)
            await self.ctx.store.terminate(upload)
        self.ctx.locks.forget(upload_id)
        log.info("upload=%s terminated", upload_id)
        await self.ctx.events.terminated(upload)
        return Response(status_code=204)

    # ------------------------------------------------------------------ GET (download)
    async def get(self, request: Request, upload_id: str) -> Response:
        upload = await self._load(upload_id, request)
        if not upload.is_complete:
            raise E.ERR_NOT_COMPLETE()
        content = await self.ctx.store.content(upload)  # repairs an unfinished publish
        if content is None:
            raise E.ERR_NOT_FOUND("upload data is no longer stored")
        metadata = H.parse_metadata(upload.metadata_raw, 1 << 20, 1 << 10)
        filetype = (metadata.text("filetype") or metadata.text("type")).lower()
        media_type = filetype if _safe_type(filetype) else "application/octet-stream"
        inline = shown_inline(media_type)
        filename = metadata.text("filename") or metadata.text("name") or upload_id
        disposition = "inline" if inline else "attachment"
        response: Response
        if content.path is not None:
            response = FileResponse(content.path, media_type=media_type, filename=_safe_filename(filename),
                                    content_disposition_type=disposition)
        else:  # from a store without a local file (S3): one byte range by ranged reads
            response = streamed_download(request, content, media_type, {
                "Content-Disposition": _disposition(disposition, _safe_filename(filename))})
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Whatever a browser makes of the bytes, they run no script on this origin.
        response.headers["Content-Security-Policy"] = "sandbox"
        return response


def _is_final(upload: Upload) -> bool:
    return bool(upload.concat and upload.concat.startswith("final"))


def _has_body(h: Headers) -> bool:
    return h.get("content-length", "0") != "0" or "transfer-encoding" in h


def _body_error(upload: Upload, reader: BodyReader, failed: OSError | None) -> E.TusError | None:
    """The answer for a body that did not end well (its bytes are already saved), else None."""
    if failed is not None:
        log.error("upload=%s write failed: %s", upload.id, failed)
        return E.ERR_WRITE_FAILED()
    if reader.end == BodyEnd.COMPLETE:
        return None
    if reader.end == BodyEnd.ERROR:
        log.warning("upload=%s body read failed: %r", upload.id, reader.error)
    return _end_error(reader.end)


def _end_error(end: str | None) -> E.TusError:
    if end == BodyEnd.RELEASED:
        return E.ERR_INTERRUPTED()
    if end == BodyEnd.SHUTDOWN:
        return E.ERR_SHUTTING_DOWN()
    if end == BodyEnd.IDLE:
        return E.ERR_READ_TIMEOUT()
    if end == BodyEnd.SLOW:
        return E.ERR_BODY_TOO_SLOW()
    if end == BodyEnd.OVERFLOW:
        return E.ERR_SIZE_EXCEEDED("body went past the upload's end; the bytes up to it were stored")
    if end == BodyEnd.ERROR:
        return E.ERR_READ_FAILED()
    return E.ERR_CLIENT_GONE()


# Shown in the browser rather than saved: media a page plays or shows, none of which can carry
# script. Anything else (text/html, image/svg+xml, any */*+xml, PDF, text/plain) is downloaded:
# the filetype comes from the uploader's metadata, and an inline HTML or XML document would run
# its scripts on this service's origin. text/plain is downloaded too: shown inline it would let
# an upload put any words on a page of this origin.
_INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_MEDIA_TYPE = re.compile(r"(?:video|audio)/[a-z0-9][a-z0-9.-]{0,63}")


def shown_inline(media_type: str) -> bool:
    """video/* and audio/* with a plain subtype (no structured suffix like ``+xml``: a browser
    renders ``video/x+xml`` as an XML document), and four raster image types."""
    return media_type in _INLINE_IMAGES or _MEDIA_TYPE.fullmatch(media_type) is not None


def _safe_type(value: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}", value.lower()))


def _disposition(kind: str, filename: str) -> str:
    """What FileResponse writes for a download, for the bytes a store streams."""
    quoted = urllib.parse.quote(filename)
    if quoted != filename:
        return f"{kind}; filename*=utf-8''{quoted}"
    return f'{kind}; filename="{filename}"'


def _safe_filename(name: str) -> str:
    """No path parts, no control characters; Starlette encodes the rest (RFC 5987)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '"\r\n')
    return cleaned[:200] or "download"
