"""Authorization failures as named values: a status, a stable code and the one line the client
reads. Raising one changes nothing stored, so every refusal happens before any byte is kept."""

from __future__ import annotations


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __call__(self, message: str | None = None) -> "AuthError":
        """A fresh instance (optionally with a more precise reason) so none is ever shared."""
        return AuthError(self.status, self.code, message or self.message)

    def __repr__(self) -> str:
        return f"AuthError({self.status}, {self.code!r}, {self.message!r})"


ERR_NO_CREDENTIALS = AuthError(401, "ERR_AUTH_REQUIRED", "authentication required: send Authorization: Bearer <token>")
ERR_BAD_SCHEME = AuthError(401, "ERR_AUTH_SCHEME", "Authorization header must use the Bearer scheme")
ERR_UNKNOWN_TOKEN = AuthError(401, "ERR_INVALID_TOKEN", "invalid token")
ERR_TOKEN_EXPIRED = AuthError(401, "ERR_TOKEN_EXPIRED", "token expired")
ERR_TOKEN_NOT_YET_VALID = AuthError(401, "ERR_TOKEN_NOT_YET_VALID", "token not valid yet")
ERR_FORBIDDEN = AuthError(403, "ERR_FORBIDDEN", "not allowed for this principal")
ERR_NOT_FOUND = AuthError(404, "ERR_NOT_FOUND", "not found")
ERR_PLAYBACK_EXPIRED = AuthError(403, "ERR_PLAYBACK_EXPIRED", "playback link expired")
ERR_PLAYBACK_INVALID = AuthError(403, "ERR_PLAYBACK_INVALID", "invalid playback signature")
ERR_PLAYBACK_REQUIRED = AuthError(403, "ERR_PLAYBACK_SIGNATURE_REQUIRED", "playback requires a signed link (exp and sig)")
ERR_TOO_LARGE = AuthError(413, "ERR_MAX_SIZE_EXCEEDED", "upload is larger than you may upload")
ERR_QUOTA_DAY = AuthError(413, "ERR_QUOTA_DAILY_EXCEEDED", "daily upload quota exceeded")
ERR_QUOTA_TOTAL = AuthError(413, "ERR_QUOTA_TOTAL_EXCEEDED", "storage quota exceeded")
ERR_RATE_LIMITED = AuthError(429, "ERR_RATE_LIMITED", "too many uploads started; retry later")
ERR_HOOK_REJECTED = AuthError(403, "ERR_UPLOAD_REJECTED", "upload rejected by the platform")
ERR_HOOK_UNAVAILABLE = AuthError(503, "ERR_HOOK_UNAVAILABLE", "upload admission check is unavailable; retry later")
