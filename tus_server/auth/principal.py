"""Who is asking: the one value every authorization decision is made from.

Roles: ``user`` (a teacher: sees and manages only what they own, quota applies), ``admin``
(sees and manages everything, no quota), ``service`` (a trusted machine such as the platform's
backend or the CLI: access like an admin, no quota, and may read ``/metrics`` when it is
protected). Keeping role names in one tuple lets config, tokens and JWT claims share the check.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.config import AUTH_ROLES as ROLES
ANONYMOUS_USER = "anonymous"


@dataclass(frozen=True)
class Principal:
    user: str
    role: str = "user"
    max_upload_size: int | None = None  # from a JWT claim; None = only the global limit
    via: str = "token"  # "token", "jwt", "anonymous" (auth disabled), "signed-url" or "unidentified"
    # Unix time from which the credential is refused (a JWT's exp plus the allowed leeway);
    # None = it does not expire (static tokens). Requests are checked once, at their start; a
    # long one (an event stream) reads this to end itself when its credential would no longer
    # let it in.
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def privileged(self) -> bool:
        """Sees every owner's uploads and media and is exempt from quota."""
        return self.role in ("admin", "service")

    @property
    def authenticated(self) -> bool:
        """Proved who they are with a credential (not merely let through by config or a link)."""
        return self.via in ("token", "jwt")


def anonymous() -> Principal:
    """The principal of every request when ``[auth] enabled = false``: a single-machine install
    has one operator, who must see and manage everything, so it is an admin."""
    return Principal(user=ANONYMOUS_USER, role="admin", via="anonymous")


def unidentified() -> Principal:
    """The principal of a page-shell navigation that carried no usable credential (auth on):
    it may load the empty page, whose script then brings the token to the API. No user name, no
    privilege: anything that checks ownership finds nothing it owns."""
    return Principal(user="", role="user", via="unidentified")
