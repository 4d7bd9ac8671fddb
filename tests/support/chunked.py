"""What the chunked-ladder tests share: the chunked config, the lines a part logs, and one
check that a joined ladder is continuous, fully keyed on its grid and honestly declared,
read from the published files with ffprobe (independently of the transcoder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ffkit import ffprobe, parse_attributes
from tests.support.stack import SLOW_LADDER

CHUNKED = {"ladder": SLOW_LADDER, "chunk_seconds": 4.0, "segment_duration": 2,
           "keyframe_interval": 1, "first_rung": "240p"}


def segments(playlist: Path) -> tuple[str | None, list[tuple[str, float]]]:
    init, out, pending = None, [], None
    for line in playlist.read_text().splitlines():
        if line.startswith("#EXT-X-MAP:"):
            init = parse_attributes(line.split(":", 1)[1])["URI"]
        elif line.startswith("#EXTINF:"):
            pending = float(line.split(":", 1)[1].split(",")[0])
        elif line and not line.startswith("#"):
            out.append((line, pending))
    return init, out


def joined_file(folder: Path, tmp: Path) -> Path:
    """init + every segment of a rendition, as a player appends them."""
    init, segs = segments(folder / "index.m3u8")
    path = tmp / f"{folder.name}.mp4"
    with path.open("wb") as out:
        if init:
            out.write((folder / init).read_bytes())
        for uri, _ in segs:
            out.write((folder / uri).read_bytes())
    return path


def part_lines(stack_workers, media_id: str, what: str) -> list[str]:
    return [line for w in stack_workers for line in w.output.splitlines()
            if what in line and media_id in line]


def check_joined_ladder(out: Path, source: Path, tmp: Path) -> None:
    """Every rendition one continuous stream: frames in exact steps across the chunk joins,
    an IDR at every segment start, as long as the source; audio as long as the video;
    declared bandwidth within 10 % of what the joined playlist measures."""
    src = ffprobe(source, "-show_format", "-show_streams")
    duration = float(src["format"]["duration"])
    fps = 25.0
    master = (out / "master.m3u8").read_text()
    variants = [(parse_attributes(line.split(":", 1)[1]), master.splitlines()[i + 1])
                for i, line in enumerate(master.splitlines())
                if line.startswith("#EXT-X-STREAM-INF:")]
    assert {uri.split("/")[0] for _, uri in variants} >= {"360p", "240p"}, master
    assert "source/" not in master
    audio_dir = out / "audio"
    _, audio_segs = segments(audio_dir / "index.m3u8")
    audio_bytes = sum((audio_dir / u).stat().st_size for u, _ in audio_segs)
    audio_secs = sum(d for _, d in audio_segs)
    for attrs, uri in variants:
        folder = out / uri.split("/")[0]
        joined = joined_file(folder, tmp)
        packets = ffprobe(joined, "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time,dts_time,flags")["packets"]
        pts = sorted(float(p["pts_time"]) for p in packets)
        dts = [float(p["dts_time"]) for p in packets]
        assert all(b > a for a, b in zip(dts, dts[1:])), "decode order not monotonic"
        steps = [round(b - a, 4) for a, b in zip(pts, pts[1:])]
        assert set(steps) == {round(1 / fps, 4)}, f"{uri}: gaps/overlaps {sorted(set(steps))}"
        assert pts[0] == pytest.approx(0.0, abs=1e-3)
        assert len(pts) == round(duration * fps), f"{uri}: {len(pts)} frames"
        # IDR at every segment start, all at whole seconds (the shared 1 s grid)
        _, segs = segments(folder / "index.m3u8")
        starts, t = [], 0.0
        for _, d in segs:
            starts.append(round(t, 3))
            t += d
        keys = {round(float(p["pts_time"]), 3) for p in packets if "K" in p["flags"]}
        assert set(starts) <= keys, (starts, sorted(keys))
        assert all(abs(k - round(k)) < 1e-3 for k in keys)
        assert max(d for _, d in segs) <= 2.0 + 1e-3
        # declared numbers against the joined files
        video_bytes = sum((folder / u).stat().st_size for u, _ in segs)
        measured = (video_bytes + audio_bytes) * 8 / sum(d for _, d in segs)
        declared = int(attrs["AVERAGE-BANDWIDTH"])
        assert abs(declared - measured) <= 0.1 * measured, (uri, declared, measured)
        assert int(attrs["BANDWIDTH"]) >= declared
        proc = ffprobe(joined, "-show_format")
        assert float(proc["format"]["duration"]) == pytest.approx(duration, abs=0.05)
    # audio: one stream for the whole file, ending with the video (within a frame)
    assert audio_secs == pytest.approx(duration, abs=1 / fps + 0.03)
    assert "#EXT-X-MEDIA:TYPE=AUDIO" in master


def chunk_starts(workers, media_id: str, part: str) -> int:
    return len([line for line in part_lines(workers, media_id, "event=part.start")
                if f"part={part} " in line + " "])
