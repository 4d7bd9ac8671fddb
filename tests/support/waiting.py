"""The one bounded wait of the test suites: poll a predicate until it is truthy (from a
coroutine, ``wait_until_async``, which lets the event loop run between polls)."""

from __future__ import annotations

import asyncio
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


async def wait_until_async(predicate: Callable[[], T], timeout: float = 5.0,
                           what: str = "condition", *, interval: float = 0.02) -> T:
    """``wait_until`` for a test running on the event loop: it sleeps with ``asyncio.sleep``,
    so the tasks that are to make the predicate true (a lock's, an app's shutdown) can run."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)
