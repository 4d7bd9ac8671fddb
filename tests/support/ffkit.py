"""Test helpers that look at transcoder output independently of the transcoder's own code
(they call ffprobe and parse playlists themselves), so a bug there cannot hide a bug here."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

TIMEOUT = 120


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly (overwriting its output) and fail the test with its stderr if it
    fails: for the fixtures that remux or cut a clip to make a particular kind of input."""
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args])
    assert proc.returncode == 0, proc.stderr


def make_clip(path: Path, *, size: str = "640x360", duration: float = 2.0, rate: int = 30,
              audio: bool = True, vcodec: list[str] | None = None,
              black_until: float = 0.0, extra: list[str] | None = None,
              fmt: list[str] | None = None) -> Path:
    """A synthetic clip: moving test pattern (+ a tone), optionally black at the start."""
    argv = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r={rate}:d={duration}"]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=f=440:sample_rate=44100:d={duration}"]
    if black_until:
        argv += ["-vf", f"drawbox=c=black:t=fill:enable='lt(t,{black_until})'"]
    argv += vcodec or ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        argv += ["-c:a", "aac", "-shortest"]
    argv += (extra or []) + (fmt or []) + [str(path)]
    ffmpeg(*argv)
    return path


def ffprobe(path: Path | str, *args: str) -> dict:
    proc = run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def streams(path: Path | str) -> list[dict]:
    return ffprobe(path, "-show_streams")["streams"]


def video_packets(path: Path | str) -> list[dict]:
    return ffprobe(path, "-select_streams", "v:0",
                   "-show_entries", "packet=pts_time,pos,size,flags")["packets"]


def parse_attributes(text: str) -> dict[str, str]:
    """Attribute list of an HLS tag: KEY=value or KEY="quoted, with commas"."""
    return {m.group(1): m.group(2).strip('"')
            for m in re.finditer(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', text)}


def parse_master(text: str) -> tuple[list[tuple[dict, str]], list[dict], list[str]]:
    """(variants as (attributes, uri), I-frame stream attributes, all lines)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    variants, iframes = [], []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            variants.append((parse_attributes(line.split(":", 1)[1]), lines[i + 1]))
        elif line.startswith("#EXT-X-I-FRAME-STREAM-INF:"):
            iframes.append(parse_attributes(line.split(":", 1)[1]))
    return variants, iframes, lines


def audio_group_of(lines: list[str]) -> dict[str, str]:
    """Attributes of the master's one EXT-X-MEDIA TYPE=AUDIO line."""
    found = [parse_attributes(line.split(":", 1)[1]) for line in lines
             if line.startswith("#EXT-X-MEDIA:")]
    assert len(found) == 1 and found[0]["TYPE"] == "AUDIO", found
    return found[0]


def parse_media(text: str) -> dict:
    """Tags of a media playlist: segments as (duration, uri, byterange or None)."""
    tags: dict = {"segments": [], "lines": text.splitlines()}
    duration = byterange = None
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line.startswith("#EXT-X-BYTERANGE:"):
            length, _, offset = line[17:].partition("@")
            byterange = (int(length), int(offset))
        elif line.startswith("#EXT-X-MAP:"):
            tags["map"] = parse_attributes(line[11:])["URI"]
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            tags["target"] = int(line.split(":")[1])
        elif line and not line.startswith("#"):
            tags["segments"].append((duration, line, byterange))
            duration = byterange = None
    return tags


def remeasure(folder: Path, media: dict) -> tuple[float, float]:
    """(peak, average) bit/s, measured the simple way: the fastest single segment among those
    at least half as long as the longest, and total bits over total time."""
    rows = [(d, (folder / uri).stat().st_size) for d, uri, _ in media["segments"]]
    longest = max(d for d, _ in rows)
    peak = max(size * 8 / d for d, size in rows if d >= longest / 2)
    average = sum(size for _, size in rows) * 8 / sum(d for d, _ in rows)
    return peak, average


def with_init(tmp: Path, init: Path | None, data: bytes) -> Path:
    """A probe-able file: the init segment followed by ``data`` (fMP4 needs its moov)."""
    out = tmp / f"probe-{os.getpid()}-{abs(hash(data)) % 10**9}.mp4"
    out.write_bytes((init.read_bytes() if init else b"") + data)
    return out


def mean_luma(image: Path) -> float:
    proc = subprocess.run(["ffmpeg", "-v", "error", "-i", str(image), "-vf",
                           "scale=32:18,format=gray", "-f", "rawvideo", "pipe:1"],
                          capture_output=True, timeout=TIMEOUT, check=True)
    return sum(proc.stdout) / max(1, len(proc.stdout))


def ffmpeg_processes_in(folder: Path) -> list[int]:
    """PIDs of processes whose working directory is ``folder`` (our ffmpeg runs there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def all_output_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def joined_rendition(folder: Path, media: dict, out: Path) -> Path:
    """A rendition as a player appends it: the init segment (``media`` from parse_media),
    then every segment in playlist order (byte ranges honoured), in one probe-able file."""
    with out.open("wb") as sink:
        if media.get("map"):
            sink.write((folder / media["map"]).read_bytes())
        for _, uri, byterange in media["segments"]:
            data = (folder / uri).read_bytes()
            if byterange is not None:
                length, offset = byterange
                data = data[offset:offset + length]
            sink.write(data)
    return out


def displayed_size(stream: dict) -> tuple[int, int]:
    """(width, height) of a video stream as a player shows it: swapped when its display
    matrix turns it by 90 or 270 degrees."""
    width, height = int(stream["width"]), int(stream["height"])
    turns = [int(float(s["rotation"])) for s in stream.get("side_data_list") or []
             if "rotation" in s]
    if turns and abs(turns[0]) % 180 == 90:
        return height, width
    return width, height
