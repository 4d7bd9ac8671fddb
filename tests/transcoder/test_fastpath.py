"""The fast path and progressive publish (issue 10), with real ffmpeg on tiny generated clips:
which sources are copied and why, what the copy looks like (the source's own packets, not a
re-encode), and that a rendition is published (master rewritten) before the ladder is done."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from models.config import Rung, TranscodeConfig
from transcoder import fastpath, progressive
from transcoder.ffmpeg import IFRAME_PLAYLIST
from transcoder.probe import probe
from tests.support.ffkit import ffprobe, make_clip, parse_master, parse_media, run

# A ladder whose top rung is the clips' own size (320x180) with a generous ceiling, so a
# well-behaved H.264 source can stand in for it.
LADDER = (Rung("180p", 180, 4000, 96, 23), Rung("120p", 120, 300, 64, 23))


@pytest.fixture(scope="module")
def cfg() -> TranscodeConfig:
    return TranscodeConfig(ladder=LADDER, segment_duration=2, keyframe_interval=1,
                           timeout_min=120, preset="ultrafast", first_rung="120p",
                           loudness=False, storyboard_interval=1.0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fastpath")
    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-profile:v",
            "high", "-bf", "2", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0"]
    aac = ["-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "96k"]
    return {
        # OBS-like: High profile with B-frames, a keyframe every 2 s, AAC-LC stereo 48 kHz
        "obs": make_clip(d / "obs.mp4", size="320x180", duration=5.0, vcodec=x264,
                         extra=aac),
        "noaudio": make_clip(d / "noaudio.mp4", size="320x180", duration=3.0, audio=False,
                             vcodec=x264),
        "mkv_mp3": make_clip(d / "mp3.mkv", size="320x180", duration=3.0, vcodec=x264,
                             extra=["-c:a", "libmp3lame"]),
        # a phone holding the camera sideways: landscape pixels, a 90° display matrix
        # (written by a copy pass: an encode would apply and drop it)
        "rotated": _rotated(make_clip(d / "stored.mp4", size="320x180", duration=3.0,
                                      vcodec=x264), d / "rotated.mp4"),
        "gap20": make_clip(d / "gap.mp4", size="320x180", rate=10, duration=22.0,
                           vcodec=["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
                                   "yuv420p", "-g", "300", "-keyint_min", "300",
                                   "-sc_threshold", "0"], audio=False),
        "hevc": make_clip(d / "hevc.mp4", size="320x180", duration=3.0,
                          vcodec=["-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                                  "log-level=error", "-pix_fmt", "yuv420p"]),
        # a phone in HEVC mode: AAC-LC stereo 48 kHz, the audio the quick rung copies
        "hevc_stereo": make_clip(d / "hevc_stereo.mp4", size="320x180", duration=3.0,
                                 vcodec=["-c:v", "libx265", "-preset", "ultrafast",
                                         "-x265-params", "log-level=error", "-pix_fmt",
                                         "yuv420p"], extra=aac),
        "vfr": make_clip(d / "vfr.mp4", size="320x180", duration=4.0,
                         vcodec=["-vf", "select='not(between(t,1,1.5))+lt(mod(n,3),2)'",
                                 "-vsync", "vfr", *x264]),
    }


def _rotated(stored: Path, phone: Path) -> Path:
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(stored), "-c",
                "copy", "-metadata:s:v:0", "rotate=90", str(phone)])
    assert proc.returncode == 0, proc.stderr
    return phone


def _run(clip: Path, cfg: TranscodeConfig, tmp: Path, **changes) -> tuple:
    import dataclasses
    cfg = dataclasses.replace(cfg, **changes)
    info = probe(clip, cfg)
    seen: dict = {"masters": [], "verdict": None}
    live = tmp / "live"

    def playable(rows, duration, width, height):
        seen["masters"].append((live / "master.m3u8").read_text())
        seen["playable_rows"] = rows
        seen["live_at_playable"] = sorted(p.name for p in live.iterdir())

    hooks = progressive.Hooks(verdict=lambda v: seen.__setitem__("verdict", v),
                              playable=playable)
    result = progressive.run(clip, info, cfg, tmp / "scratch", live, time.monotonic() + 300,
                             None, hooks)
    return result, seen, live


def _packets(path: Path) -> list[tuple[str, str]]:
    data = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=size,flags")
    return [(p["size"], p["flags"][0]) for p in data["packets"]]


def test_obs_like_h264_is_copied_as_the_top_rung_and_playable_before_the_ladder(
        clips, cfg, tmp_path) -> None:
    result, seen, live = _run(clips["obs"], cfg, tmp_path)
    verdict = seen["verdict"]
    assert verdict.eligible and verdict.top_rung == "180p" and verdict.copy_audio, verdict
    # playable came first: the master then held the copy alone, the ladder was not out yet
    assert len(seen["masters"]) == 1
    variants, iframes_then, _ = parse_master(seen["masters"][0])
    assert [uri for _, uri in variants] == ["180p/index.m3u8"]
    assert iframes_then == []  # playable did not wait for the pass that lists every packet
    assert "120p" not in seen["live_at_playable"]
    assert {(r["name"], r["state"]) for r in seen["playable_rows"]} == {
        ("180p", "ready"), ("120p", "pending")}
    # ready: copy + encoded rung, sharing the ladder's audio group
    variants, iframes, lines = parse_master((live / "master.m3u8").read_text())
    assert sorted(uri for _, uri in variants) == ["120p/index.m3u8", "180p/index.m3u8"]
    assert all(a["AUDIO"] == "audio" for a, _ in variants) and len(iframes) == 2
    # ... the copy's I-frame playlist came right after: one entry per source keyframe
    copy_iframes = (live / "180p" / IFRAME_PLAYLIST).read_text()
    assert copy_iframes.count("#EXTINF") == [f for _, f in _packets(clips["obs"])].count("K")
    assert not (tmp_path / "scratch" / "iframes" / "180p").exists()
    assert [(r["name"], r["state"]) for r in result.renditions] == [("180p", "ready"),
                                                                     ("120p", "ready")]
    # the copy is the source's own packets: same sizes and keyframe flags, frame for frame
    media = parse_media((live / "180p/index.m3u8").read_text())
    joined = tmp_path / "copy.mp4"
    joined.write_bytes((live / "180p" / media["map"]).read_bytes() + b"".join(
        (live / "180p" / uri).read_bytes() for _, uri, _ in media["segments"]))
    assert _packets(joined) == _packets(clips["obs"])
    # ffmpeg 5.1's fMP4 HLS shifts a B-frame stream by its reorder delay (the encoded rungs
    # too); the copy is as long as the source, in 2 s GOP segments
    stream = ffprobe(joined, "-show_streams")["streams"][0]
    assert abs(float(stream["start_time"])) <= 2 / 30 + 0.002  # at most the B-frame delay
    assert [round(d, 2) for d, _, _ in media["segments"]] == [2.0, 2.0, 1.0]
    assert media["target"] >= max(d for d, _, _ in media["segments"])
    # the encoded rung put its IDRs on the copy's grid, so segment cuts line up
    lower = parse_media((live / "120p/index.m3u8").read_text())
    assert [round(d, 1) for d, _, _ in lower["segments"]] == [2.0, 2.0, 1.0]
    assert result.poster and (live / result.poster).is_file()


@pytest.mark.parametrize("clip, reason", [
    ("rotated", "rotat"), ("gap20", "keyframes are up to"), ("hevc", "hevc"),
])
def test_ineligible_sources_get_a_quick_first_rung_with_the_reason(clips, cfg, tmp_path, clip,
                                                                     reason) -> None:
    result, seen, live = _run(clips[clip], cfg, tmp_path)
    verdict = seen["verdict"]
    assert not verdict.eligible and reason in verdict.reason, verdict
    first, _, _ = parse_master(seen["masters"][0])
    assert [uri for _, uri in first] == ["quick-120p/index.m3u8"]
    final, _, _ = parse_master((live / "master.m3u8").read_text())
    assert "quick-120p/index.m3u8" not in [uri for _, uri in final]
    assert (live / "quick-120p/index.m3u8").is_file()  # kept for players already on it
    assert all(r["role"] != "standin" for r in result.renditions)
    if clip == "gap20":  # the streams allowed a copy, started early; the scan refused it
        assert not (live / fastpath.COPY_NAME).exists()
        assert not (tmp_path / "scratch" / "stage" / fastpath.COPY_NAME).exists()
    if clip == "rotated":  # the quick rung and the ladder play upright (portrait)
        attrs = dict(first[0][0])
        w, h = (int(x) for x in attrs["RESOLUTION"].split("x"))
        assert h > w


def test_ten_bit_h264_is_not_copied(tmp_path, cfg) -> None:
    clip = tmp_path / "ten.mp4"
    proc = run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=30:d=2",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
                str(clip)])
    if proc.returncode != 0:
        pytest.skip("this libx264 has no 10-bit support")
    info = probe(clip, cfg)
    verdict = fastpath.assess(info, fastpath.scan_source(cfg, info), cfg)
    assert not verdict.eligible and "10-bit" in verdict.reason, verdict


def test_no_audio_mp3_audio_and_vfr_are_copied(clips, cfg, tmp_path) -> None:
    result, seen, live = _run(clips["noaudio"], cfg, tmp_path / "a")
    assert seen["verdict"].eligible and "no audio" in seen["verdict"].reason
    assert "#EXT-X-MEDIA:" not in (live / "master.m3u8").read_text()

    result, seen, live = _run(clips["mkv_mp3"], cfg, tmp_path / "b")
    assert seen["verdict"].eligible and not seen["verdict"].copy_audio
    assert "encoded once" in seen["verdict"].reason
    first = ffprobe(tmp_path / "b/live/audio-first/index.m3u8", "-show_streams")["streams"]
    assert first[0]["codec_name"] == "aac"

    result, seen, live = _run(clips["vfr"], cfg, tmp_path / "c")
    assert seen["verdict"].eligible, seen["verdict"]
    copy = "180p" if seen["verdict"].top_rung else "source"
    media = parse_media((live / copy / "index.m3u8").read_text())
    assert 3.5 < sum(d for d, _, _ in media["segments"]) < 4.5


def test_audio_only_has_no_fast_path_and_one_rendition(tmp_path, cfg) -> None:
    clip = make_clip(tmp_path / "talk.m4a", duration=3.0, audio=True,
                     vcodec=["-vn"], fmt=["-map", "1:a"])
    result, seen, live = _run(clip, cfg, tmp_path)
    assert not seen["verdict"].eligible and "audio only" in seen["verdict"].reason
    assert [r["name"] for r in result.renditions] == ["audio"]
    assert (live / "master.m3u8").is_file()


def test_switched_off_nothing_is_published_before_the_end(clips, cfg, tmp_path) -> None:
    """progressive = false: the caller's staged directory gets everything at once (no
    playable moment); the copy still replaces the top rung's encode."""
    result, seen, live = _run(clips["obs"], cfg, tmp_path, progressive=False)
    assert seen["masters"] == [] and seen["verdict"].top_rung == "180p"
    variants, _, _ = parse_master((live / "master.m3u8").read_text())
    assert sorted(uri for _, uri in variants) == ["120p/index.m3u8", "180p/index.m3u8"]
    assert not (live / "audio-first").exists()


def test_summarise_finds_the_grid_and_the_peaks() -> None:
    rows = [(t / 10, 1000 if t % 20 == 0 else 100, t % 20 == 0) for t in range(60)]
    s = fastpath.summarise(rows, 6.0)
    assert s.keyframes == (0.0, 2.0, 4.0) and s.regular_gap == 2.0 and s.max_gap == 2.0
    assert s.first_is_key and s.average_bps == pytest.approx((3 * 1000 + 57 * 100) * 8 / 6, 1)
    irregular = [(0.0, 10, True), (1.0, 10, True), (5.0, 10, True), (5.5, 10, False)]
    s = fastpath.summarise(irregular, 6.0)
    assert s.regular_gap is None and s.max_gap == 4.0
    assert not fastpath.summarise([(0.0, 10, False), (1.0, 10, True)], 2.0).first_is_key


def test_master_is_replaced_atomically(tmp_path) -> None:
    """write_master never leaves a partial file: the new text appears under the name in one
    rename, and no temporary file is left beside it."""
    (tmp_path / "master.m3u8").write_text("old")
    before = hashlib.sha256(b"old").hexdigest()
    progressive.write_master(tmp_path, [], None)
    text = (tmp_path / "master.m3u8").read_text()
    assert text.startswith("#EXTM3U") and hashlib.sha256(text.encode()).hexdigest() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.m3u8"]


def _audio_packets(path: Path) -> list[tuple[str, str]]:
    data = ffprobe(path, "-select_streams", "a:0", "-show_entries", "packet=size,duration_ts")
    return [(p["size"], p.get("duration_ts")) for p in data["packets"]]


def test_quick_rung_copies_stereo_aac_instead_of_encoding_it(clips, cfg, tmp_path) -> None:
    """An HEVC source with AAC-LC stereo: the quick rung's audio is the source's own packets
    (no AAC encode, a measured ~12 % of the quick rung's CPU on a 1080p HEVC lecture) and still
    plays beside the quick video rung in the first master."""
    info = probe(clips["hevc_stereo"], cfg)
    assert fastpath.first_rung_copies_audio(info)
    argv = fastpath.first_rung_command(cfg, info, fastpath.first_rung_plan(info, cfg))
    assert argv[argv.index("-c:a") + 1] == "copy" and "aac" not in argv
    result, seen, live = _run(clips["hevc_stereo"], cfg, tmp_path)
    assert not seen["verdict"].eligible
    first, _, lines = parse_master(seen["masters"][0])
    assert [uri for _, uri in first] == ["quick-120p/index.m3u8"]
    assert any("audio-first/index.m3u8" in line for line in lines)
    media = parse_media((live / "audio-first/index.m3u8").read_text())
    joined = tmp_path / "audio.mp4"
    joined.write_bytes((live / "audio-first" / media["map"]).read_bytes() + b"".join(
        (live / "audio-first" / uri).read_bytes() for _, uri, _ in media["segments"]))
    assert _audio_packets(joined) == _audio_packets(clips["hevc_stereo"])
    # what a player plays decodes cleanly, audio and video together
    proc = run(["ffmpeg", "-v", "error", "-xerror", "-i", str(live / "master.m3u8"), "-map",
                "0", "-f", "null", "-"])
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_quick_rung_encodes_audio_it_may_not_copy(clips, cfg, tmp_path) -> None:
    """Mono (the stand-in's group says CHANNELS="2"), MP3, and AAC that starts later than the
    video (a copy would keep the offset the re-timed video loses) are encoded once to AAC."""
    late = tmp_path / "late.mp4"
    proc = run(["ffmpeg", "-v", "error", "-y", "-i", str(clips["hevc_stereo"]), "-itsoffset",
                "0.5", "-i", str(clips["hevc_stereo"]), "-map", "0:v", "-map", "1:a", "-c",
                "copy", str(late)])
    assert proc.returncode == 0, proc.stderr
    for clip in (clips["hevc"], clips["mkv_mp3"], late):
        info = probe(clip, cfg)
        assert not fastpath.first_rung_copies_audio(info), clip.name
        argv = fastpath.first_rung_command(cfg, info, fastpath.first_rung_plan(info, cfg))
        assert argv[argv.index("-c:a") + 1] == "aac", clip.name
