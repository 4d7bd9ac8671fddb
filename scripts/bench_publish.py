#!/usr/bin/env python3
"""Publish latency: seconds from an upload's last byte to playable (P) and to ready (R).

Generates lecture-like clips (text-like slides that change every 20 s, a small noisy webcam
inset, a speech-like tone; H.264 High + AAC, a keyframe every 4 s) of the given lengths plus an
HEVC version of the first, and runs each through ``tusflow up`` (private Redis, N workers,
throwaway data_dir) with the new defaults and with the baseline (fast_path = false,
chunk_seconds = 0, progressive = false), interleaved in one run. For each it prints P, R,
P/D, R/D (D = duration) and the ratio new/baseline, with 1 and 2 workers, then a scaling run:
one worker pinned with taskset to core 0 against two workers pinned to core 0 and core 1 (one
core each; the workers are started on their own, ``tusflow up`` runs only Redis and the
server), same clip, ratio of R. The machine load (/proc/loadavg) is printed with the figures:
on a shared machine they are only comparable within one run. Not a test: figures for people.

    .venv/bin/python scripts/bench_publish.py [--durations 180 600] [--height 1080]
        [--workers 1 2] [--no-scaling] [--no-hevc] [--no-h264] [--scaling-duration S]
        [--no-baseline] [--chunk-seconds C ...] [--playable-only] [--clips DIR] [--logs DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchstack import loadavg, start_up, start_worker, stop_stack
TUS = {"Tus-Resumable": "1.0.0"}
BASELINE = {"fast_path": "false", "progressive": "false", "chunk_seconds": "0.0"}
NEW: dict[str, str] = {}


def make_clip(path: Path, seconds: int, height: int, hevc: bool = False) -> Path:
    width = height * 16 // 9
    slides = (f"color=c=white:s={width}x{height}:r=30:d={seconds},"
              # rows of dark bars stand in for text lines; they move every 20 s (a new slide)
              + ",".join(f"drawbox=x={width // 12}:y={height // 8 + i * height // 12}:"
                         f"w='{width // 2}+{width // 4}*mod(floor(t/20)+{i},3)/2':"
                         f"h={height // 40}:c=0x202020:t=fill" for i in range(8)))
    cam = f"testsrc2=s={width // 5}x{height // 5}:r=30:d={seconds},noise=alls=30:allf=t"
    video = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
             "log-level=error:keyint=120"] if hevc else \
        ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-g", "120",
         "-keyint_min", "120", "-sc_threshold", "0", "-b:v", "2500k", "-maxrate", "4000k",
         "-bufsize", "8000k"]
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", slides,
            "-f", "lavfi", "-i", cam, "-f", "lavfi", "-i",
            f"sine=f=180:sample_rate=48000:d={seconds},volume='0.5+0.4*sin(2*PI*3*t)':eval=frame",
            "-filter_complex", f"[0:v][1:v]overlay=W-w-{width // 40}:H-h-{height // 20}[v]",
            "-map", "[v]", "-map", "2:a", *video, "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2", str(path)]
    subprocess.run(argv, check=True, timeout=seconds * 20 + 600)
    return path


def write_config(folder: Path, workers: int, transcode: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[storage]", f'data_dir = "{folder / "var"}"', "", "[worker]",
             f"count = {workers}", "", "[transcode]"] + [f"{k} = {v}" for k, v in transcode.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def publish_times(url: str, clip: Path, timeout: float,
                  playable_only: bool = False) -> tuple[float, float]:
    """Upload in one PATCH; (P, R) in seconds after the final PATCH returned. With
    ``playable_only`` it returns at playable, R = nan (for runs that measure P alone)."""
    data = clip.read_bytes()
    with httpx.Client(timeout=600) as client:
        created = client.post(url, headers={**TUS, "Upload-Length": str(len(data)),
                                            "Upload-Metadata": "filename bGVjdHVyZS5tcDQ="})
        created.raise_for_status()
        location = str(httpx.URL(url).join(created.headers["Location"]))
        media_id = location.rstrip("/").rsplit("/", 1)[-1]
        done = client.patch(location, content=data, headers={
            **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        done.raise_for_status()
        last_byte = time.monotonic()
        api = str(httpx.URL(url).join(f"/api/media/{media_id}"))
        playable = None
        while time.monotonic() - last_byte < timeout:
            item = client.get(api).json()
            now = time.monotonic() - last_byte
            if item["state"] in ("playable", "ready") and playable is None:
                playable = now
                if playable_only:
                    return playable, math.nan
            if item["state"] == "ready":
                return playable or now, now
            if item["state"] == "failed":
                raise SystemExit(f"{clip.name} failed: {item['error']}")
            # Playable comes within a second or two: poll it at 20 ms (0.25 s steps hid
            # changes of a few hundred ms), then ready at an easy pace.
            time.sleep(0.02 if playable is None else 0.25)
    raise SystemExit(f"{clip.name} not ready within {timeout} s")


def run_one(root: Path, clip: Path, workers: int, transcode: dict[str, str],
            pin: bool = False, playable_only: bool = False,
            log: Path | None = None) -> tuple[float, float]:
    """One upload on a fresh stack. ``pin``: the workers are started here, outside ``tusflow
    up``, worker i pinned to core i alone (``taskset -c i``; its ffmpeg inherits that), and
    the server and Redis are not pinned; else ``tusflow up`` starts ``workers`` unpinned."""
    # Dirty pages of the clips just generated (or of the last run) must not be written back
    # on this run's time: ext4 commits them with the next journal transaction, and the
    # worker's first mkdir or rename waited for that.
    os.sync()
    folder = Path(tempfile.mkdtemp(dir=root))
    config = write_config(folder, 0 if pin else workers, transcode)
    stack = start_up(config, grace=0.0 if playable_only else None)
    try:
        if pin:
            stack.workers = [start_worker(config, str(i), f"pinned{i}") for i in range(workers)]
        return publish_times(stack.url, clip, timeout=7200, playable_only=playable_only)
    finally:
        stop_stack(stack)
        if log is not None:  # what `tusflow up` and its workers logged, for a timeline
            logs = [stack.lines] + [[(folder / f"pinned{i}.log").read_text(errors="replace")]
                                    for i in range(len(stack.workers))]
            log.write_text("\n".join(line for lines in logs for line in lines) + "\n")
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--durations", type=int, nargs="+", default=[180, 600])
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--no-hevc", action="store_true")
    parser.add_argument("--no-h264", action="store_true",
                        help="skip the H.264 rows of the table (the scaling run still uses "
                             "the first H.264 clip)")
    parser.add_argument("--scaling-duration", type=int,
                        help="clip length of the scaling run (default: the first duration)")
    parser.add_argument("--chunk-seconds", type=float, nargs="*", default=[],
                        help="also run the new defaults with these chunk_seconds")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--clips", type=Path,
                        help="keep the generated clips in this folder and reuse those found "
                             "there (<h264|hevc>-<seconds>.mp4 at --height)")
    parser.add_argument("--logs", type=Path,
                        help="write each run's stack log to <clip>-<workers>w-<mode>.log here")
    parser.add_argument("--playable-only", action="store_true",
                        help="stop each run at playable (R not measured; not the scaling run)")
    args = parser.parse_args()
    modes: list[tuple[str, dict[str, str]]] = [("new", NEW)]
    modes += [(f"chunk{c:g}", {"chunk_seconds": str(float(c))}) for c in args.chunk_seconds]
    if not args.no_baseline:
        modes.append(("baseline", BASELINE))
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    made: dict[tuple[int, bool], Path] = {}

    def clip_of(seconds: int, hevc: bool = False) -> Path:
        if (seconds, hevc) not in made:
            kind = "hevc" if hevc else "h264"
            path = (args.clips or root) / f"{kind}-{seconds}.mp4"
            made[seconds, hevc] = path if path.is_file() else make_clip(path, seconds,
                                                                        args.height, hevc=hevc)
        return made[seconds, hevc]

    try:
        print(f"load before generating: {loadavg()}", flush=True)
        clips = [] if args.no_h264 else [(f"h264-{d}s", d, clip_of(d)) for d in args.durations]
        if not args.no_hevc:
            d = args.durations[0]
            clips.append((f"hevc-{d}s", d, clip_of(d, hevc=True)))
        scaling_d = args.scaling_duration or args.durations[0]
        scaling_clip = None if args.no_scaling else clip_of(scaling_d)
        print(f"{'clip':>12} {'workers':>7} {'mode':>8} {'P s':>7} {'R s':>7} {'P/D':>6} "
              f"{'R/D':>6}  load before -> after", flush=True)
        for name, duration, clip in clips:
            for workers in args.workers:
                figures = {}
                for mode, settings in modes:  # interleaved
                    before = loadavg()
                    log = args.logs / f"{name}-{workers}w-{mode}.log" if args.logs else None
                    p, r = run_one(root, clip, workers, settings,
                                   playable_only=args.playable_only, log=log)
                    figures[mode] = (p, r)
                    print(f"{name:>12} {workers:>7} {mode:>8} {p:7.2f} {r:7.1f} "
                          f"{p / duration:6.3f} {r / duration:6.3f}  {before} -> {loadavg()}",
                          flush=True)
                if "baseline" in figures:
                    pb, rb = figures["baseline"]
                    for mode, (pn, rn) in figures.items():
                        if mode != "baseline":
                            print(f"{name:>12} {workers:>7} {mode + '/b':>8} {pn / pb:7.3f} "
                                  f"{rn / rb:7.3f}", flush=True)
        if scaling_clip is not None:
            chunked = next((c for c in args.chunk_seconds if c > 0), None)
            settings = NEW if chunked is None else {"chunk_seconds": str(float(chunked))}
            label = "new defaults" if chunked is None else f"chunk_seconds={chunked:g}"
            # Each worker on a core of its own (taskset -c 0, taskset -c 1), started outside
            # `tusflow up`; the server and Redis are not pinned (they idle while ffmpeg runs).
            before1 = loadavg()
            logs = [args.logs / f"scaling-{w}w.log" if args.logs else None for w in (1, 2)]
            _, r1 = run_one(root, scaling_clip, 1, settings, pin=True, log=logs[0])
            before2 = loadavg()
            _, r2 = run_one(root, scaling_clip, 2, settings, pin=True, log=logs[1])
            print(f"scaling h264-{scaling_d}s ({label}): R 1 worker on core 0 {r1:.1f} s "
                  f"(load {before1} -> {before2}), 2 workers on cores 0 and 1 {r2:.1f} s "
                  f"(load {before2} -> {loadavg()}), speed-up {r1 / r2:.2f}x", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
