#!/usr/bin/env python3
"""What the upload benchmarks share (scripts/bench_upload.py, scripts/bench_s3.py): the tus
client that runs in its own process, the servers it is pointed at, and the per-process CPU and
memory figures read from /proc.

The client sends request bodies with sendfile(2) from a file generated once, one thread per
upload, so it is never the bottleneck, and prints one JSON line: the bytes sent, the seconds
taken and the path of every upload it made (so a benchmark can read the stored bytes back).

usage (internal): benchkit.py --client BASE KIND DATA_FILE TOTAL CHUNK CONCURRENCY
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

GiB = 1 << 30
MiB = 1 << 20


# ------------------------------------------------------------------ client (separate process)
def _read_response(sock: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(lines[0].split(" ")[1]), headers


def _request(sock: socket.socket, method: str, path: str, host: str, headers: dict[str, str],
             body: tuple[int, int, int] | None = None) -> tuple[int, dict[str, str]]:
    """body = (fd, offset, count), sent with sendfile."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    if body is not None:
        fd, offset, count = body
        sent = 0
        while sent < count:
            n = os.sendfile(sock.fileno(), fd, offset + sent, count - sent)
            if n == 0:
                raise ConnectionError("sendfile sent nothing")
            sent += n
    return _read_response(sock)


def _one_upload(base: str, kind: str, fd: int, file_offset: int, size: int, chunk: int, name: str) -> str:
    """One upload of ``size`` bytes from ``file_offset``; returns its path on the server."""
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if kind == "tus":
            status, headers = _request(sock, "POST", parts.path, parts.netloc,
                                       {"Tus-Resumable": "1.0.0", "Upload-Length": str(size), "Content-Length": "0"})
            assert status == 201, status
            path = urlsplit(headers["location"]).path
        else:  # the sink: every path is a file
            path = f"/{name}"
        offset = 0
        while offset < size:
            count = min(chunk, size - offset)
            status, headers = _request(sock, "PATCH", path, parts.netloc, {
                "Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset), "Content-Length": str(count)}, (fd, file_offset + offset, count))
            assert status == 204, (status, headers, path, offset)
            offset += count
        return path
    finally:
        sock.close()


def slices(file_size: int, total: int, n: int) -> list[tuple[int, int]]:
    """(offset in the source file, size) of each of ``n`` uploads sharing ``total`` bytes."""
    each = total // n
    return [((i * each) % max(1, file_size - each + 1), each) for i in range(n)]


def run_threads(work: list[tuple]) -> tuple[float, list[Any]]:  # type: ignore[type-arg]
    """Run each ``(fn, *args)`` in its own thread; the seconds they took and what each returned."""
    errors: list[BaseException] = []
    results: list[Any] = [None] * len(work)

    def guarded(index: int, fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            results[index] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
    threads = [threading.Thread(target=guarded, args=(i, *item)) for i, item in enumerate(work)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if errors:
        raise SystemExit(f"{len(errors)} of {len(work)} streams failed: {errors[0]!r}")
    return elapsed, results


def client_main(args: list[str]) -> None:
    base, kind, data_file, total, chunk, concurrency = args
    fd = os.open(data_file, os.O_RDONLY)
    shares = slices(os.fstat(fd).st_size, int(total), int(concurrency))
    elapsed, paths = run_threads([(_one_upload, base, kind, fd, off, size, int(chunk), f"u{i}-{time.monotonic_ns()}")
                                  for i, (off, size) in enumerate(shares)])
    print(json.dumps({"bytes": sum(size for _, size in shares), "seconds": elapsed,
                      "uploads": [[path, off, size] for path, (off, size) in zip(paths, shares)]}), flush=True)


# ------------------------------------------------------------------ server side measurements
def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all threads: kept apart because kernel time
    (page faults, copies into the page cache) varies with the machine, not with our code."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def status_kib(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class Server:
    """A server process started for a benchmark: the URL it printed, and ``clean`` to forget
    what an earlier run stored (the files in ``data``, plus ``cleaner`` for other places)."""

    def __init__(self, name: str, kind: str, argv: list[str], pattern: str, data: list[Path],
                 cwd: Path | None = None, env: dict[str, str] | None = None,
                 cleaner: Callable[[], None] | None = None):
        self.name, self.kind, self.data, self.cleaner = name, kind, data, cleaner
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True)
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        seen: list[str] = []
        while True:
            line = self.proc.stdout.readline()
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                self.url = match.group(1)
                break
            if not line and self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {argv}\n{''.join(seen)[-2000:]}")
        threading.Thread(target=self._drain, daemon=True).start()
        self.pid = self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def clean(self) -> None:
        for folder in self.data:
            for path in folder.glob("*"):
                if path.is_file():
                    path.unlink()
        if self.cleaner is not None:
            self.cleaner()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)


def run_client(base: str, kind: str, data_file: Path, total: int, chunk: int, concurrency: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--client", base, kind, str(data_file), str(total), str(chunk),
                          str(concurrency)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(server: Server, data_file: Path, total: int, chunk: int, concurrency: int,
            also: Sequence[int] = (), check: Callable[[dict], None] | None = None) -> dict:
    """One client run against ``server``: its result plus MB/s, the server's CPU seconds per
    GiB (and the system part of them), its RSS before and its peak RSS during the run (MiB),
    and the CPU seconds per GiB of the processes ``also`` (e.g. the S3 server behind it) over
    the same run. ``check`` sees the result before the server is cleaned (to read the stored
    bytes back)."""
    server.clean()
    subprocess.run(["sync"], check=False)  # no earlier run's dirty pages are written on our time
    user0, sys0 = cpu_times(server.pid)
    also0 = [cpu_seconds(pid) for pid in also]
    rss0 = status_kib(server.pid, "VmRSS")
    reset_peak(server.pid)
    try:
        result = run_client(server.url, server.kind, data_file, total, chunk, concurrency)
    except RuntimeError as exc:
        raise RuntimeError(f"{server.name}: {exc}") from None
    user1, sys1 = cpu_times(server.pid)
    gib = result["bytes"] / GiB
    result.update(mbps=result["bytes"] / result["seconds"] / 1e6,
                  cpu_per_gib=(user1 - user0 + sys1 - sys0) / gib, sys_per_gib=(sys1 - sys0) / gib,
                  rss_before_mib=rss0 / 1024, peak_rss_mib=status_kib(server.pid, "VmHWM") / 1024,
                  also_cpu_per_gib=[(cpu_seconds(pid) - c0) / gib for pid, c0 in zip(also, also0)])
    if check is not None:
        check(result)
    server.clean()
    return result


def rss_growth(server: Server, data_file: Path, size: int) -> float:
    """RSS growth of the server during one PATCH of ``size`` bytes, sampled every 20 ms."""
    run_client(server.url, server.kind, data_file, MiB, MiB, 1)  # warm-up: imports, first buffers
    server.clean()
    before = status_kib(server.pid, "VmRSS")
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], status_kib(server.pid, "VmRSS"))
            time.sleep(0.02)
    reset_peak(server.pid)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    run_client(server.url, server.kind, data_file, size, size, 1)
    stop.set()
    t.join()
    peak[0] = max(peak[0], status_kib(server.pid, "VmHWM"))
    server.clean()
    return (peak[0] - before) / 1024


if __name__ == "__main__":
    if sys.argv[1:2] != ["--client"]:
        raise SystemExit(__doc__)
    client_main(sys.argv[2:])
