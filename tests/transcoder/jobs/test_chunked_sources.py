"""The chunked ladder on the sources the issue names (issue 10, "Tests"): a phone clip with a
90 degree display matrix, a 20 s keyframe gap, HEVC, 10-bit H.264, variable frame rate, no
audio, audio only, and a length that is not a multiple of the chunk length. Each runs through
a real ``tusflow serve`` + two ``tusflow worker`` processes with ``chunk_seconds = 4`` (so
every video source is at least two chunk jobs) and the published files are checked with
ffprobe and our own playlist parsing (tests.support.ffkit), never the transcoder's code."""

from __future__ import annotations

import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from models.layout import Layout
from models.lifecycle import MediaState
from tests.support.ffkit import (audio_group_of, displayed_size, ffprobe, joined_rendition,
                                 make_clip, parse_master, parse_media, remeasure, run)
from tests.support.stack import TINY_LADDER, upload

# What ffmpeg makes of these sources is the same on either database: not run again on PostgreSQL.
pytestmark = pytest.mark.media_only

CHUNK_S = 4.0
SEGMENT_S = 2
CHUNKED = {"ladder": TINY_LADDER, "chunk_seconds": CHUNK_S, "segment_duration": SEGMENT_S,
           "keyframe_interval": 1, "first_rung": "240p",
           # the shipped preset: "ultrafast" (the suite's) switches off what makes x264 High
           "preset": "veryfast"}
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
X265 = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
        "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "64k"]


@dataclass(frozen=True)
class Source:
    path: Path
    video: bool = True
    audio: bool = True
    portrait: bool = False      # shown portrait (display matrix on landscape pixels)
    rotated: bool = False       # has a display matrix the output must honour
    cfr: bool = True            # the source's own frames are evenly spaced


def _rotated(stored: Path, phone: Path, degrees: int = 90) -> Path:
    """A phone holding the camera sideways: landscape pixels, a display matrix turning them
    (written by a copy pass; an encode would apply the rotation and drop it)."""
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(stored), "-c",
                "copy", "-metadata:s:v:0", f"rotate={degrees}", str(phone)])
    assert proc.returncode == 0, proc.stderr
    side = ffprobe(phone, "-show_streams")["streams"][0].get("side_data_list") or []
    assert any(int(s.get("rotation", 0)) % 360 in (degrees, 360 - degrees) for s in side), side
    return phone


def _make(kind: str, d: Path) -> Source:
    if kind == "rotated":
        stored = make_clip(d / "stored.mp4", size="640x360", duration=10.0, rate=30,
                           vcodec=X264, extra=AAC)
        return Source(_rotated(stored, d / "phone.mp4"), portrait=True, rotated=True)
    if kind == "rotated_hevc_270":  # a phone in HEVC mode, held the other way round
        stored = make_clip(d / "stored.mp4", size="640x360", duration=10.0, rate=30,
                           vcodec=[*X265, "-tag:v", "hvc1"], extra=AAC)
        return Source(_rotated(stored, d / "phone.mp4", 270), portrait=True, rotated=True)
    if kind == "rotated_180":  # upside down: landscape, but every pixel turned
        stored = make_clip(d / "stored.mp4", size="640x360", duration=10.0, rate=30,
                           vcodec=X264, extra=AAC)
        return Source(_rotated(stored, d / "phone.mp4", 180), rotated=True)
    if kind == "ts_offset":  # an OBS-like transport stream (2 s GOPs), clock starting late
        return Source(make_clip(d / "cam.ts", size="640x360", duration=10.0, rate=25,
                                vcodec=[*X264, "-g", "50"],
                                extra=[*AAC, "-output_ts_offset", "1.4"],
                                fmt=["-f", "mpegts"]))
    if kind == "ts_gop3":  # 3 s GOPs: the 4 s chunk starts fall inside a GOP
        return Source(make_clip(d / "cam.ts", size="640x360", duration=10.0, rate=25,
                                vcodec=[*X264, "-g", "75", "-keyint_min", "75",
                                        "-sc_threshold", "0"], extra=AAC, fmt=["-f", "mpegts"]))
    if kind == "ts_long_gop":  # the same with x264's default 10 s GOP: one IDR in the file
        return Source(make_clip(d / "cam.ts", size="640x360", duration=10.0, rate=25,
                                vcodec=X264, extra=AAC, fmt=["-f", "mpegts"]))
    if kind == "gap20":  # one IDR at 0 s, the next 20 s later
        return Source(make_clip(d / "gap.mp4", size="640x360", duration=22.0, rate=10,
                                vcodec=[*X264, "-g", "200", "-keyint_min", "200",
                                        "-sc_threshold", "0"], extra=AAC))
    if kind == "hevc":
        return Source(make_clip(d / "hevc.mp4", size="640x360", duration=10.0, rate=30,
                                vcodec=[*X265, "-tag:v", "hvc1"], extra=AAC))
    if kind == "ten_bit":
        clip = d / "ten.mp4"
        proc = run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=s=640x360:r=25:d=10", "-f", "lavfi", "-i",
                    "sine=f=440:sample_rate=48000:d=10", "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p10le", *AAC, "-shortest", str(clip)])
        if proc.returncode != 0:
            pytest.skip("this libx264 has no 10-bit support")
        return Source(clip)
    if kind == "hevc_10bit":
        clip = make_clip(d / "hevc10.mp4", size="640x360", duration=10.0, rate=25,
                         vcodec=[*X265[:-1], "yuv420p10le", "-tag:v", "hvc1"], extra=AAC)
        return Source(clip)
    if kind == "vfr":  # a half-second hole at 5 s, then two frames of every three
        return Source(make_clip(d / "vfr.mp4", size="640x360", duration=10.0, rate=30,
                                vcodec=["-vf", "select='not(between(t,5,5.5))*"
                                        "(lt(t,5)+lt(mod(n,3),2))'", "-vsync", "vfr", *X264],
                                extra=AAC), cfr=False)
    if kind == "no_audio":
        return Source(make_clip(d / "silent.mp4", size="640x360", duration=10.0, rate=25,
                                audio=False, vcodec=X264), audio=False)
    if kind == "audio_only":
        return Source(make_clip(d / "talk.m4a", duration=10.0, vcodec=["-vn"],
                                fmt=["-map", "1:a"]), video=False)
    if kind == "odd_length":  # 9.3 s: 4 s + a 5.3 s last chunk (the 1.3 s tail joins it)
        return Source(make_clip(d / "odd.mp4", size="640x360", duration=9.3, rate=30,
                                vcodec=X264, extra=AAC))
    raise AssertionError(kind)


def _joins(last_pts: float) -> list[float]:
    """Chunk boundaries (multiples of ``CHUNK_S`` here: 4 s is a whole number of 2 s
    segments and 1 s keyframe intervals) inside the stream."""
    return [CHUNK_S * i for i in range(1, int(last_pts // CHUNK_S) + 1)
            if CHUNK_S * i < last_pts]


def _grid(path: Path, at: float, pre: str = "") -> bytes:
    """The frame at ``at`` s from the start as it is meant to be seen (ffmpeg applies a
    display matrix), shrunk to 6x6 gray levels. An output seek: decoded from the start, so
    it is exact in any container (an input seek in MPEG-TS is not)."""
    proc = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-ss", f"{at:.4f}",
                           "-frames:v", "1", "-vf", f"{pre}scale=6:6:flags=area,format=gray",
                           "-f", "rawvideo", "pipe:1"], capture_output=True, timeout=120,
                          check=True)
    return proc.stdout


def _diff(a: bytes, b: bytes) -> int:
    assert len(a) == len(b) == 36, (len(a), len(b))
    return max(abs(x - y) for x, y in zip(a, b))


def _source_times(path: Path, stream: str) -> tuple[float, float]:
    """(first pts, end of the last frame/packet) of the source's first ``stream`` stream."""
    packets = ffprobe(path, "-select_streams", f"{stream}:0", "-show_entries",
                      "packet=pts_time,duration_time")["packets"]
    pts = [float(p["pts_time"]) for p in packets]
    last = max(packets, key=lambda p: float(p["pts_time"]))
    return min(pts), float(last["pts_time"]) + float(last.get("duration_time") or 0.0)


def _check_video_rendition(folder: Path, attrs: dict, source: Source,
                           tmp: Path) -> tuple[float, float]:
    """One rung: one continuous stream across the chunk joins; (its end time, one frame)."""
    media = parse_media((folder / "index.m3u8").read_text())
    joined = joined_rendition(folder, media, tmp / f"{folder.name}.mp4")
    stream = ffprobe(joined, "-show_streams")["streams"]
    assert [s["codec_type"] for s in stream] == ["video"], stream
    v = stream[0]
    # whatever came in (HEVC, 10-bit), out comes 8-bit H.264 High 4:2:0
    assert (v["codec_name"], v["profile"], v["pix_fmt"]) == ("h264", "High", "yuv420p"), v
    width, height = displayed_size(v)
    assert f"{width}x{height}" == attrs["RESOLUTION"], (v, attrs)
    assert (height > width) == source.portrait, (width, height)
    if source.rotated:  # upright pixels, no second turn by the player
        assert not [s for s in v.get("side_data_list") or [] if "rotation" in s], v
        # the picture turned the way the phone meant it, in the second chunk too
        for at in (1.0, 5.0):
            shown, produced = _grid(source.path, at), _grid(joined, at)
            upside_down = _grid(joined, at, "hflip,vflip,")
            assert _diff(shown, produced) < 40 < _diff(shown, upside_down), (at, folder.name)
    packets = ffprobe(joined, "-select_streams", "v:0", "-show_entries",
                      "packet=pts_time,dts_time,duration_time,flags")["packets"]
    dts = [float(p["dts_time"]) for p in packets]
    assert all(b > a for a, b in zip(dts, dts[1:])), "decode order not monotonic"
    pts = sorted(float(p["pts_time"]) for p in packets)
    steps = [b - a for a, b in zip(pts, pts[1:])]
    frame = statistics.median(steps)
    # every rung is CFR: no gap or overlap anywhere, in particular at the 4 s chunk joins
    bad = [(round(pts[i], 4), round(s, 4)) for i, s in enumerate(steps)
           if abs(s - frame) > 1e-3]
    assert not bad, f"{folder.name}: steps off the {frame:.4f} s grid at {bad[:10]}"
    assert pts[0] == pytest.approx(0.0, abs=frame / 2 + 1e-3)
    keys = {round(float(p["pts_time"]), 6) for p in packets if "K" in p["flags"]}
    for join in _joins(pts[-1]):  # each chunk starts with an IDR: its first frame on the grid
        first = min(t for t in pts if t > join - 1e-3)
        assert first < join + frame - 1e-3, (folder.name, join, first)
        assert round(first, 6) in keys, (folder.name, join, first, sorted(keys))
    end = pts[-1] + frame
    # as long as the source (within one segment, and within a frame for a CFR source)
    src_start, src_end = _source_times(source.path, "v")
    assert end == pytest.approx(src_end - src_start, abs=SEGMENT_S), (end, src_end)
    if source.cfr:
        assert end == pytest.approx(src_end - src_start, abs=frame + 1e-3), (end, src_end)
    # the pictures are the source's, not a frozen or shifted stand-in, on both sides of joins
    src_w, src_h = displayed_size(ffprobe(source.path, "-show_streams", "-select_streams",
                                          "v:0")["streams"][0])
    for join in _joins(pts[-1]):
        for at in (join - 2 * frame, join + 2 * frame):
            got, want = _grid(joined, at), _grid(source.path, at)
            # testsrc2 moves: 1 frame off is ~4 here, 5 frames ~15, half a second >= 40
            assert _diff(got, want) < 25, (folder.name, at, _diff(got, want))
    listed = sum(d for d, _, _ in media["segments"])
    assert listed == pytest.approx(end, abs=frame + 1e-3), (listed, end)
    assert max(d for d, _, _ in media["segments"]) <= media["target"] + 0.5
    return end, frame


def _check_ladder(out: Path, source: Source, tmp: Path) -> None:
    variants, _, lines = parse_master((out / "master.m3u8").read_text())
    assert variants, lines
    uris = [uri for _, uri in variants]
    assert not [u for u in uris if u.startswith(("quick-", "source/"))], uris
    audio_end = audio_peak = audio_avg = None
    if source.audio and source.video:
        group = audio_group_of(lines)
        adir = out / group["URI"].split("/")[0]
        amedia = parse_media((adir / "index.m3u8").read_text())
        audio_peak, audio_avg = remeasure(adir, amedia)
        ajoined = joined_rendition(adir, amedia, tmp / "audio.mp4")
        apackets = ffprobe(ajoined, "-select_streams", "a:0", "-show_entries",
                           "packet=pts_time,duration_time")["packets"]
        apts = [float(p["pts_time"]) for p in apackets]
        assert all(b > a for a, b in zip(apts, apts[1:])), "audio timestamps not monotonic"
        audio_end = apts[-1] + float(apackets[-1]["duration_time"])
        src_start, src_end = _source_times(source.path, "a")
        assert audio_end == pytest.approx(src_end - src_start, abs=0.05), (audio_end, src_end)
    else:
        assert "#EXT-X-MEDIA:TYPE=AUDIO" not in "\n".join(lines)
    for attrs, uri in variants:
        folder = out / uri.split("/")[0]
        media = parse_media((folder / "index.m3u8").read_text())
        if source.video:
            video_end, frame = _check_video_rendition(folder, attrs, source, tmp)
            if audio_end is not None:  # audio and video end together (a frame + one AAC frame)
                assert abs(audio_end - video_end) <= frame + 0.03, (audio_end, video_end)
        # declared numbers against the files the player fetches
        peak, average = remeasure(folder, media)
        if audio_avg is not None:
            peak, average = peak + audio_peak, average + audio_avg
        declared_avg = int(attrs["AVERAGE-BANDWIDTH"])
        assert abs(declared_avg - average) <= 0.1 * average, (uri, declared_avg, average)
        declared_peak = int(attrs["BANDWIDTH"])
        assert declared_peak >= declared_avg
        assert abs(declared_peak - peak) <= 0.1 * peak, (uri, declared_peak, peak)


# ts_gop3 / ts_long_gop: GOPs that do not line up with the chunks, in a container whose
# seeks land on any packet (chunks.INEXACT_SEEK): pictures froze after a join, or a chunk
# decoded nothing, until chunks seek to before the source keyframe.
SOURCES = ["rotated", "rotated_hevc_270", "rotated_180", "ts_offset", "ts_gop3", "ts_long_gop",
           "gap20", "hevc", "ten_bit", "hevc_10bit", "vfr", "no_audio",
           "odd_length", "audio_only"]


@pytest.mark.parametrize("kind", SOURCES)
def test_chunked_ladder_of_every_kind_of_source(kind: str, stack: Callable,
                                                start_server: Callable,
                                                tmp_path: Path) -> None:
    source = _make(kind, tmp_path)
    s = stack(transcode=CHUNKED)
    server = start_server(config=s.config)
    workers = [s.start_worker("a"), s.start_worker("b")]
    media_id = upload(server.url, source.path)
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=240)
    output = "\n".join(w.output for w in workers)
    assert done.state == MediaState.READY, (done.error, output[-3000:])
    mine = [line for line in output.splitlines() if media_id in line]
    chunk_jobs = {line.split("part=")[1].split()[0] for line in mine
                  if "event=part.start" in line and "part=chunk-" in line}
    if source.video:  # really the chunked path: at least two chunk jobs and a join
        assert len(chunk_jobs) >= 2, mine[-20:]
        assert [line for line in mine if "event=part.start" in line and "part=join" in line]
        if kind == "odd_length":  # the 1.3 s tail is no chunk of its own
            assert chunk_jobs == {"chunk-0", "chunk-1"}, chunk_jobs
    else:  # the audio is never cut (AAC priming would click at every join): one job
        assert not chunk_jobs, mine[-20:]
    out = Layout(s.settings.data_dir).media_dir(media_id)
    (tmp_path / "probe").mkdir()
    _check_ladder(out, source, tmp_path / "probe")
    if not source.video:
        variants, _, _ = parse_master((out / "master.m3u8").read_text())
        assert len(variants) == 1
        media = parse_media((out / variants[0][1]).read_text())
        assert sum(d for d, _, _ in media["segments"]) == pytest.approx(10.0, abs=0.1)
