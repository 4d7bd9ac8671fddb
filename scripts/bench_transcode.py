#!/usr/bin/env python3
"""Compare the one-process ladder (decode once, split to every rung) with one ffmpeg per
rendition, on the same generated 1080p clip in the same run.

CPU time is the children's rusage (user + system) around each run, so it counts every
ffmpeg thread. Exits 1 when the one-process ladder saves less than 20 % CPU.
Usage: .venv/bin/python scripts/bench_transcode.py [--duration 20] [--source camera|cheap]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import TranscodeConfig  # noqa: E402
from transcoder.ffmpeg import ladder_command, rendition_commands  # noqa: E402
from transcoder.ladder import plan_ladder  # noqa: E402
from transcoder.probe import probe  # noqa: E402


@dataclass(frozen=True)
class Measure:
    wall: float
    cpu: float


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# How the source clip is encoded. "camera" looks like a phone upload (High profile, CABAC,
# B-frames, ~12 Mbit/s), whose decoding is what the shared decode saves; "cheap" (ultrafast
# CAVLC, no B-frames) is the easiest possible file to decode, a lower bound on the saving.
SOURCES = MappingProxyType({
    "camera": ["-preset", "veryfast", "-profile:v", "high", "-b:v", "12M", "-maxrate", "15M",
               "-bufsize", "24M"],
    "cheap": ["-preset", "ultrafast", "-crf", "18"],
})


def generate(path: Path, duration: float, kind: str, timeout: float) -> None:
    """A 1080p30 clip with motion and a tone."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=s=1920x1080:r=30:d={duration}",
         "-f", "lavfi", "-i", f"sine=f=440:sample_rate=48000:d={duration}",
         "-c:v", "libx264", *SOURCES[kind], "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(path)],
        check=True, timeout=timeout)


def run_all(commands: list[list[str]], cwd: Path, timeout: float) -> Measure:
    cpu0, wall0 = children_cpu(), time.monotonic()
    for argv in commands:
        proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"ffmpeg failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return Measure(time.monotonic() - wall0, children_cpu() - cpu0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="clip length, seconds")
    parser.add_argument("--preset", default=TranscodeConfig().preset, help="x264 preset")
    parser.add_argument("--source", choices=sorted(SOURCES), default="camera",
                        help="how the generated clip is encoded (see SOURCES)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per ffmpeg, seconds")
    args = parser.parse_args()

    cfg = TranscodeConfig(preset=args.preset)
    with tempfile.TemporaryDirectory(prefix="tusflow-bench-") as tmp:
        root = Path(tmp)
        source = root / "source-1080p.mp4"
        print(f"generating a {args.duration:g} s 1920x1080 clip ({args.source})...", flush=True)
        generate(source, args.duration, args.source, args.timeout)
        info = probe(source, cfg)
        plans = plan_ladder(info, cfg)
        print(f"ladder: {', '.join(f'{p.name} {p.width}x{p.height}' for p in plans)}; "
              f"preset {cfg.preset}; {info.duration:.1f} s of media", flush=True)

        results: dict[str, Measure] = {}
        for folder, label, commands in (
            ("split", "one process (split)", [ladder_command(cfg, info, plans)]),
            ("each", "one ffmpeg per rung", rendition_commands(cfg, info, plans)),
        ):
            out = root / folder
            out.mkdir()
            for plan in plans:
                (out / plan.name).mkdir()
            print(f"running {label} ({len(commands)} ffmpeg)...", flush=True)
            results[label] = run_all(commands, out, args.timeout)

    print()
    print(f"{'mode':<22}{'wall s':>9}{'cpu s':>9}{'cpu/wall':>10}{'x realtime':>12}")
    for label, m in results.items():
        print(f"{label:<22}{m.wall:>9.1f}{m.cpu:>9.1f}{m.cpu / m.wall:>10.2f}"
              f"{info.duration / m.wall:>12.2f}")
    one, many = results["one process (split)"], results["one ffmpeg per rung"]
    saving = 1 - one.cpu / many.cpu
    print(f"\nCPU ratio one-process / per-rendition: {one.cpu / many.cpu:.2f} "
          f"({saving:.0%} less CPU; target >= 20 %)")
    print(f"wall ratio one-process / per-rendition: {one.wall / many.wall:.2f}")
    return 0 if saving >= 0.20 else 1


if __name__ == "__main__":
    sys.exit(main())
