"""Small test videos generated with ffmpeg (lavfi testsrc2 + sine)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_clip(path: Path, width: int = 320, height: int = 240, seconds: float = 2.0, fps: int = 25,
              audio: bool = True, video: bool = True, extra: list[str] | None = None) -> Path:
    argv = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    if video:
        argv += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    if video:
        argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        argv += ["-c:a", "aac", "-b:a", "64k"]
    argv += (extra or []) + ["-shortest", str(path)]
    subprocess.run(argv, check=True, timeout=120)
    return path
