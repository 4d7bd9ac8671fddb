"""How many uploads one key (a user, a client address) may start per minute.

A token bucket per key: it holds a minute's worth of creations and refills continuously, so a
page that starts a batch of files at once is not refused, while a script creating uploads in a
loop gets one creation per ``60 / per_minute`` seconds. The answer to a refusal is how long to
wait for the next token, which becomes ``Retry-After``.

State is in memory and per process (one ``RateLimiter`` per guard, built per app): a restart
forgets it and ``workers = N`` processes each count on their own. That is enough to stop one
client flooding the database with rows; a deployment that needs one count across hosts limits
at its proxy. Full buckets carry no information, so they are dropped, which keeps memory
proportional to the keys seen in the last minute.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

PRUNE_EVERY = 1024  # takes between two sweeps of full buckets


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    per_minute: int  # 0 = no limit
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _takes: int = 0

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket: 0.0 when there was one, else the seconds until
        there will be (nothing is spent then)."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
        else:
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
        self._takes += 1
        if self._takes % PRUNE_EVERY == 0:
            self._prune(now, rate)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def _prune(self, now: float, rate: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * rate >= self.per_minute]
        for key in full:
            del self._buckets[key]


def retry_after(seconds: float) -> str:
    """Whole seconds, at least 1: Retry-After has no fractions, and 0 invites a busy loop."""
    return str(max(1, math.ceil(seconds)))
