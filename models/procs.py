"""Children that die with their parent: Linux's ``PR_SET_PDEATHSIG``.

Three places start processes that must not outlive whoever started them: ``tusflow up``'s
children, the RQ work horse and the ffmpeg a job runs. A supervisor or worker killed with
SIGKILL runs no cleanup, so only the kernel can stop what it left behind. Elsewhere than
Linux these are no-ops and callers fall back on their own stop paths.

The same hook sets resource ceilings (``Limits``): an ffmpeg fed a hostile file must fail
alone, by the kernel refusing it memory or processor time, before it takes the machine.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from dataclasses import dataclass
from typing import Callable

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
CPU_GRACE_S = 5  # SIGXCPU at the soft limit, SIGKILL this much later if it is ignored


@dataclass(frozen=True)
class Limits:
    """Ceilings for one child process; None leaves that resource as inherited.

    ``memory_bytes`` is ``RLIMIT_AS``, the address space: it counts what a process reserves,
    not only what it touches, so it must allow for thread stacks and mapped libraries. A
    child over it sees allocations fail (ffmpeg prints "Cannot allocate memory") and exits.
    ``cpu_seconds`` is ``RLIMIT_CPU``, summed over all the child's threads: at the limit the
    kernel sends SIGXCPU, then SIGKILL ``CPU_GRACE_S`` later."""

    memory_bytes: int | None = None
    cpu_seconds: int | None = None


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


def preexec(sig: int = signal.SIGKILL,
            limits: Limits | None = None) -> Callable[[], None] | None:
    """A ``subprocess.Popen(preexec_fn=...)`` hook that makes the child die with this process
    and, with ``limits``, caps its memory and processor time.

    libc is looked up here, before the fork, so the child makes few system calls between fork
    and exec; the parent's pid is taken here too, so a parent that died in between is noticed.
    None where the platform has neither ``prctl`` nor limits to set."""
    prctl = _prctl()
    ceilings = _rlimits(limits)
    if prctl is None and not ceilings:
        return None
    parent = os.getpid()
    number = int(sig)

    def arm() -> None:
        for which, value in ceilings:
            resource.setrlimit(which, value)
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return arm


def _rlimits(limits: Limits | None) -> list[tuple[int, tuple[int, int]]]:
    """(resource, (soft, hard)) pairs, never above a hard limit this process already has:
    an unprivileged process may lower its ceilings but not raise them."""
    if limits is None:
        return []
    wanted = []
    if limits.memory_bytes is not None:
        wanted.append((resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes))
    if limits.cpu_seconds is not None:
        wanted.append((resource.RLIMIT_CPU, limits.cpu_seconds,
                       limits.cpu_seconds + CPU_GRACE_S))
    pairs = []
    for which, soft, hard in wanted:
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        pairs.append((which, (max(1, soft), max(1, hard))))
    return pairs
