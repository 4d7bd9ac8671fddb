"""Upload one file with tuspy, resuming, retrying and reporting progress.

tuspy (1.1) does the protocol: creation headers and metadata encoding, the per-chunk
``Upload-Checksum`` (``BaseTusRequest.add_checksum`` hashes each chunk it sends), looking the
file's URL up in a ``Storage`` and HEADing it to resume, and advancing the offset from each
PATCH response. ``FileUploader`` subclasses its ``Uploader`` only where it falls short for
unattended bulk use:

- **timeouts**: tuspy calls ``requests`` with no timeout, so a connection that stalls (a NAT
  that forgets it, a server that hangs) would block the file forever. ``get_offset``,
  ``create_url`` and the chunk request are re-stated with a timeout and a per-thread session;
  each is a single request, the headers still come from tuspy.
- **"gone" vs "try again"**: tuspy's ``get_offset`` raises the same error for a network blip
  and for a 404; a resume must drop the stored URL on 404/410/403 (as tuspy and tus-js-client
  intend, T13) but keep it on 423, 5xx or a dropped connection.
- **retries**: tuspy's are a fixed delay, recursive, and reset per chunk; ours (``Transfer``)
  back off exponentially with a cap, resync the offset with HEAD after every failure, and give
  up on a file with a clear message without stopping the batch.
- **keys**: the storage key is ``path|size|mtime`` (see ``state``), supplied by overriding
  ``_get_fingerprint``; tuspy's default reads the file's head and would close our stream.
- **hooks**: a chunk callback for progress; the ``Link: rel="media"`` of the completion
  response is kept for ``--wait``.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable
from urllib.parse import urljoin

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.request import TusRequest
from tusclient.uploader import Uploader

from tusflow_client.events import Emit, Event
from tusflow_client.net import Timeouts, auth_headers, describe, new_session
from tusflow_client.retry import RetryPolicy
from tusflow_client.server import ServerInfo
from tusflow_client.state import StateFile, state_key
from tusflow_client.units import human_bytes

UPLOADED, RESUMED, SKIPPED, FAILED, NOT_STARTED = "uploaded", "resumed", "skipped", "failed", "not started"

# Answers that mean "this request will never work": retrying them only delays the message.
_PERMANENT = {400, 401, 403, 405, 412, 413, 415, 501}
_GONE = {404, 410}

_VIDEO_TYPES = {
    "mp4": "video/mp4", "m4v": "video/x-m4v", "mov": "video/quicktime", "mkv": "video/x-matroska",
    "webm": "video/webm", "avi": "video/x-msvideo", "mpg": "video/mpeg", "mpeg": "video/mpeg",
    "ts": "video/mp2t", "flv": "video/x-flv", "wmv": "video/x-ms-wmv", "3gp": "video/3gpp",
    "ogv": "video/ogg",
}
_LINK_MEDIA = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?media"?', re.IGNORECASE)


class FileProblem(Exception):
    """This file cannot be uploaded; the message is for the user, the batch goes on."""


class Gone(TusCommunicationError):
    """The stored upload URL no longer exists on the server; start a new upload."""


class Interrupted(Exception):
    """The run is stopping (Ctrl-C / SIGTERM); the state file already holds the URL."""


@dataclass(frozen=True)
class TransferOptions:
    chunk_size: int = 8 * 1024 * 1024
    retry: RetryPolicy = RetryPolicy()
    timeouts: Timeouts = Timeouts()
    title: str | None = None
    token: str | None = None


@dataclass
class FileResult:
    path: str
    status: str
    size: int = 0
    start_offset: int = 0
    acked: int = 0       # bytes the server acknowledged during this run
    sent: int = 0        # request body bytes put on the wire this run, failed attempts included
    seconds: float = 0.0
    url: str | None = None
    media: str | None = None
    error: str | None = None
    retries: int = 0


# ---------------------------------------------------------------------------- tuspy subclasses
class _ChunkRequest(TusRequest):
    """tuspy's PATCH with a timeout and our session; the headers (offset, content type,
    checksum of exactly this chunk) are tuspy's."""

    def __init__(self, uploader: "FileUploader"):
        super().__init__(uploader)
        self._session = uploader.session
        self._timeouts = uploader.timeouts
        self.sent = 0

    def perform(self) -> None:
        chunk = self.file.read(self._content_length)
        if len(chunk) != self._content_length:
            raise FileProblem(f"file shrank while uploading (expected {self._content_length} more bytes "
                              f"at offset {self.file.tell() - len(chunk)}, read {len(chunk)})")
        self.add_checksum(chunk)
        self.sent = len(chunk)
        try:
            resp = self._session.patch(self._url, data=chunk, headers=self._request_headers,
                                       timeout=self._timeouts.pair(), verify=self.verify_tls_cert,
                                       cert=self.client_cert)
            self.status_code = resp.status_code
            self.response_content = resp.content
            self.response_headers = {k.lower(): v for k, v in resp.headers.items()}
        except requests.RequestException as error:
            raise TusUploadFailed(describe(error)) from error


class FileUploader(Uploader):
    def __init__(self, *, key: str, session: requests.Session, timeouts: Timeouts,
                 checksum: tuple[str, Callable[..., Any]] | None, **kwargs: Any):
        # Everything BaseUploader.__init__ touches while resuming (fingerprint, HEAD) is set first.
        self.key = key
        self.session = session
        self.timeouts = timeouts
        self.media_link: str | None = None
        self.server_length: int | None = None
        self.last_sent = 0
        if checksum is not None:
            self.CHECKSUM_ALGORITHM_PAIR = checksum  # read by BaseUploader.__init__
        super().__init__(upload_checksum=checksum is not None, **kwargs)

    def _get_fingerprint(self) -> str:
        return self.key

    def _note(self, response: requests.Response) -> None:
        link = response.headers.get("Link")
        if link:
            match = _LINK_MEDIA.search(link)
            if match:
                self.media_link = urljoin(self.client.url, match.group(1))

    def get_offset(self) -> int:
        try:
            resp = self.session.head(self.url, headers=self.get_headers(), timeout=self.timeouts.pair(),
                                     verify=self.verify_tls_cert, cert=self.client_cert)
        except requests.RequestException as error:
            raise TusCommunicationError(f"HEAD failed: {describe(error)}") from error
        if resp.status_code in _GONE or resp.status_code == 403:
            raise Gone(f"upload {self.url} is gone ({resp.status_code})", resp.status_code)
        offset = resp.headers.get("Upload-Offset", "")
        if not 200 <= resp.status_code < 300 or not offset.isdigit():
            raise TusCommunicationError(f"HEAD answered {resp.status_code} {resp.reason}"
                                        + ("" if offset else " without Upload-Offset"), resp.status_code)
        length = resp.headers.get("Upload-Length", "")
        self.server_length = int(length) if length.isdigit() else None
        self._note(resp)
        return int(offset)

    def create_url(self) -> str:
        try:
            resp = self.session.post(self.client.url, headers=self.get_url_creation_headers(),
                                     timeout=self.timeouts.pair(), verify=self.verify_tls_cert,
                                     cert=self.client_cert)
        except requests.RequestException as error:
            raise TusCommunicationError(f"creating the upload failed: {describe(error)}") from error
        location = resp.headers.get("Location")
        if resp.status_code != 201 or not location:
            hint = "; check --token / TUSFLOW_TOKEN" if resp.status_code in (401, 403) else ""
            raise TusCommunicationError(f"creating the upload: server answered {resp.status_code} {resp.reason}"
                                        + _body_hint(resp.content) + hint, resp.status_code, resp.content)
        self._note(resp)
        return urljoin(self.client.url, location)

    def _do_request(self) -> None:
        self.request = _ChunkRequest(self)
        try:
            self.request.perform()
        finally:
            self.last_sent = self.request.sent
        status = self.request.status_code or 0
        headers = self.request.response_headers
        if status in _GONE:
            raise Gone(f"upload {self.url} is gone ({status})", status)
        if not 200 <= status < 300:
            raise TusUploadFailed(f"PATCH answered {status}" + _body_hint(self.request.response_content),
                                  status, self.request.response_content)
        if not str(headers.get("upload-offset", "")).isdigit():
            raise TusUploadFailed(f"PATCH answered {status} without a valid Upload-Offset", status)
        link = headers.get("link")
        if link and (match := _LINK_MEDIA.search(link)):
            self.media_link = urljoin(self.client.url, match.group(1))


def _body_hint(content: bytes | None) -> str:
    text = (content or b"")[:200].decode("utf-8", "replace").strip().splitlines()
    return f": {text[0]}" if text else ""


# ---------------------------------------------------------------------------- metadata
def title_for(path: Path, template: str | None) -> str:
    """``--title`` may use {stem}, {name} and {parent}; without it the title is the file name
    made readable (``week_03-intro.mp4`` → ``week 03 intro``)."""
    if template:
        try:
            return template.format(stem=path.stem, name=path.name, parent=path.parent.name)
        except (KeyError, IndexError, ValueError):
            return template
    return " ".join(path.stem.replace("_", " ").replace("-", " ").split()) or path.name


def filetype_for(path: Path) -> str:
    ext = path.suffix.lstrip(".").lower()
    return _VIDEO_TYPES.get(ext) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


# ---------------------------------------------------------------------------- one file
class Transfer:
    """One file's journey. ``run`` never raises for the file's own problems: it returns a
    FileResult with status ``failed`` so the batch goes on."""

    def __init__(self, path: Path, *, server: ServerInfo, state: StateFile, options: TransferOptions,
                 emit: Emit, stop: threading.Event):
        self.path = path
        self.server = server
        self.state = state
        self.options = options
        self.emit = emit
        self.stop = stop
        self.result = FileResult(path=str(path), status=FAILED)

    def run(self) -> FileResult:
        started = time.monotonic()
        try:
            self._run()
        except FileProblem as exc:
            self.result.status, self.result.error = FAILED, str(exc)
        except Interrupted:
            self.result.status, self.result.error = FAILED, "interrupted; run again to resume"
        except Exception as exc:  # a bug must cost one file, not the batch
            self.result.status, self.result.error = FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
        self.result.seconds = time.monotonic() - started
        r = self.result
        if r.status == FAILED:
            self.emit(Event("failed", r.path, {"error": r.error, "size": r.size, "offset": r.start_offset + r.acked,
                                               "sent": r.sent, "url": r.url}))
        else:
            self.emit(Event("done", r.path, {"status": r.status, "size": r.size, "sent": r.sent,
                                             "start_offset": r.start_offset, "seconds": round(r.seconds, 3),
                                             "url": r.url, "media": r.media}))
        return r

    # ------------------------------------------------------------------ steps
    def _open(self) -> IO[bytes]:
        where = str(self.path)
        try:
            st = os.stat(where)
        except FileNotFoundError:
            raise FileProblem("file vanished since it was found (no such file)") from None
        except OSError as exc:
            raise FileProblem(f"cannot read file: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise FileProblem("not a file any more: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem("not a regular file")
        try:
            return open(where, "rb")
        except FileNotFoundError:
            raise FileProblem("file vanished since it was found (no such file)") from None
        except PermissionError:
            raise FileProblem("cannot read file: permission denied") from None
        except OSError as exc:
            raise FileProblem(f"cannot read file: {exc.strerror}") from None

    def _run(self) -> None:
        with self._open() as stream:
            st = os.fstat(stream.fileno())
            size = st.st_size
            self.result.size = size
            max_size = self.server.max_size
            if max_size is not None and size > max_size:
                raise FileProblem(f"file is {_fmt(size)}, over the server's Tus-Max-Size of {_fmt(max_size)}")
            key = state_key(self.path, size, st.st_mtime_ns)
            self._upload(stream, key, size)
        if self.result.status in (UPLOADED, RESUMED):
            self._check_unchanged(st)

    def _check_unchanged(self, before: os.stat_result) -> None:
        """A recording still being written (or edited) while it was sent: the server has the
        bytes as they were read, and the next run will see a new size/mtime and upload the
        file again. Say so now rather than let a truncated lecture pass silently."""
        try:
            after = os.stat(self.path)
        except OSError:
            return
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            self.emit(Event("warning", str(self.path), {
                "message": "file changed while it was uploading; the server has the version read at the "
                           "start, run again to upload the new version"}))

    def _new_uploader(self, stream: IO[bytes], key: str, session: requests.Session) -> FileUploader:
        """tuspy looks the key up and HEADs a stored URL here; a gone URL is forgotten and
        the uploader built again without it."""
        client = TusClient(self.server.endpoint, headers=auth_headers(self.options.token))
        metadata = {"filename": self.path.name, "filetype": filetype_for(self.path),
                    "title": title_for(self.path, self.options.title)}
        failures = 0
        while True:
            self._check_stop()
            try:
                return FileUploader(key=key, session=session, timeouts=self.options.timeouts,
                                    checksum=self.server.checksum(), file_stream=stream, client=client,
                                    chunk_size=self.options.chunk_size, metadata=metadata,
                                    store_url=True, url_storage=self.state)
            except Gone as exc:
                self.state.remove_item(key)
                self.emit(Event("warning", str(self.path), {"message": f"{exc}; starting a new upload"}))
            except TusCommunicationError as exc:
                failures = self._failed(failures, str(exc), exc.status_code)

    def _upload(self, stream: IO[bytes], key: str, size: int) -> None:
        r = self.result
        with new_session(self.options.token) as session:
            up = self._new_uploader(stream, key, session)
            r.url = up.url
            if up.url is not None and up.server_length not in (None, size):
                # same key, different length: not the upload we stored; start over
                self.state.remove_item(key)
                up.url, up.offset = None, 0
            if up.url is not None and up.offset >= size:
                r.status, r.start_offset, r.media = SKIPPED, up.offset, up.media_link or self.state.media_of(key)
                self.state.mark_done(key, r.media)
                return
            r.start_offset = up.offset if up.url else 0
            r.status = RESUMED if r.start_offset > 0 else UPLOADED
            self.emit(Event("start", r.path, {"size": size, "offset": r.start_offset, "url": up.url,
                                              "resumed": r.status == RESUMED}))
            failures, gone, resync = 0, 0, False
            while True:
                self._check_stop()
                try:
                    if up.url is None:
                        up.set_url(up.create_url())  # stored before any byte is sent
                        up.offset, r.url = 0, up.url
                        self.emit(Event("created", r.path, {"url": up.url}))
                    elif resync:
                        up.offset = up.get_offset()
                    resync = False
                    if up.offset >= size:
                        break
                    before = up.offset
                    try:
                        up.upload_chunk()
                    finally:
                        r.sent += up.last_sent
                        up.last_sent = 0
                    if up.offset > before:
                        failures = 0
                    r.acked = up.offset - r.start_offset
                    self.emit(Event("progress", r.path, {"offset": up.offset, "size": size, "sent": r.sent}))
                except Gone as exc:
                    gone += 1
                    if gone > self.options.retry.retries:
                        raise FileProblem(f"the server keeps losing the upload: {exc}") from None
                    self.state.remove_item(key)
                    self.emit(Event("warning", r.path, {"message": f"{exc}; starting a new upload"}))
                    up.url, up.offset, r.start_offset, r.acked, r.status = None, 0, 0, 0, UPLOADED
                except TusCommunicationError as exc:
                    failures = self._failed(failures, str(exc), exc.status_code)
                    resync = True
            r.acked = up.offset - r.start_offset
            if up.media_link is None:
                try:  # the completing response was lost; HEAD of a completed upload has the Link
                    up.get_offset()
                except TusCommunicationError:
                    pass
            r.media = up.media_link
            self.state.mark_done(key, r.media)

    def _failed(self, failures: int, message: str, status: int | None) -> int:
        """Count a failed request; sleep before the next one or give the file up."""
        if status in _PERMANENT:
            raise FileProblem(message)
        failures += 1
        self.result.retries += 1
        policy = self.options.retry
        if policy.exhausted(failures):
            raise FileProblem(f"giving up after {policy.retries} retries: {message}")
        delay = policy.delay(failures)
        self.emit(Event("retry", str(self.path), {"attempt": failures, "of": policy.retries,
                                                   "delay": round(delay, 2), "error": message}))
        if self.stop.wait(delay):
            raise Interrupted()
        return failures

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted()


def _fmt(n: int) -> str:
    return f"{human_bytes(n)} ({n} bytes)"
