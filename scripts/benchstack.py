"""Process launch for the benchmarks in scripts/: ``tusflow up`` and pinned ``tusflow worker``s.

bench_publish.py and bench_finalize.py both start a throwaway ``tusflow up`` on a config of their
own, wait for the URL it prints, and stop it by its process group; the scaling run of
bench_publish.py also starts workers on their own, each pinned with ``taskset`` to one core
(``tusflow up`` with ``[worker] count = 0`` then supervises only Redis and the server). One copy
of that code lives here so the two benchmarks cannot drift apart. Not a test helper: the tests
have theirs in tests/support/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TUSFLOW = str(Path(sys.executable).parent / "tusflow")
LISTENING = re.compile(r"tusflow listening on (http://\S+)")


@dataclass
class Stack:
    """A running ``tusflow up``: its process, the URL it serves and everything it printed."""

    proc: subprocess.Popen
    url: str
    lines: list[str] = field(default_factory=list)
    workers: list[subprocess.Popen] = field(default_factory=list)


def _pinned(argv: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def start_up(config: Path, cpus: str | None = None, timeout: float = 90.0,
             wait_http: bool = False, grace: float | None = None) -> Stack:
    """Start ``tusflow up`` (optionally pinned to ``cpus``) on port 0 and wait until it prints
    its URL (and, with ``wait_http``, until it answers). Its own session, so ``stop`` reaches
    every child it started. ``grace``: its ``--grace`` (0 = busy workers are not waited for)."""
    argv = [TUSFLOW, "up", "--config", str(config), "--port", "0", "--host", "127.0.0.1"]
    if grace is not None:
        argv += ["--grace", str(grace)]
    proc = subprocess.Popen(_pinned(argv, cpus), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    url: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            match = LISTENING.search(line)
            if match and not url:
                url.append(match.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        stop(proc)
        raise SystemExit("tusflow up did not start:\n" + "\n".join(lines[-30:]))
    if wait_http:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.options(url[0], timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    stop(proc)
                    raise SystemExit("server did not answer")
                time.sleep(0.1)
    return Stack(proc, url[0], lines)


def start_worker(config: Path, cpu: str | None, name: str) -> subprocess.Popen:
    """One ``tusflow worker`` outside ``tusflow up``, pinned to ``cpu`` (e.g. "0"): the worker
    and every ffmpeg it starts inherit the affinity, so one worker really has one core."""
    log = open(Path(config).parent / f"{name}.log", "ab")
    try:
        return subprocess.Popen(_pinned([TUSFLOW, "worker", "--config", str(config),
                                         "--name", name], cpu),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()  # the child has its own descriptor


def stop(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """SIGTERM to the process group of ``proc`` (by its PID), SIGKILL if it is still there."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def stop_stack(stack: Stack) -> None:
    """Workers first (they requeue or finish), then ``tusflow up`` (server, Redis)."""
    for worker in stack.workers:
        stop(worker)
    stop(stack.proc)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, printed with every figure (shared machine)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
