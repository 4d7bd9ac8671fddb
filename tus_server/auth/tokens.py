"""Static API tokens from config: for the CLI and the platform's services, which cannot mint JWTs.

Every configured token is compared in constant time, and all of them are compared on every
lookup, so neither the answer's timing nor an early exit tells how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Iterable

from tus_server.auth.principal import Principal


@dataclass(frozen=True)
class TokenEntry:
    token: str
    user: str
    role: str = "user"


class StaticTokens:
    def __init__(self, entries: Iterable[TokenEntry]):
        # Compare digests, not the tokens: equal lengths, so compare_digest leaks nothing.
        self._entries = tuple((hashlib.sha256(e.token.encode()).digest(), e) for e in entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def lookup(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: TokenEntry | None = None
        for known, entry in self._entries:
            if hmac.compare_digest(known, digest):
                found = entry
        if found is None:
            return None
        return Principal(user=found.user, role=found.role, via="token")
