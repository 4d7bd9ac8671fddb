#!/usr/bin/env python3
"""Publish latency: seconds from an upload's last byte to playable (P) and to ready (R).

Generates lecture-like clips (text-like slides that change every 20 s, a small noisy webcam
inset, a speech-like tone; H.264 High + AAC, a keyframe every 4 s) of the given lengths plus an
HEVC version of the first, and runs each through ``tusflow up`` (private Redis, N workers,
throwaway data_dir) with the new defaults and with the baseline (fast_path = false,
chunk_seconds = 0, progressive = false), interleaved in one run. For each it prints P, R,
P/D, R/D (D = duration) and the ratio new/baseline, with 1 and 2 workers, then a scaling run:
``tusflow up`` pinned with taskset to one core with one worker against two cores with two
workers, same clip, ratio of R. The machine load (/proc/loadavg) is printed with the figures:
on a shared machine they are only comparable within one run. Not a test: figures for people.

    .venv/bin/python scripts/bench_publish.py [--durations 180 600] [--height 1080]
        [--workers 1 2] [--no-scaling] [--no-hevc]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

TUSFLOW = str(Path(sys.executable).parent / "tusflow")
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


def start_up(config: Path, cpus: str | None) -> tuple[subprocess.Popen, str]:
    argv = [TUSFLOW, "up", "--config", str(config), "--port", "0", "--host", "127.0.0.1"]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"tusflow listening on (http://\S+)", line)
            if match and not url:
                url.append(match.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(90):
        stop(proc)
        raise SystemExit("tusflow up did not start")
    return proc, url[0]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def publish_times(url: str, clip: Path, timeout: float) -> tuple[float, float]:
    """Upload in one PATCH; (P, R) in seconds after the final PATCH returned."""
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
            if item["state"] == "ready":
                return playable or now, now
            if item["state"] == "failed":
                raise SystemExit(f"{clip.name} failed: {item['error']}")
            time.sleep(0.25)
    raise SystemExit(f"{clip.name} not ready within {timeout} s")


def run_one(root: Path, clip: Path, workers: int, transcode: dict[str, str],
            cpus: str | None = None) -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(dir=root))
    proc, url = start_up(write_config(folder, workers, transcode), cpus)
    try:
        return publish_times(url, clip, timeout=7200)
    finally:
        stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--durations", type=int, nargs="+", default=[180, 600])
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--no-hevc", action="store_true")
    parser.add_argument("--chunk-seconds", type=float, nargs="*", default=[],
                        help="also run the new defaults with these chunk_seconds")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    modes: list[tuple[str, dict[str, str]]] = [("new", NEW)]
    modes += [(f"chunk{c:g}", {"chunk_seconds": str(float(c))}) for c in args.chunk_seconds]
    if not args.no_baseline:
        modes.append(("baseline", BASELINE))
    root = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    try:
        print(f"load before generating: {loadavg()}", flush=True)
        clips = [(f"h264-{d}s", d, make_clip(root / f"h264-{d}.mp4", d, args.height))
                 for d in args.durations]
        if not args.no_hevc:
            d = args.durations[0]
            clips.append((f"hevc-{d}s", d, make_clip(root / f"hevc-{d}.mp4", d, args.height,
                                                     hevc=True)))
        print(f"{'clip':>12} {'workers':>7} {'mode':>8} {'P s':>7} {'R s':>7} {'P/D':>6} "
              f"{'R/D':>6} {'load':>22}", flush=True)
        for name, duration, clip in clips:
            for workers in args.workers:
                figures = {}
                for mode, settings in modes:  # interleaved
                    p, r = run_one(root, clip, workers, settings)
                    figures[mode] = (p, r)
                    print(f"{name:>12} {workers:>7} {mode:>8} {p:7.1f} {r:7.1f} "
                          f"{p / duration:6.3f} {r / duration:6.3f} {loadavg():>22}", flush=True)
                if "baseline" in figures:
                    pb, rb = figures["baseline"]
                    for mode, (pn, rn) in figures.items():
                        if mode != "baseline":
                            print(f"{name:>12} {workers:>7} {mode + '/b':>8} {pn / pb:7.3f} "
                                  f"{rn / rb:7.3f}", flush=True)
        if not args.no_scaling:
            name, duration, clip = clips[0]
            chunked = next((c for c in args.chunk_seconds if c > 0), None)
            settings = NEW if chunked is None else {"chunk_seconds": str(float(chunked))}
            label = "new defaults" if chunked is None else f"chunk_seconds={chunked:g}"
            _, r1 = run_one(root, clip, 1, settings, cpus="0")
            _, r2 = run_one(root, clip, 2, settings, cpus="0,1")
            print(f"scaling {name} ({label}): R 1 worker/1 core {r1:.1f} s, 2 workers/2 cores "
                  f"{r2:.1f} s, speed-up {r1 / r2:.2f}x  load {loadavg()}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
