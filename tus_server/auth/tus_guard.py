"""What the tus handler asks the auth layer: may this principal create this upload, and may it
touch that one. Answers come back as the tus handler's own ``TusError`` so refusals carry
``Tus-Resumable`` and the handler's error format.

The upload URL is a capability (tus T100): HEAD, PATCH, DELETE and GET get the same check as
creation, and a non-owner learns nothing, not even that the id exists (404). The creation rate,
size, quota and the platform's pre-create hook are all decided before the row and the file exist
(T98), so a refusal leaves nothing behind. The quota is decided twice: up front, so a refused
upload never reaches the hook, and again, atomically, in the transaction that inserts the row
(``reservation``), so two creations racing each other cannot both pass it.
"""

from __future__ import annotations

from typing import Callable

import anyio.to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.requests import Request

from models.db import session_scope
from models.tables import Upload
from tus_server.auth.access import can_access
from tus_server.auth.errors import ERR_RATE_LIMITED, AuthError
from tus_server.auth.prehook import PreCreateHook
from tus_server.auth.principal import Principal
from tus_server.auth.quota import Limits, Usage, check_quota, check_size, reserve, usage_of
from tus_server.auth.ratelimit import RateLimiter, retry_after
from tus_server.tus import errors as TE
from tus_server.tus import headers as H

_HOOK_META_LIMIT = 1 << 16


def _tus(err: AuthError) -> TE.TusError:
    return TE.TusError(err.status, err.code, err.message)


def principal_of(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


class TusGuard:
    def __init__(self, engine: Engine, limits: Limits, hook: PreCreateHook | None = None,
                 usage: Callable[[str], Usage] | None = None,
                 per_user: RateLimiter | None = None, per_address: RateLimiter | None = None):
        self.engine = engine
        self.limits = limits
        self.hook = hook
        self._usage = usage or self._usage_from_db
        # Creations per minute, per user and per client address: in this process's memory
        # (see ratelimit.py), owned by this guard, so every app counts on its own.
        self.per_user = per_user or RateLimiter(0)
        self.per_address = per_address or RateLimiter(0)

    def _usage_from_db(self, user: str) -> Usage:
        with session_scope(self.engine) as session:
            return usage_of(session, user)

    def check_owner(self, request: Request, upload: Upload) -> None:
        """404, exactly like a missing upload, for anyone but the owner or an admin. Fails
        closed: a request that reached here without a principal is nobody's."""
        if not can_access(principal_of(request), upload.owner):
            raise TE.ERR_NOT_FOUND()

    async def admit(self, request: Request, length: int | None, metadata: H.Metadata,
                    concat: str | None = None) -> H.Metadata:
        """Rate, size, quota, then the platform; returns the metadata to store (the hook may set
        it). A final upload is checked like any other: the server stores its bytes a second
        time, so it counts against the quota (see quota.py)."""
        principal = principal_of(request)
        if principal is None:
            raise TE.ERR_NOT_FOUND()
        self._check_rate(request, principal)
        try:
            if length is not None:
                check_size(principal, length, self.limits.max_size)
                await self._check_quota(principal, length)
            if self.hook is None:
                return metadata
            texts = {key: metadata.text(key) for key in metadata.values}
            replaced = await self.hook.admit(principal, length, texts, concat)
        except AuthError as err:
            raise _tus(err) from None
        return metadata if replaced is None else _encode(replaced)

    async def declare_length(self, request: Request, upload: Upload, length: int) -> None:
        """A deferred length becomes known: the same size and quota rules as at creation. The
        upload itself already counts with the bytes it has, so only the rest is new."""
        principal = principal_of(request)
        if principal is None:
            raise TE.ERR_NOT_FOUND()
        try:
            check_size(principal, length, self.limits.max_size)
            await self._check_quota(principal, max(0, length - upload.offset))
        except AuthError as err:
            raise _tus(err) from None

    def reservation(self, request: Request, length: int | None) -> Callable[[Session], None] | None:
        """The quota check to run inside the transaction that inserts the upload's row, right
        after the insert (``quota.reserve``); None when no quota applies to this caller."""
        principal = principal_of(request)
        if principal is None or principal.privileged or not (self.limits.per_day or self.limits.total):
            return None
        limits = self.limits

        def check(session: Session) -> None:
            try:
                reserve(session, principal, length or 0, limits)
            except AuthError as err:
                raise _tus(err) from None
        return check

    def _check_rate(self, request: Request, principal: Principal) -> None:
        """429 with Retry-After when this user or this address started too many uploads in
        the last minute. Admins and services (the platform's backend, the CLI) are trusted."""
        if principal.privileged:
            return
        address = request.client.host if request.client else ""
        wait = max(self.per_user.take(principal.user), self.per_address.take(address))
        if wait > 0:
            seconds = retry_after(wait)
            err = _tus(ERR_RATE_LIMITED(f"too many uploads started; retry in {seconds} s"))
            err.headers["Retry-After"] = seconds
            raise err

    async def _check_quota(self, principal: Principal, length: int) -> None:
        if principal.privileged or not (self.limits.per_day or self.limits.total):
            return
        usage = await anyio.to_thread.run_sync(self._usage, principal.user)
        check_quota(principal, usage, length, self.limits)


def _encode(values: dict[str, str]) -> H.Metadata:
    """The platform's metadata as an Upload-Metadata header; keys it invents must still be
    valid tus keys, or the answer is treated as a broken hook (503), not the client's fault."""
    raw = H.encode_metadata(dict(values))
    try:
        return H.parse_metadata(raw, _HOOK_META_LIMIT, 1024)
    except TE.TusError:
        raise TE.TusError(503, "ERR_HOOK_UNAVAILABLE",
                          "upload admission check answered invalid metadata keys") from None
