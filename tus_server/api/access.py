"""Whose videos a request may see, read from the principal the auth middleware leaves in
``request.state`` (see ``tus_server.auth``).

The rule matches ``tus_server.auth.access``: admins and services see everything, a user sees
only what they own, and what belongs to others answers 404 (never 403, which would confirm the
id exists). Without a principal (no auth middleware in this build) nothing is restricted: that
is the single-operator install, where the operator sees everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection


@dataclass(frozen=True)
class Viewer:
    owner: str | None  # None: sees every owner's items

    @property
    def unrestricted(self) -> bool:
        return self.owner is None

    def sees(self, owner: str | None) -> bool:
        return self.owner is None or (owner is not None and owner == self.owner)


EVERYONE = Viewer(None)


def viewer_of(conn: HTTPConnection) -> Viewer:
    principal: Any = getattr(conn.state, "principal", None)
    if principal is None or getattr(principal, "privileged", False):
        return EVERYONE
    return Viewer(str(principal.user))
