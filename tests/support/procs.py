"""Start real tusflow, redis-server and worker processes for tests, and stop them by PID."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TUSFLOW = str(VENV_BIN / "tusflow")
EXIT_GRACE = 2.0  # seconds a reader may still take to drain an exited process's pipe


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _default_sigint() -> None:
    """A test runner started in the background by a non-interactive shell ignores SIGINT, and
    an ignored signal stays ignored in children: Python would then never raise
    KeyboardInterrupt, and a test of Ctrl-C would pass or fail by how pytest was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Proc:
    """A child process whose output is collected in the background; stop() kills it by PID."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                 name: str = "proc"):
        self.name = name
        self.argv = argv
        self.lines: list[str] = []
        self._cond = threading.Condition()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=full_env, cwd=cwd, start_new_session=True,
                                      preexec_fn=_default_sigint)
        self.pid = self.popen.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        exited_at: float | None = None
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                # An exited process may still have lines in the pipe: give up only once the
                # reader has seen end-of-file (or, when a child of it holds the pipe open, after
                # a short grace), or a client that printed its result and exited at once would
                # be reported as silent.
                if self.popen.poll() is not None and exited_at is None:
                    exited_at = time.monotonic()
                drained = exited_at is not None and (not self._reader.is_alive()
                                                     or time.monotonic() - exited_at > EXIT_GRACE)
                if left <= 0 or (drained and seen == len(self.lines)):
                    break
                self._cond.wait(min(left, 0.2))
        raise TimeoutError(f"{self.name}: {pattern!r} not seen; output:\n{self.output[-4000:]}")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process group: the process and whatever it started."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        else:
            try:  # the leader is gone; make sure nothing it started lingers
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._reader.join(2)
        return self.popen.returncode


class TusflowServer:
    """``tusflow serve --port 0`` in a child process; ``url`` is its base endpoint."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, workers: int = 1):
        argv = [TUSFLOW, "serve", "--config", str(config), "--port", "0", "--host", "127.0.0.1"]
        if workers != 1:
            argv += ["--workers", str(workers)]
        self.config = config
        self.proc = Proc(argv, env=env, name="tusflow-serve")
        match = self.proc.wait_for(r"tusflow listening on (http://\S+)", timeout=60)
        self.url = match.group(1)  # ends with the base path, e.g. http://127.0.0.1:PORT/files/
        parts = urlsplit(self.url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        import httpx
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.options(self.url, timeout=2)
                return
            except httpx.TransportError:
                if not self.proc.alive():
                    break
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer:\n{self.proc.output[-3000:]}")

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        self.proc.kill(signal.SIGKILL)
        self.proc.popen.wait(10)


class RedisServer:
    """A private redis-server on a unix socket, no persistence, stopped by PID."""

    def __init__(self, directory: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (./scripts/setup installs it)")
        directory.mkdir(parents=True, exist_ok=True)
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.directory = directory
        self._binary = binary
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        self.proc = Proc([self._binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                          "--save", "", "--appendonly", "no", "--dir", str(self.directory)], name="redis")
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline or not self.proc.alive():
                raise RuntimeError(f"redis did not start:\n{self.proc.output}")
            time.sleep(0.02)
        import redis
        client = redis.Redis.from_url(self.url)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        self.socket.unlink(missing_ok=True)


def no_process_in(directory: Path) -> bool:
    """True when no process has its working directory inside ``directory`` (orphan ffmpeg)."""
    target = str(directory)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(target):
            return False
    return True


@dataclass
class Shared:
    """One ``tusflow serve`` shared by a test module, with the data_dir it stores into."""

    server: TusflowServer
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url
