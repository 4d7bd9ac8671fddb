#!/usr/bin/env python3
"""Final-PATCH latency: does completing a 1 GiB upload cost what completing a 4 MiB one does?

Completion should be a database commit, a rename into originals/ and an RQ enqueue, never a
copy of the bytes. This starts ``tusflow up`` (private Redis on a unix socket, no workers, so
nothing transcodes the random bytes) on a throwaway data_dir, uploads each size with the
bytes before the last 2 MiB in 64 MiB PATCHes, then times

- a 1 MiB PATCH that does not complete the upload (the baseline), and
- the final 1 MiB PATCH, which completes it (finalize + enqueue),

and prints the medians, the finalize overhead, and the ratio of the final-PATCH times
(1 GiB / 4 MiB; target near 1). It also checks that the original has the inode the upload
had, i.e. it was renamed, not copied. Not a test: figures for people.

    .venv/bin/python scripts/bench_finalize.py [--runs-small 15] [--runs-large 5] [--no-fsync]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchstack import start_up, stop

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = 64 * MiB
TAIL = 1 * MiB


def one_upload(client: httpx.Client, url: str, size: int, block: bytes,
               data_dir: Path) -> tuple[float, float, bool]:
    """Upload ``size`` bytes; returns (non-final 1 MiB PATCH s, final 1 MiB PATCH s, renamed)."""
    created = client.post(url, headers={**TUS, "Upload-Length": str(size)})
    created.raise_for_status()
    location = str(httpx.URL(url).join(created.headers["Location"]))
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]

    def patch(offset: int, length: int) -> int:
        response = client.patch(location, content=block[:length],
                                headers={**TUS, "Upload-Offset": str(offset),
                                         "Content-Type": "application/offset+octet-stream"})
        if response.status_code != 204:
            raise SystemExit(f"PATCH at {offset} answered {response.status_code}: {response.text}")
        return int(response.headers["Upload-Offset"])

    offset, bulk_end = 0, size - 2 * TAIL
    while offset < bulk_end:
        offset = patch(offset, min(CHUNK, bulk_end - offset))
    t0 = time.perf_counter()
    offset = patch(offset, TAIL)
    baseline = time.perf_counter() - t0
    before = (data_dir / "uploads" / upload_id).stat().st_ino
    t0 = time.perf_counter()
    offset = patch(offset, TAIL)
    final = time.perf_counter() - t0
    assert offset == size
    original = data_dir / "originals" / upload_id
    renamed = original.exists() and original.stat().st_ino == before
    original.unlink(missing_ok=True)  # keep the disk free for the next run
    return baseline, final, renamed


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-small", type=int, default=15)
    parser.add_argument("--runs-large", type=int, default=5)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--no-fsync", action="store_true",
                        help="[storage] fsync = false (default: true, as in production)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tf-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
    data_dir = work / "var"
    config = work / "config.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{data_dir}"\nfsync = {"false" if args.no_fsync else "true"}\n'
        '[worker]\ncount = 0\n'
        f'[uploads]\nmax_size = {4 * args.large_mib * MiB}\n')
    stack = start_up(config, timeout=60, wait_http=True)
    proc, url = stack.proc, stack.url
    results: dict[str, list[tuple[float, float, bool]]] = {}
    try:
        block = os.urandom(CHUNK)
        with httpx.Client(timeout=600) as client:
            one_upload(client, url, 4 * MiB, block, data_dir)  # warm-up (imports, first enqueue)
            plan = (("4 MiB", 4 * MiB, args.runs_small),
                    (f"{args.large_mib} MiB", args.large_mib * MiB, args.runs_large))
            # Interleaved, so both sizes see the same background (writeback, other load).
            for turn in range(max(args.runs_small, args.runs_large)):
                for label, size, runs in plan:
                    if turn < runs:
                        results.setdefault(label, []).append(
                            one_upload(client, url, size, block, data_dir))
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    print(f"final-PATCH latency, tusflow up (private Redis, fsync={'off' if args.no_fsync else 'on'}),"
          f" 1 MiB tail PATCHes, medians over runs")
    print(f"{'upload':>10}  {'runs':>4}  {'non-final PATCH':>15}  {'final PATCH':>12}  "
          f"{'finalize cost':>13}  {'final min..max':>22}  renamed")
    medians = {}
    for label, rows in results.items():
        base = statistics.median(r[0] for r in rows)
        final = statistics.median(r[1] for r in rows)
        medians[label] = final
        lo, hi = min(r[1] for r in rows), max(r[1] for r in rows)
        print(f"{label:>10}  {len(rows):>4}  {fmt_ms(base):>15}  {fmt_ms(final):>12}  "
              f"{fmt_ms(final - base):>13}  {fmt_ms(lo).strip():>10}..{fmt_ms(hi).strip():<10}  "
              f"{'yes' if all(r[2] for r in rows) else 'NO (copied?)'}")
    small, large = list(medians.values())
    print(f"ratio final PATCH {list(medians)[1]} / 4 MiB: {large / small:.2f} (target near 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
