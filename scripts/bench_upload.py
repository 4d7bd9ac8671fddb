#!/usr/bin/env python3
"""Upload throughput of tusflow against a bare ASGI sink (scripts/sink_app.py), both under the
same uvicorn settings (httptools, uvloop, one worker), on loopback, in the same run.

For each configuration it prints MB/s of both servers and the ratio tusflow/sink, the server's
CPU seconds per GiB (utime+stime from /proc/<pid>/stat) and its peak RSS (VmHWM); then the RSS
growth of tusflow during one 2 GiB PATCH. Configurations: one PATCH of 1 GiB; 1 GiB in 8 MiB
PATCHes; 1, 4 and 16 concurrent uploads sharing 1 GiB. Runs once with [storage] fsync = false
and once with true (the sink then fdatasyncs each request as tusflow does).

The client runs in its own process and sends request bodies with sendfile(2) from a file
generated once, one thread per upload, so it is never the bottleneck.

usage: .venv/bin/python scripts/bench_upload.py [--fsync both|true|false] [--repeat N] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
GiB = 1 << 30
MiB = 1 << 20
TUSFLOW = str(Path(sys.executable).parent / "tusflow")


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


def _one_upload(base: str, kind: str, fd: int, file_offset: int, size: int, chunk: int, name: str) -> None:
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if kind == "tusflow":
            status, headers = _request(sock, "POST", parts.path, parts.netloc,
                                       {"Tus-Resumable": "1.0.0", "Upload-Length": str(size), "Content-Length": "0"})
            assert status == 201, status
            path = urlsplit(headers["location"]).path
        else:
            path = f"/{name}"
        offset = 0
        while offset < size:
            count = min(chunk, size - offset)
            status, headers = _request(sock, "PATCH", path, parts.netloc, {
                "Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset), "Content-Length": str(count)}, (fd, file_offset + offset, count))
            assert status == 204, (status, headers)
            offset += count
    finally:
        sock.close()


def client_main(args: list[str]) -> None:
    base, kind, data_file, total, chunk, concurrency = args
    total_i, chunk_i, n = int(total), int(chunk), int(concurrency)
    fd = os.open(data_file, os.O_RDONLY)
    file_size = os.fstat(fd).st_size
    each = total_i // n
    threads = [threading.Thread(target=_one_upload, args=(base, kind, fd, (i * each) % max(1, file_size - each + 1),
                                                          each, chunk_i, f"u{i}-{time.monotonic_ns()}"))
               for i in range(n)]
    errors: list[BaseException] = []
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    print(json.dumps({"bytes": each * n, "seconds": elapsed, "errors": len(errors)}), flush=True)


# ------------------------------------------------------------------ server side measurements
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


class Server:
    def __init__(self, argv: list[str], pattern: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            match = re.search(pattern, line)
            if match:
                self.url = match.group(1)
                break
            if not line and self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {argv}")
        threading.Thread(target=self._drain, daemon=True).start()
        self.pid = self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

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


def measure(server: Server, kind: str, data_file: Path, total: int, chunk: int, concurrency: int,
            clean: list[Path]) -> dict:
    for folder in clean:
        for path in folder.glob("*"):
            if path.is_file():
                path.unlink()
    subprocess.run(["sync"], check=False)
    reset_peak(server.pid)
    cpu0 = cpu_seconds(server.pid)
    result = run_client(server.url, kind, data_file, total, chunk, concurrency)
    cpu = cpu_seconds(server.pid) - cpu0
    result.update(mbps=result["bytes"] / result["seconds"] / 1e6, cpu_per_gib=cpu / (result["bytes"] / GiB),
                  peak_rss_mib=status_kib(server.pid, "VmHWM") / 1024)
    return result


def rss_growth(server: Server, data_file: Path, size: int) -> float:
    """RSS growth of the server during one PATCH of ``size`` bytes, sampled every 20 ms."""
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
    run_client(server.url, "tusflow", data_file, size, size, 1)
    stop.set()
    t.join()
    peak[0] = max(peak[0], status_kib(server.pid, "VmHWM"))
    return (peak[0] - before) / 1024


CONFIGS = [  # name, total, chunk, concurrency
    ("1 PATCH of 1 GiB", GiB, GiB, 1),
    ("1 GiB in 8 MiB PATCHes", GiB, 8 * MiB, 1),
    ("1 upload", GiB, GiB, 1),
    ("4 concurrent uploads", GiB, GiB, 4),
    ("16 concurrent uploads", GiB, GiB, 16),
]


def bench(fsync: bool, work: Path, data_file: Path, repeat: int) -> None:
    tus_dir, sink_dir = work / f"tus-{fsync}", work / f"sink-{fsync}"
    shutil.rmtree(tus_dir, ignore_errors=True)
    shutil.rmtree(sink_dir, ignore_errors=True)
    tus_dir.mkdir(parents=True)
    config = tus_dir / "config.toml"
    config.write_text(f'[storage]\ndata_dir = "{tus_dir / "var"}"\nfsync = {"true" if fsync else "false"}\n'
                      f'[uploads]\nmax_size = {4 * GiB}\nexpiration = 3600\n[redis]\nurl = "redis://127.0.0.1:1"\n')
    tus = Server([TUSFLOW, "serve", "--config", str(config), "--port", "0"], r"tusflow listening on (http://\S+)")
    sink = Server([sys.executable, str(REPO / "scripts" / "sink_app.py"), "--dir", str(sink_dir), "--port", "0"]
                  + (["--fsync"] if fsync else []), r"sink listening on (http://\S+)")
    clean_tus = [tus_dir / "var" / "uploads", tus_dir / "var" / "originals"]
    try:
        print(f"\n[storage] fsync = {str(fsync).lower()}")
        # first, on a fresh server after one small warm-up upload: nothing earlier has grown it
        run_client(tus.url, "tusflow", data_file, MiB, MiB, 1)
        growth = rss_growth(tus, data_file, 2 * GiB)
        print(f"tusflow RSS growth during one 2 GiB PATCH (fresh server): {growth:.1f} MiB", flush=True)
        print(f"{'configuration':<26}{'sink MB/s':>10}{'tusflow MB/s':>14}{'ratio':>7}"
              f"{'CPU s/GiB sink':>16}{'CPU s/GiB tus':>15}{'peak RSS MiB sink':>19}{'tus':>6}")
        for name, total, chunk, concurrency in CONFIGS:
            best: dict[str, dict] = {}
            for _ in range(repeat):
                for kind, server, clean in (("sink", sink, [sink_dir]), ("tusflow", tus, clean_tus)):
                    r = measure(server, kind, data_file, total, chunk, concurrency, clean)
                    if kind not in best or r["mbps"] > best[kind]["mbps"]:
                        best[kind] = r
            s, t = best["sink"], best["tusflow"]
            print(f"{name:<26}{s['mbps']:>10.0f}{t['mbps']:>14.0f}{t['mbps'] / s['mbps']:>7.2f}"
                  f"{s['cpu_per_gib']:>16.2f}{t['cpu_per_gib']:>15.2f}{s['peak_rss_mib']:>19.0f}"
                  f"{t['peak_rss_mib']:>6.0f}", flush=True)
    finally:
        tus.stop()
        sink.stop()
        shutil.rmtree(tus_dir, ignore_errors=True)
        shutil.rmtree(sink_dir, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsync", choices=["both", "true", "false"], default="both")
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration; the best counts")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one under /tmp)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="tusflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data_file = work / "source.bin"
    if not data_file.exists() or data_file.stat().st_size < 2 * GiB:
        with open(data_file, "wb") as f:
            block = os.urandom(64 * MiB)
            for i in range(32):  # 2 GiB, every 64 MiB block different
                f.write(bytes([i]) + block[1:])
    try:
        for fsync in ([False, True] if args.fsync == "both" else [args.fsync == "true"]):
            bench(fsync, work, data_file, args.repeat)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
