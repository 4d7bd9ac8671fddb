"""Ownership: the rule every handler applies to an upload or media item it has loaded.

Non-owners get 404, never 403: an upload URL is a capability (tus T100) and a 403 would confirm
that the id exists, which is exactly what a guessing client wants to learn.
"""

from __future__ import annotations

from tus_server.auth.errors import ERR_NOT_FOUND, AuthError
from tus_server.auth.principal import Principal


def can_access(principal: Principal | None, owner: str | None) -> bool:
    """Owner match or a privileged role. Rows without an owner (made before auth was enabled)
    belong to nobody in particular, so only privileged principals reach them."""
    if principal is None:
        return False
    if principal.privileged:
        return True
    return owner is not None and owner == principal.user


def require_access(principal: Principal | None, owner: str | None,
                   not_found: AuthError = ERR_NOT_FOUND) -> None:
    if not can_access(principal, owner):
        raise not_found()


def owner_filter(principal: Principal) -> str | None:
    """The owner a listing must be restricted to, or None when the principal sees everyone."""
    return None if principal.privileged else principal.user
