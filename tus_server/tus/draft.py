"""The IETF "Resumable Uploads for HTTP" draft, beside tus 1.0 on the same endpoint.

``DraftHandler`` answers requests that carry ``Upload-Draft-Interop-Version`` (and no
``Tus-Resumable``; the tus handler hands them over, see ``TusHandler.__call__``). It *is* a
``TusHandler`` with the same context: the same rows, files, locks, events and access guard,
and the same body reading, reconciling and exactly-once completion, so a draft upload is
created, resumed, completed, published, expired and cleaned up exactly like a tus one. Only the
wire protocol differs (spec checklist section 13, I1-I16):

- creation is a POST with ``Upload-Complete: ?0|?1``, with or without content; as soon as the
  upload exists a ``104 Upload Resumption Supported`` (Location, the echoed interop version,
  Upload-Limit) goes out through the ``tus_server.informational`` extension, before the body
  is read, so a client whose first request is cut still knows where to resume;
- HEAD answers the offset, PATCH appends (``application/partial-upload`` since interop 6),
  ``Upload-Complete: ?1`` completes, DELETE cancels, OPTIONS lists ``Upload-Limit``;
- the length comes from ``Upload-Length`` or from ``Upload-Complete: ?1`` plus the content's
  length, and every indicator must agree (``inconsistent-upload-length``);
- ``Content-Type`` and ``Content-Disposition`` of the creation become the filetype and filename
  metadata (an ``Upload-Metadata`` header, as tus-js-client sends in draft mode, is kept too);
- RFC 9530: ``Content-Digest`` is checked per append (staged, so nothing of a mismatching append
  is kept); ``Repr-Digest`` is kept with the upload and checked once it is complete, before it
  is published; a mismatch discards the upload;
- errors are ``application/problem+json`` with the draft's problem types.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import aclosing

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from models.tables import Upload
from tus_server import informational
from tus_server.tus import draft_headers as D
from tus_server.tus import errors as E
from tus_server.tus import headers as H
from tus_server.tus.body import BodyEnd, BodyReader, TrackedReceive
from tus_server.tus.handlers import TusContext, TusHandler
from tus_server.tus.locks import LockHandle

log = logging.getLogger("tusflow.tus.draft")

# Where the creation's Repr-Digest waits for completion: a metadata key, so it lives and dies
# with the row (expiry, cleanup, DELETE) and needs no column of its own.
REPR_DIGEST_KEY = "repr-digest"


class DraftHandler(TusHandler):
    def __init__(self, ctx: TusContext):
        super().__init__(ctx)
        s = ctx.settings.uploads
        # No per-request body limit exists on the server: max-append-size stays out until one does.
        self.limit = D.UploadLimit(max_size=s.max_size or None, max_age=s.expiration or None)

    # ------------------------------------------------------------------ ASGI entry point
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        tracked = TrackedReceive(receive)
        request = Request(scope, tracked)
        method = H.effective_method(request.method, request.headers.get("x-http-method-override"))
        version = D.interop_version(request.headers)
        response: Response | None = None
        try:
            response = await self.answer_draft(method, request, tracked, send, version)
            await response(scope, receive, send)
        finally:
            if method == "PATCH":
                self.ctx.events.patch_answered(None if response is None else response.status_code,
                                               time.perf_counter() - started)

    async def answer_draft(self, method: str, request: Request, receive: TrackedReceive, send: Send,
                           version: int | None) -> Response:
        try:
            if version not in D.INTEROP_VERSIONS:
                raise D.ERR_UNSUPPORTED_INTEROP()
            response = await self.dispatch_draft(method, request, receive, send, version)
        except E.TusError as err:
            response = self.error_response(err)
        except Exception:
            log.exception("unexpected error in draft %s %r", method, request.scope.get("path"))
            response = self.error_response(E.ERR_INTERNAL())
        if version in D.INTEROP_VERSIONS:
            response.headers[D.INTEROP_HEADER] = str(version)
        if method == "HEAD":
            response.headers["Cache-Control"] = "no-store"
        if not receive.complete and _has_body(request.headers):
            response.headers["Connection"] = "close"  # the rest of the body is not wanted (T21)
        return response

    async def dispatch_draft(self, method: str, request: Request, receive: Receive, send: Send,
                             version: int) -> Response:
        if method == "OPTIONS":
            return Response(status_code=204, headers={"Upload-Limit": self.limit.render()})
        upload_id = self._id_from_path(request)
        if upload_id is None:
            if method == "POST":
                return await self.create(request, receive, send, version)
            raise E.ERR_METHOD_NOT_ALLOWED(f"{method} is not allowed on the upload collection")
        if not H.is_valid_id(upload_id):
            raise E.ERR_INVALID_ID()
        if method in ("HEAD", "GET"):
            return await self.offset(request, upload_id, method)
        if method == "PATCH":
            if self.ctx.stopping.is_set():
                raise E.ERR_SHUTTING_DOWN()
            return await self.append(request, receive, upload_id, version)
        if method == "DELETE":
            return await self.delete(request, upload_id)
        raise E.ERR_METHOD_NOT_ALLOWED(f"{method} is not allowed on an upload")

    # ------------------------------------------------------------------ responses
    def error_response(self, err: E.TusError) -> Response:
        headers = {"Content-Type": D.PROBLEM_TYPE, **err.headers}
        if err.status == 413:
            headers["Upload-Limit"] = self.limit.render()
        return Response(D.problem_body(err), status_code=err.status, headers=headers)

    def _state_headers(self, upload: Upload) -> dict[str, str]:
        """What every answer about an upload says of it (I2, I8, I9)."""
        headers = {"Upload-Offset": str(upload.offset),
                   "Upload-Complete": D.render_boolean(upload.is_complete),
                   "Upload-Limit": self.limit.render()}
        if upload.length is not None:
            headers["Upload-Length"] = str(upload.length)
        return headers

    # ------------------------------------------------------------------ POST (creation)
    async def create(self, request: Request, receive: Receive, send: Send, version: int) -> Response:
        h = request.headers
        complete = D.parse_boolean(h.get("upload-complete"))
        if complete is None:
            raise D.ERR_COMPLETE_REQUIRED()
        content_length = self._content_length(h)
        length = self._length_of(h, complete, 0, content_length, None)
        if length is not None:
            self._check_length(length)
        repr_digest = D.parse_digests(h.get("repr-digest"))
        content_digest = self._content_digest(h)
        metadata = self._creation_metadata(h)
        if self.ctx.guard is not None:
            metadata = await self.ctx.guard.admit(request, length, metadata, None)
        if repr_digest:
            metadata = _with_value(metadata, REPR_DIGEST_KEY, D.render_digests(repr_digest))
        upload = await self._create(request, length, metadata, False)

        location = {"Location": self.urls.upload_url(request, upload.id)}
        # I1/I2: the upload exists; tell the client where it is before reading a byte.
        await informational.send_informational(request.scope, send, 104, [
            ("Location", location["Location"]), ("Upload-Draft-Interop-Version", str(version)),
            ("Upload-Limit", self.limit.render())])
        try:
            async with self.ctx.locks.hold(upload.id) as lock:
                extra = await self._transfer(request, receive, upload, lock, complete, content_length,
                                             content_digest)
        except E.TusError as err:
            err.headers.update(location)  # the upload exists: the client resumes it
            raise
        headers = {**location, **self._state_headers(upload), **extra, **self._expires_header(upload)}
        if upload.is_complete:
            headers.update(await self._digest_answer(h, upload))
        return Response(status_code=201, headers=headers)

    def _creation_metadata(self, h: Headers) -> H.Metadata:
        """Upload-Metadata if sent (tus-js-client sends it in draft mode), then filetype and
        filename from the creation's Content-Type and Content-Disposition."""
        metadata = H.parse_metadata(h.get("upload-metadata"), self.settings.uploads.max_metadata_size,
                                    self.settings.uploads.max_metadata_pairs)
        filetype = D.filetype_of(h.get("content-type"))
        filename = D.filename_of(h.get("content-disposition"))
        if filetype and "filetype" not in metadata.values:
            metadata = _with_value(metadata, "filetype", filetype)
        if filename and "filename" not in metadata.values:
            metadata = _with_value(metadata, "filename", filename)
        if REPR_DIGEST_KEY in metadata.values:  # only the Repr-Digest field sets it
            values = {k: v for k, v in metadata.values.items() if k != REPR_DIGEST_KEY}
            metadata = H.parse_metadata(H.encode_metadata(values), 1 << 20, 1 << 10)
        return metadata

    # ------------------------------------------------------------------ HEAD (offset retrieval)
    async def offset(self, request: Request, upload_id: str, method: str) -> Response:
        async with self.ctx.locks.hold(upload_id, lambda: self._load(upload_id, request)):
            upload = await self._reconcile(await self._load(upload_id, request, locked=True))
        headers = {**self._state_headers(upload), **self._expires_header(upload),
                   "Cache-Control": "no-store"}
        if upload.is_complete:
            headers.update(self.ctx.events.completion_headers(upload))
            headers.update(await self._digest_answer(request.headers, upload))
        return Response(status_code=204 if method == "HEAD" else 200, headers=headers)

    # ------------------------------------------------------------------ PATCH (append)
    async def append(self, request: Request, receive: Receive, upload_id: str, version: int) -> Response:
        h = request.headers
        if not D.append_type_ok(version, h.get("content-type")):
            raise D.ERR_APPEND_TYPE()
        provided = D.parse_uint(h.get("upload-offset"))
        if provided is None:
            raise D.ERR_OFFSET_REQUIRED()
        complete = D.parse_boolean(h.get("upload-complete"))
        if complete is None:
            raise D.ERR_COMPLETE_REQUIRED()
        content_length = self._content_length(h)
        content_digest = self._content_digest(h)
        async with self.ctx.locks.hold(upload_id, lambda: self._load(upload_id, request)) as lock:
            upload = await self._reconcile(await self._load(upload_id, request, locked=True))
            if provided != upload.offset:
                err = D.mismatching_offset(upload.offset, provided)
                err.headers.update({"Upload-Offset": str(upload.offset),
                                    "Upload-Complete": D.render_boolean(upload.is_complete)})
                raise err
            if upload.is_complete:
                return await self._replay(request, receive, upload, content_length)
            length = self._length_of(h, complete, upload.offset, content_length, upload.length)
            if length is not None and upload.length is None:
                self._check_length(length)
                if self.ctx.guard is not None:
                    await self.ctx.guard.declare_length(request, upload, length)
                # Everything is checked: the length is now fixed, even if the body fails.
                await self.ctx.repo.update(upload.id, length=length)
                upload.length = length
            extra = await self._transfer(request, receive, upload, lock, complete, content_length,
                                         content_digest)
        headers = {**self._state_headers(upload), **extra, **self._expires_header(upload)}
        if upload.is_complete:
            headers.update(await self._digest_answer(h, upload))
        return Response(status_code=204, headers=headers)

    async def _replay(self, request: Request, receive: Receive, upload: Upload,
                      content_length: int | None) -> Response:
        """I9: an empty append to a completed upload gets the final answer again (a client
        whose completing append lost its response); content is refused (I4)."""
        if content_length:
            raise D.ERR_COMPLETED()
        if content_length is None and "transfer-encoding" in request.headers:
            reader = BodyReader(receive, 0, self.settings.server.body_idle_timeout, lambda: False)
            async for _ in reader.chunks():
                pass
            if reader.end != BodyEnd.COMPLETE:
                raise D.ERR_COMPLETED()
        return Response(status_code=204, headers={**self._state_headers(upload),
                                                  **self.ctx.events.completion_headers(upload)})

    # ------------------------------------------------------------------ shared by POST and PATCH
    def _length_of(self, h: Headers, complete: bool, offset: int, content_length: int | None,
                   known: int | None) -> int | None:
        """I6: the length from Upload-Length, from ?1 plus Content-Length, or what is recorded;
        any two that disagree are refused before a byte is stored."""
        indicators = [v for v in (known, D.parse_uint(h.get("upload-length"))) if v is not None]
        if complete and content_length is not None:
            indicators.append(offset + content_length)
        if len(set(indicators)) > 1:
            raise D.ERR_INCONSISTENT_LENGTH(f"the length indicators disagree: {sorted(set(indicators))}")
        length = indicators[0] if indicators else None
        if length is not None:
            if length < offset:
                raise D.ERR_INCONSISTENT_LENGTH(f"length {length} is below the upload's offset {offset}")
            if content_length is not None and offset + content_length > length:
                raise D.ERR_INCONSISTENT_LENGTH(
                    f"content of {content_length} bytes at offset {offset} goes past the length {length}")
        return length

    def _content_digest(self, h: Headers) -> H.Checksum | None:
        """The strongest supported Content-Digest of this request's content, if any."""
        digests = D.parse_digests(h.get("content-digest")) or {}
        for algorithm in ("sha512", "sha256"):
            if algorithm in digests:
                return H.Checksum(algorithm, digests[algorithm])
        return None

    async def _transfer(self, request: Request, receive: Receive, upload: Upload, lock: LockHandle,
                        complete: bool, content_length: int | None,
                        digest: H.Checksum | None) -> dict[str, str]:
        """With the upload's lock held: store the content (if any) at the upload's offset, then
        complete the upload when the request said ``?1``. Every byte that arrived is kept (with
        a Content-Digest: none unless it verifies), and an interrupted request never completes
        the upload (``_receive`` raises for a body that did not end well)."""
        extra: dict[str, str] = {}
        has_content = content_length != 0 and (content_length is not None or "transfer-encoding" in request.headers)
        if has_content:
            try:
                upload, extra = await self._receive(receive, upload, lock, digest)
            except E.TusError as err:
                if err.code == E.ERR_CHECKSUM_MISMATCH.code:
                    raise D.ERR_CONTENT_DIGEST() from None
                raise
        if complete and not upload.is_complete:
            if upload.length is None:
                # ?1 with content of unannounced length: what arrived is the whole upload.
                await self.ctx.repo.update(upload.id, length=upload.offset)
                upload.length = upload.offset
            if upload.offset != upload.length:
                raise D.ERR_INCONSISTENT_LENGTH(
                    f"Upload-Complete: ?1 at offset {upload.offset}, but the length is {upload.length}")
            extra = await self._complete(upload)
        return extra

    # ------------------------------------------------------------------ completion and digests
    async def _complete(self, upload: Upload) -> dict[str, str]:
        """Every completion path (an append, a reconciling HEAD) checks the Repr-Digest first:
        a mismatching upload is discarded before it could be published (I14). The bytes are
        made whole first (``finish``, idempotent: the completion below finds it done), since a
        store may only be able to read them back then (S3 cannot read unfinished parts)."""
        if not upload.is_complete:
            expected = _expected_digests(upload)
            if expected:
                await self.ctx.store.finish(upload)
                actual = await self._stored_digests(upload, list(expected))
                if actual != expected:
                    log.warning("upload=%s Repr-Digest mismatch; discarded", upload.id)
                    await self._discard(upload)
                    raise D.ERR_REPR_DIGEST()
        return await super()._complete(upload)

    async def _discard(self, upload: Upload) -> None:
        await self.ctx.repo.delete(upload.id)
        await self.ctx.store.terminate(upload)  # not complete: nothing of it is kept
        self.ctx.locks.forget(upload.id)
        await self.ctx.events.terminated(upload)

    async def _digest_answer(self, h: Headers, upload: Upload) -> dict[str, str]:
        """``Want-Repr-Digest`` on a completed upload: its digest (RFC 9530 section 4)."""
        wanted = D.wanted_digests(h.get("want-repr-digest"))
        if not wanted:
            return {}
        try:
            digests = await self._stored_digests(upload, wanted)
        except FileNotFoundError:
            return {}
        return {"Repr-Digest": D.render_digests(digests)}

    async def _stored_digests(self, upload: Upload, algorithms: list[str]) -> dict[str, bytes]:
        """Digests of the upload's stored bytes, read through the store (a file or an S3
        object, streamed in bounded blocks); hashed on the pool, which hashlib runs without
        the GIL, so the event loop never waits for a 4 GiB digest."""
        store = self.ctx.store
        hashers = {name: hashlib.new(name) for name in algorithms}
        async with aclosing(store.read(upload)) as blocks:  # type: ignore[type-var]
            async for block in blocks:
                await store.run(_update_all, list(hashers.values()), block)
        return {name: hasher.digest() for name, hasher in hashers.items()}


def _has_body(h: Headers) -> bool:
    return h.get("content-length", "0") != "0" or "transfer-encoding" in h


def _with_value(metadata: H.Metadata, key: str, value: str) -> H.Metadata:
    values = {**metadata.values, key: value.encode()}
    return H.parse_metadata(H.encode_metadata(values), 1 << 20, 1 << 10)


def _expected_digests(upload: Upload) -> dict[str, bytes]:
    raw = H.parse_metadata(upload.metadata_raw, 1 << 20, 1 << 10).text(REPR_DIGEST_KEY)
    try:
        return D.parse_digests(raw) or {} if raw else {}
    except E.TusError:
        return {}


def _update_all(hashers: list["hashlib._Hash"], block: bytes) -> None:
    for hasher in hashers:
        hasher.update(block)
