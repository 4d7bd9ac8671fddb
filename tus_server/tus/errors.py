"""Errors as named values, each with the status and the one-line reason the client receives."""

from __future__ import annotations


class TusError(Exception):
    """An answer to send instead of the normal response; raising it changes no stored data."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def __call__(self, message: str | None = None) -> "TusError":
        """A fresh instance to raise, so concurrent requests never share one traceback."""
        return TusError(self.status, self.code, message or self.message, dict(self.headers))

    def __repr__(self) -> str:
        return f"TusError({self.status}, {self.code!r}, {self.message!r})"


def _e(status: int, code: str, message: str) -> TusError:
    return TusError(status, code, message)


ERR_UNSUPPORTED_VERSION = _e(412, "ERR_UNSUPPORTED_VERSION", "missing or unsupported Tus-Resumable header; this server speaks 1.0.0")
ERR_INVALID_OFFSET = _e(400, "ERR_INVALID_OFFSET", "missing or invalid Upload-Offset header")
ERR_INVALID_LENGTH = _e(400, "ERR_INVALID_UPLOAD_LENGTH", "invalid Upload-Length header")
ERR_LENGTH_REQUIRED = _e(400, "ERR_UPLOAD_LENGTH_REQUIRED", "Upload-Length or Upload-Defer-Length: 1 is required")
ERR_AMBIGUOUS_LENGTH = _e(400, "ERR_AMBIGUOUS_UPLOAD_LENGTH", "send either Upload-Length or Upload-Defer-Length, not both")
ERR_INVALID_DEFER = _e(400, "ERR_INVALID_UPLOAD_DEFER_LENGTH", "Upload-Defer-Length must be 1")
ERR_LENGTH_CHANGED = _e(400, "ERR_INVALID_UPLOAD_LENGTH_CHANGE", "Upload-Length is already set and cannot change")
ERR_LENGTH_BELOW_OFFSET = _e(400, "ERR_UPLOAD_LENGTH_BELOW_OFFSET", "Upload-Length is smaller than the bytes already received")
ERR_TOO_LARGE = _e(413, "ERR_MAX_SIZE_EXCEEDED", "upload is larger than the maximum size this server accepts")
ERR_SIZE_EXCEEDED = _e(413, "ERR_UPLOAD_SIZE_EXCEEDED", "request body goes past Upload-Length")
ERR_INVALID_METADATA = _e(400, "ERR_INVALID_METADATA", "invalid Upload-Metadata header")
ERR_INVALID_CONTENT_TYPE = _e(415, "ERR_INVALID_CONTENT_TYPE", "PATCH requires Content-Type: application/offset+octet-stream")
ERR_MISMATCHED_OFFSET = _e(409, "ERR_MISMATCHED_OFFSET", "Upload-Offset does not match the upload's current offset")
ERR_NOT_FOUND = _e(404, "ERR_UPLOAD_NOT_FOUND", "upload not found")
ERR_GONE = _e(410, "ERR_UPLOAD_EXPIRED", "upload has expired")
ERR_INVALID_ID = _e(404, "ERR_INVALID_UPLOAD_ID", "upload not found (malformed id)")
ERR_LOCKED = _e(423, "ERR_UPLOAD_LOCKED", "upload is busy with another request; retry")
ERR_INTERRUPTED = _e(400, "ERR_UPLOAD_INTERRUPTED", "request stopped because a newer request took over the upload")
# 5xx rather than 408: tus-js-client and tuspy give up on any 4xx but 409/423, and a client that
# merely stalled should retry (tusd answers read errors with 500 for the same reason).
ERR_READ_TIMEOUT = _e(500, "ERR_READ_TIMEOUT", "no request body bytes arrived in time; what arrived was saved")
ERR_BODY_TOO_SLOW = _e(500, "ERR_BODY_TOO_SLOW", "request body arrived slower than this server's minimum rate; what arrived was saved")
ERR_READ_FAILED = _e(500, "ERR_READ_FAILED", "reading the request body failed; what arrived was saved")
ERR_WRITE_FAILED = _e(500, "ERR_WRITE_FAILED", "storing the request body failed; the stored bytes are kept")
ERR_CLIENT_GONE = _e(400, "ERR_CLIENT_DISCONNECTED", "client went away; received bytes were kept")
ERR_EXPIRED_PARTIAL = _e(410, "ERR_UPLOAD_EXPIRED", "a partial upload of this final upload has expired")
ERR_CHECKSUM_ALGORITHM = _e(400, "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM", "unsupported checksum algorithm")
ERR_INVALID_CHECKSUM = _e(400, "ERR_INVALID_CHECKSUM_HEADER", "invalid Upload-Checksum header")
ERR_CHECKSUM_MISMATCH = _e(460, "ERR_CHECKSUM_MISMATCH", "checksum mismatch; the chunk was discarded")
ERR_INVALID_CONCAT = _e(400, "ERR_INVALID_CONCAT", "invalid Upload-Concat header")
ERR_MODIFY_FINAL = _e(403, "ERR_MODIFY_FINAL", "a final (concatenated) upload cannot be modified")
ERR_PARTIAL_NOT_FINISHED = _e(400, "ERR_UPLOAD_NOT_FINISHED", "a partial upload of this final upload is not finished")
ERR_NOT_PARTIAL = _e(400, "ERR_NOT_PARTIAL_UPLOAD", "Upload-Concat final may only list partial uploads")
ERR_UPLOAD_COMPLETE = _e(413, "ERR_UPLOAD_COMPLETE", "upload is already complete")
ERR_FINAL_LENGTH = _e(400, "ERR_INVALID_UPLOAD_LENGTH", "Upload-Length of a final upload must equal the sum of its partials")
ERR_PARTIAL_DEFER = _e(400, "ERR_INVALID_CONCAT", "a partial upload needs Upload-Length")
ERR_INTERNAL = _e(500, "ERR_INTERNAL", "internal server error")
ERR_METHOD_NOT_ALLOWED = _e(405, "ERR_METHOD_NOT_ALLOWED", "method not allowed")
ERR_SHUTTING_DOWN = _e(503, "ERR_SERVER_SHUTDOWN", "server is shutting down; retry")
ERR_NOT_COMPLETE = _e(404, "ERR_UPLOAD_INCOMPLETE", "upload is not complete yet")
ERR_RANGE = _e(416, "ERR_RANGE_NOT_SATISFIABLE", "requested range not satisfiable")
