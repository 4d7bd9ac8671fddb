"""``mp4index``: a video track's packets read from an MP4's sample tables must be exactly what
ffprobe's demux prints (the fast path's verdict and the chunk plan rest on them), and files
the tables do not describe plainly must be handed back to ffprobe (None), never guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.config import TranscodeConfig
from transcoder import fastpath, mp4index
from transcoder.probe import probe
from tests.support.ffkit import ffmpeg, make_clip, run

X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def _ffprobe_rows(path: Path, index: int) -> list[tuple[float, int, bool]]:
    proc = run(["ffprobe", "-v", "error", "-select_streams", str(index), "-show_entries",
                "packet=pts_time,size,flags", "-of", "csv=p=0", str(path)])
    assert proc.returncode == 0, proc.stderr
    rows = []
    for line in proc.stdout.splitlines():
        parts = line.split(",")
        if len(parts) < 3:
            continue  # side data lines (the AAC encoder's skip samples)
        pts, size, flags = parts[:3]
        rows.append((float(pts), int(size), "K" in flags))
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mp4index")
    bframes = make_clip(d / "bframes.mp4", size="160x90", duration=5.0,
                        vcodec=["-c:v", "libx264", "-preset", "medium", "-bf", "3", "-g", "45",
                                "-pix_fmt", "yuv420p"])
    out = {
        "bframes": bframes,
        "no_bframes": make_clip(d / "plain.mp4", size="160x90", duration=3.0, vcodec=X264),
        "vfr": make_clip(d / "vfr.mp4", size="160x90", duration=4.0, audio=False,
                         vcodec=["-vf", "select='not(between(t,1,1.5))+lt(mod(n,3),2)'",
                                 "-vsync", "vfr", *X264]),
        "mov": d / "clip.mov",
        "cut": d / "cut.mp4",
        "audio_first": d / "audio_first.mp4",
        "fragmented": d / "fragmented.mp4",
        "delayed": d / "delayed.mp4",
    }
    ffmpeg("-i", str(bframes), "-c", "copy", str(out["mov"]))
    ffmpeg("-ss", "1.3", "-i", str(bframes), "-c", "copy", str(out["cut"]))
    ffmpeg("-i", str(bframes), "-map", "0:a", "-map", "0:v", "-c", "copy", str(out["audio_first"]))
    ffmpeg("-i", str(bframes), "-c", "copy", "-movflags", "+frag_keyframe+empty_moov",
           str(out["fragmented"]))
    ffmpeg("-itsoffset", "0.5", "-i", str(bframes), "-c", "copy", str(out["delayed"]))
    return out


@pytest.mark.parametrize("name, index", [("bframes", 0), ("no_bframes", 0), ("vfr", 0),
                                         ("mov", 0), ("cut", 0), ("audio_first", 1),
                                         ("audio_first", 0)])
def test_rows_from_the_tables_equal_ffprobes(files, name, index) -> None:
    rows = mp4index.video_rows(files[name], index)
    expected = _ffprobe_rows(files[name], index)
    assert rows is not None and len(rows) == len(expected) > 10
    for got, want in zip(rows, expected):
        assert got[1:] == want[1:] and abs(got[0] - want[0]) < 1e-6, (got, want)
    if name == "bframes":  # the case the edit list exists for: pts reordered, the first at 0
        assert [r[0] for r in rows] != sorted(r[0] for r in rows)
        assert min(r[0] for r in rows) == 0.0


@pytest.mark.parametrize("name", ["fragmented", "delayed"])
def test_tables_that_do_not_tell_it_plainly_go_to_ffprobe(files, name, tmp_path) -> None:
    assert mp4index.video_rows(files[name], 0) is None
    cfg = TranscodeConfig()
    info = probe(files[name], cfg)
    packets = fastpath.scan_source(cfg, info)  # the ffprobe pass answers instead
    assert packets.count == len(_ffprobe_rows(files[name], info.video.index))


def test_not_an_mp4_or_no_such_track(files, tmp_path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x10ftypisom" + b"\xff" * 64)
    assert mp4index.video_rows(junk, 0) is None
    assert mp4index.video_rows(files["no_bframes"], 7) is None
    assert mp4index.video_rows(tmp_path / "missing.mp4", 0) is None


def test_scan_source_of_an_mp4_matches_the_ffprobe_pass(files) -> None:
    cfg = TranscodeConfig()
    info = probe(files["bframes"], cfg)
    from_tables = fastpath.scan_source(cfg, info)
    from_demux = fastpath.summarise(_ffprobe_rows(files["bframes"], info.video.index),
                                    info.duration)
    assert from_tables == from_demux
