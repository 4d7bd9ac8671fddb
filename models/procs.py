"""Children that die with their parent: Linux's ``PR_SET_PDEATHSIG``.

Three places start processes that must not outlive whoever started them: ``tusflow up``'s
children, the RQ work horse and the ffmpeg a job runs. A supervisor or worker killed with
SIGKILL runs no cleanup, so only the kernel can stop what it left behind. Elsewhere than
Linux these are no-ops and callers fall back on their own stop paths.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Callable

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no libc prctl: not Linux
        return None


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies. False when the
    platform cannot. With ``parent`` (the pid the caller forked from), a parent that already
    died before the request took effect ends this process at once: the kernel would never
    deliver the signal for a death that happened earlier."""
    prctl = _prctl()
    if prctl is None:
        return False
    armed = prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    if parent is not None and os.getppid() != parent:
        os._exit(1)
    return armed


def preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``subprocess.Popen(preexec_fn=...)`` hook that makes the child die with this process.

    libc is looked up here, before the fork, so the child makes one system call between fork
    and exec; the parent's pid is taken here too, so a parent that died in between is noticed.
    None where the platform has no ``prctl``."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    number = int(sig)

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return arm
