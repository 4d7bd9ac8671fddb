"""The one bounded wait of the test suites: poll a predicate until it is truthy."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition", *,
               interval: float = 0.1) -> T:
    """Return the predicate's first truthy value; raise TimeoutError naming ``what`` (and the
    last value seen) once ``timeout`` seconds have passed. The predicate runs at least once,
    and once more after the deadline, so a slow first call cannot fail a met condition."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s (last value {value!r})")
        time.sleep(interval)
