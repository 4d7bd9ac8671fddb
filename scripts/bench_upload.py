#!/usr/bin/env python3
"""Upload throughput of tusflow against @tus/server (with @tus/file-store, from package.json's
devDependencies) and against the disk itself, all on loopback, interleaved in the same run.

Servers, each started once by this script on a free loopback port:

- ``tusflow serve`` with ``[storage] fsync = true`` (the default) and a second one with false;
- @tus/server + @tus/file-store under Node (``npm install`` first). It never fsyncs, so its
  durability is that of tusflow with fsync = false: the fair comparison is the fsync-off one;
- optionally (``--sink``) the bare ASGI sink of scripts/sink_app.py under uvicorn.

Besides the servers, a trivial writer measures the disk's own durable rate for the same shape
of work: the same bytes copied in the kernel from the source file, in the same chunks and the
same number of parallel streams, writeback started per MiB and each chunk fdatasynced, so the
durable tusflow figure can be read against what the disk allows on this machine at this moment.

Configurations: 1 MiB, 8 MiB and whole-file PATCHes at 1, 4 and 16 concurrent uploads sharing
``--gib`` GiB. Each is run ``--repeat`` times, the servers taking turns, and the median counts.
For each it prints MB/s, the ratios against @tus/server, the server's CPU seconds per GiB
(utime+stime of the server process from /proc/<pid>/stat, all threads), the system part of it
for @tus/server and fsync on (kernel time: page cache copies and faults, which depend on the
machine more than on the code), and the load average. Before the first configuration every
server and the disk writer run one untimed 8 MiB x4 pass: on a freshly booted VM the first
gigabytes written land in guest pages the host has never backed, and that first touch cost
(measured here: a 512 MiB dd with fdatasync took 1.63 s of system time, then 0.88, then
0.17) would otherwise be charged to whichever server happened to run first.
Then the RSS growth of each server, freshly started, during one 2 GiB PATCH. ``--baseline
DIR`` adds tusflow from another checkout (fsync off and on) as extra columns, to measure a
change before and after.

The client (scripts/benchkit.py) runs in its own process and sends request bodies with
sendfile(2) from a file generated once, one thread per upload, so it is never the bottleneck.
This is a benchmark, not a test: figures depend on the machine and on what else runs on it
(see the load column).

usage: .venv/bin/python scripts/bench_upload.py [--gib 1] [--repeat N] [--sink] [--baseline DIR] [--dir D]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchkit import GiB, MiB, Server, client_main, load, measure, rss_growth, run_threads, slices

REPO = Path(__file__).resolve().parents[1]
TUSFLOW = str(Path(sys.executable).parent / "tusflow")

# @tus/server with @tus/file-store, as its README sets it up; port 0, loopback only.
NODE_SERVER = """
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";
const tus = new Server({ path: "/files", datastore: new FileStore({ directory: process.argv[1] }) });
const http = tus.listen({ host: "127.0.0.1", port: 0 }, () => {
  console.log(`tus-node listening on http://127.0.0.1:${http.address().port}/files`);
});
process.on("SIGTERM", () => http.close(() => process.exit(0)));
"""


# ------------------------------------------------------------------ the disk's own durable rate
def _sync_file_range():  # type: ignore[no-untyped-def]
    fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    fn.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    return fn


def _durable_stream(src: int, target: Path, file_offset: int, size: int, chunk: int) -> None:
    sfr = _sync_file_range()
    dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        done = 0
        while done < size:
            end = min(size, done + chunk)
            while done < end:
                n = os.copy_file_range(src, dst, min(MiB, end - done), file_offset + done, done)
                sfr(dst, done, n, 2)  # SYNC_FILE_RANGE_WRITE
                done += n
            os.fdatasync(dst)
    finally:
        os.close(dst)


def disk_rate(data_file: Path, folder: Path, total: int, chunk: int, concurrency: int) -> dict:
    """The same bytes, chunks and streams as an upload configuration, written durably by the
    simplest possible writer (in the kernel, no network, no protocol)."""
    src = os.open(data_file, os.O_RDONLY)
    try:
        shares = slices(os.fstat(src).st_size, total, concurrency)
        elapsed, _ = run_threads([(_durable_stream, src, folder / f"d{i}", off, size, chunk)
                                  for i, (off, size) in enumerate(shares)])
    finally:
        os.close(src)
    nbytes = sum(size for _, size in shares)
    return {"bytes": nbytes, "seconds": elapsed, "mbps": nbytes / elapsed / 1e6, "cpu_per_gib": float("nan"),
            "sys_per_gib": float("nan")}


def tusflow_server(work: Path, fsync: bool, code: Path | None = None) -> Server:
    """``code``: run the tusflow packages found there (another checkout) instead of this one's."""
    label = f"{'base ' if code else ''}fsync {'on' if fsync else 'off'}"
    folder = work / f"tusflow-{label.replace(' ', '-')}"
    folder.mkdir(parents=True)
    config = folder / "config.toml"
    config.write_text(f'[storage]\ndata_dir = "{folder / "var"}"\nfsync = {str(fsync).lower()}\n'
                      f'[uploads]\nmax_size = {4 * GiB}\nexpiration = 3600\n[redis]\nurl = "redis://127.0.0.1:1"\n')
    return Server(f"tusflow {label}", "tus", [TUSFLOW, "serve", "--config", str(config), "--port", "0"],
                  r"tusflow listening on (http://\S+)", [folder / "var" / "uploads", folder / "var" / "originals"],
                  env={"PYTHONPATH": str(code)} if code else None)


def node_server(work: Path) -> Server:
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "@tus" / "server").is_dir():
        raise SystemExit("@tus/server is not installed: run `npm install` in the repository first")
    folder = work / "tus-node"
    folder.mkdir(parents=True)
    return Server("@tus/server", "tus", [node, "--input-type=module", "-e", NODE_SERVER, str(folder)],
                  r"tus-node listening on (http://\S+)", [folder], cwd=REPO)


def sink_server(work: Path, fsync: bool) -> Server:
    folder = work / f"sink-{fsync}"
    return Server(f"sink fsync {'on' if fsync else 'off'}", "sink",
                  [sys.executable, str(REPO / "scripts" / "sink_app.py"), "--dir", str(folder), "--port", "0"]
                  + (["--fsync"] if fsync else []), r"sink listening on (http://\S+)", [folder])


def configs(total: int) -> list[tuple[str, int, int]]:
    """(name, chunk, concurrency); a chunk of ``total`` means each upload is one PATCH."""
    out = []
    for chunk_name, chunk in (("1 MiB", MiB), ("8 MiB", 8 * MiB), ("whole", total)):
        for n in (1, 4, 16):
            out.append((f"{chunk_name} x{n}", chunk, n))
    return out


def bench(work: Path, data_file: Path, total: int, repeat: int, with_sink: bool,
          baseline: Path | None) -> None:
    servers = [node_server(work), tusflow_server(work, False), tusflow_server(work, True)]
    extra = []
    if with_sink:
        extra += [sink_server(work, False), sink_server(work, True)]
    if baseline is not None:
        extra += [tusflow_server(work, False, baseline), tusflow_server(work, True, baseline)]
    servers += extra
    disk_dir = work / "disk"
    disk_dir.mkdir()
    node, off, on = servers[:3]
    try:
        print(f"{total / GiB:g} GiB per configuration, median of {repeat}, load before: "
              f"{Path('/proc/loadavg').read_text().strip()}\n", flush=True)
        head = (f"{'config':<12}{'tus-node':>9}{'off':>7}{'on':>7}{'disk':>7}{'off/node':>9}{'on/node':>8}"
                f"{'on/off':>7}{'on/disk':>8}   {'CPU s/GiB node':>14}{'off':>6}{'on':>6}{'sys node':>9}{'on':>6}{'load':>6}")
        for server in extra:
            head += f"{server.name.removeprefix('tusflow '):>16}"
        for server in servers:  # untimed: see the module docstring
            measure(server, data_file, total, 8 * MiB, 4)
        disk_rate(data_file, disk_dir, total, 8 * MiB, 4)
        for path in disk_dir.glob("*"):
            path.unlink()
        print("MB/s; off/on = tusflow with [storage] fsync = false/true; disk = durable writer\n" + head, flush=True)
        for name, chunk, n in configs(total):
            runs: dict[str, list[dict]] = {s.name: [] for s in servers}
            runs["disk"] = []
            loads = [load()]
            for _ in range(repeat):
                for server in servers:
                    runs[server.name].append(measure(server, data_file, total, chunk, n))
                for path in disk_dir.glob("*"):
                    path.unlink()
                subprocess.run(["sync"], check=False)
                runs["disk"].append(disk_rate(data_file, disk_dir, total, chunk, n))
                for path in disk_dir.glob("*"):
                    path.unlink()
                loads.append(load())
            med = {key: statistics.median(r["mbps"] for r in rs) for key, rs in runs.items()}
            cpu = {key: statistics.median(r["cpu_per_gib"] for r in rs) for key, rs in runs.items()}
            sys_cpu = {key: statistics.median(r["sys_per_gib"] for r in rs) for key, rs in runs.items()}
            row = (f"{name:<12}{med[node.name]:>9.0f}{med[off.name]:>7.0f}{med[on.name]:>7.0f}{med['disk']:>7.0f}"
                   f"{med[off.name] / med[node.name]:>9.2f}{med[on.name] / med[node.name]:>8.2f}"
                   f"{med[on.name] / med[off.name]:>7.2f}{med[on.name] / med['disk']:>8.2f}   "
                   f"{cpu[node.name]:>14.2f}{cpu[off.name]:>6.2f}{cpu[on.name]:>6.2f}{sys_cpu[node.name]:>9.2f}{sys_cpu[on.name]:>6.2f}{max(loads):>6.1f}")
            for server in extra:
                row += f"{med[server.name]:>16.0f}"
            print(row, flush=True)
        # Fresh servers: after the table each one's heap has already grown to what the table
        # needed, and a PATCH that reuses it shows no growth whatever it buffers.
        print("\nRSS growth during one 2 GiB PATCH, each server freshly started (after a 1 MiB "
              "warm-up upload):", flush=True)
        fresh = work / "fresh"
        fresh.mkdir()
        for make in (node_server, lambda w: tusflow_server(w, False), lambda w: tusflow_server(w, True)):
            server = make(fresh)
            try:
                print(f"  {server.name:<16}{rss_growth(server, data_file, 2 * GiB):>7.1f} MiB", flush=True)
            finally:
                server.stop()
        print(f"load after: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=0.25,
                        help="GiB uploaded per configuration and run (default 0.25; 1 for the full run)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration; the median counts")
    parser.add_argument("--sink", action="store_true", help="also run the bare ASGI sink (scripts/sink_app.py)")
    parser.add_argument("--baseline", type=Path, help="also run the tusflow packages of another checkout "
                        "(e.g. `git archive <rev> models tus_server transcoder | tar -x -C DIR`), fsync off and on")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one under /tmp)")
    args = parser.parse_args()
    total = int(args.gib * GiB) // (16 * MiB) * (16 * MiB)  # whole MiB for every upload at x16
    if total <= 0:
        raise SystemExit("--gib is too small")
    work = Path(tempfile.mkdtemp(prefix="tusflow-bench-", dir=args.dir))
    data_file = work / "source.bin"
    with open(data_file, "wb") as f:
        block = os.urandom(64 * MiB)
        for i in range(max(32, -(-total // (64 * MiB)))):  # >= 2 GiB, every 64 MiB block different
            f.write(bytes([i % 256]) + block[1:])
    try:
        bench(work, data_file, total, args.repeat, args.sink, args.baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
