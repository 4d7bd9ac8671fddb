"""``tusflow up --config PATH [--host H] [--port P]``: the whole single-machine stack.

Starts, in this order: a private redis-server on ``<data_dir>/redis.sock`` (only when
``[redis] url`` is empty; no RDB/AOF, its files in ``<data_dir>/redis/``), ``[worker] count``
``tusflow worker`` processes, and ``tusflow serve``. This process only supervises: it restarts
a worker or Redis that dies, and stops everything when the server dies or on Ctrl-C/SIGTERM.

Losing the private Redis loses nothing that matters: the database holds every media's state
and the workers' reconciler enqueues whatever Redis no longer knows.

Each child runs in its own session, so a terminal's Ctrl-C reaches only this process, which
then stops them in a safe order by PID: the server and the workers first (a running job stops
ffmpeg and puts itself back in the queue, see ``transcoder/worker.py``; ``--grace`` seconds
later a worker still busy is told again, which kills its job), Redis last, so the workers'
final writes land. Children also get ``PR_SET_PDEATHSIG``, so they do not outlive a SIGKILLed
supervisor.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from redis.exceptions import RedisError

from models.config import Settings, load_settings
from models.db import migrate
from models.layout import Layout
from models.logs import configure as configure_logs
from models.logs import event
from models.procs import preexec
from models.redis_conn import MAX_SOCKET_PATH, connect, private_socket, uses_private_redis

log = logging.getLogger("tusflow.up")

POLL_S = 0.25
REDIS_START_TIMEOUT_S = 15.0
SERVER_STOP_TIMEOUT_S = 40.0  # uvicorn drains for up to 30 s
KILL_WAIT_S = 5.0
RESTART_BACKOFF_MAX_S = 30.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run Redis (private), transcoding workers and the server together")
    p.add_argument("--config", help="path to config.toml")
    p.add_argument("--host", help="address to bind (default from [server] host)")
    p.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default [server] port)")
    p.add_argument("--grace", type=float, default=30.0,
                   help="seconds busy workers get to requeue their job on stop (default 30)")
    p.set_defaults(func=run)


@dataclass
class Child:
    role: str
    argv: list[str]
    stdout: Any = None
    popen: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.stdout,
                                      start_new_session=True, preexec_fn=preexec(signal.SIGTERM))
        self.started_at = time.monotonic()
        event(log, "up.started", None, role=self.role, pid=self.popen.pid)

    def signal(self, sig: int) -> None:
        """Signal the child's process group: the child and whatever it started in it."""
        if self.popen is None or self.popen.pid is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float) -> bool:
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False


def _tusflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "tus_server.cli", *args]


class Stack:
    def __init__(self, settings: Settings, args: argparse.Namespace):
        self.settings = settings
        self.args = args
        self.stopping = False
        self.exit_code = 0
        self.redis: Child | None = None
        self.workers: list[Child] = []
        self.server: Child | None = None
        self._redis_log: Any = None

    # ------------------------------------------------------------------------------ start
    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (./scripts/setup installs it), "
                               "or set [redis] url")
        sock = private_socket(self.settings)
        if len(str(sock).encode()) > MAX_SOCKET_PATH:
            raise RuntimeError(f"unix socket path too long: {sock}; use a shorter data_dir")
        if sock.exists():
            if self._redis_answers():
                raise RuntimeError(f"a Redis already answers on {sock}: is another `tusflow up` "
                                   "running on this data_dir?")
            sock.unlink()
        workdir = Path(self.settings.data_dir) / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        self._redis_log = open(workdir / "redis.log", "ab")
        self.redis = Child("redis", [
            binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
            "--logfile", "",
        ], stdout=self._redis_log)
        self._start_redis_child()

    def _start_redis_child(self) -> None:
        assert self.redis is not None
        private_socket(self.settings).unlink(missing_ok=True)
        self.redis.start()
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while not self._redis_answers():
            if not self.redis.alive():
                raise RuntimeError("redis-server exited at start; see data_dir/redis/redis.log")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer within "
                                   f"{REDIS_START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        event(log, "up.redis_ready", None, socket=str(private_socket(self.settings)),
              pid=self.redis.pid)

    def _redis_answers(self) -> bool:
        conn = connect(self.settings, timeout=1.0, retries=0)
        try:
            return bool(conn.ping())
        except RedisError:
            return False
        finally:
            conn.close()

    def _config_args(self) -> list[str]:
        path = self.settings.config_path
        return ["--config", str(path)] if path else []

    def start_workers(self) -> None:
        for index in range(max(0, self.settings.worker.count)):
            name = f"w{index + 1}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            child = Child(f"worker{index + 1}", _tusflow("worker", *self._config_args(), "--name", name))
            child.start()
            self.workers.append(child)

    def start_server(self) -> None:
        host = self.args.host or self.settings.server.host
        port = self.settings.server.port if self.args.port is None else self.args.port
        self.server = Child("server", _tusflow("serve", *self._config_args(), "--host", host,
                                               "--port", str(port)))
        self.server.start()

    # ------------------------------------------------------------------------------ supervise
    def supervise(self) -> None:
        while not self.stopping:
            time.sleep(POLL_S)
            if self.stopping:
                break
            if self.server is not None and not self.server.alive():
                event(log, "up.server_exited", None, level=logging.ERROR,
                      code=self.server.popen.returncode if self.server.popen else None)
                self.exit_code = 1
                break
            if self.redis is not None and not self.redis.alive():
                self._restart(self.redis, self._start_redis_child)
            for worker in self.workers:
                if not worker.alive():
                    self._restart(worker, worker.start)

    def _restart(self, child: Child, start: Callable[[], None]) -> None:
        now = time.monotonic()
        if child.next_start == 0.0:
            code = child.popen.returncode if child.popen is not None else None
            # Quick deaths back off, a child that ran for a while restarts at once.
            ran = now - child.started_at
            delay = 0.0 if ran > 60 else min(RESTART_BACKOFF_MAX_S, 2.0 ** min(child.restarts, 5))
            child.next_start = now + delay
            event(log, "up.child_exited", None, level=logging.WARNING, role=child.role,
                  pid=child.pid, code=code, restart_in=round(delay, 1))
            child.signal(signal.SIGKILL)  # anything it left in its group
        if now >= child.next_start:
            child.restarts += 1
            child.next_start = 0.0
            try:
                start()
            except (RuntimeError, OSError) as exc:
                event(log, "up.restart_failed", None, level=logging.ERROR, role=child.role,
                      error=str(exc))
                child.next_start = now + RESTART_BACKOFF_MAX_S

    # ------------------------------------------------------------------------------ stop
    def request_stop(self, signum: int, frame: Any) -> None:
        if self.stopping:
            event(log, "up.stop_again", None, signal=signal.Signals(signum).name)
            self.args.grace = 0.0  # second Ctrl-C: do not wait for busy workers
            return
        self.stopping = True
        event(log, "up.stopping", None, signal=signal.Signals(signum).name)

    def shutdown(self) -> None:
        self.stopping = True
        front = [c for c in [self.server, *self.workers] if c is not None and c.popen is not None]
        for child in front:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, self.args.grace)
        for worker in self.workers:
            if not worker.wait(deadline - time.monotonic()):
                event(log, "up.worker_busy", None, level=logging.WARNING, role=worker.role,
                      pid=worker.pid, action="cold shutdown")
                worker.signal(signal.SIGTERM)  # RQ's second signal: kill the job, exit
        for worker in self.workers:
            if not worker.wait(KILL_WAIT_S):
                worker.signal(signal.SIGKILL)
                worker.wait(KILL_WAIT_S)
        if self.server is not None and self.server.popen is not None:
            if not self.server.wait(SERVER_STOP_TIMEOUT_S):
                self.server.signal(signal.SIGKILL)
                self.server.wait(KILL_WAIT_S)
        if self.redis is not None and self.redis.popen is not None:
            self.redis.signal(signal.SIGTERM)
            if not self.redis.wait(10.0):
                self.redis.signal(signal.SIGKILL)
                self.redis.wait(KILL_WAIT_S)
            private_socket(self.settings).unlink(missing_ok=True)
        for child in [self.server, *self.workers, self.redis]:
            if child is not None:
                child.signal(signal.SIGKILL)  # stragglers left in a child's process group
        if self._redis_log is not None:
            self._redis_log.close()
        event(log, "up.stopped", None, code=self.exit_code)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    configure_logs()
    Layout(settings.data_dir).ensure()
    stack = Stack(settings, args)
    signal.signal(signal.SIGTERM, stack.request_stop)
    signal.signal(signal.SIGINT, stack.request_stop)
    try:
        migrate(settings)  # schema up to date once, before several processes race to create it
        if uses_private_redis(settings):
            stack.start_redis()
        if not stack.stopping:
            stack.start_workers()
        if not stack.stopping:
            stack.start_server()
        stack.supervise()
    except (RuntimeError, OSError) as exc:
        print(f"tusflow up: {exc}", file=sys.stderr)
        stack.exit_code = 1
    finally:
        stack.shutdown()
    return stack.exit_code
