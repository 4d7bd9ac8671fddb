"""Backoff between attempts: exponential, capped, with jitter.

Jitter matters with ``--jobs``: after a network drop every worker fails at the same moment,
and without it they would all come back at the same moment too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 10         # consecutive failed attempts allowed per file before giving up
    base_delay: float = 1.0   # first wait, doubled after each further failure
    max_delay: float = 60.0   # no single wait is longer than this

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Wait before the attempt that follows the ``failures``-th consecutive failure."""
        raw = min(self.max_delay, self.base_delay * (2 ** max(0, failures - 1)))
        return raw * (0.5 + 0.5 * (rng or random).random())

    def exhausted(self, failures: int) -> bool:
        return failures > self.retries
