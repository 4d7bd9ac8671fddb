"""Real transcodes of small synthetic clips, checked with ffprobe and our own playlist
parsing (never with the transcoder's measuring code)."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from models.config import Rung, TranscodeConfig
from transcoder.errors import FfmpegFailed, InputRejected, TranscodeCancelled
from transcoder.pipeline import TranscodeResult, transcode
from transcoder.probe import probe
from tests.support.ffkit import (
    all_output_bytes, audio_group_of, ffmpeg_processes_in, ffprobe, mean_luma, parse_master,
    parse_media,
    remeasure, streams, video_packets, with_init,
)

RENDITION_KEYS = {"name", "width", "height", "bandwidth", "average_bandwidth", "codecs",
                  "frame_rate", "playlist"}


def run_transcode(source: Path, out: Path, cfg: TranscodeConfig, **kwargs) -> TranscodeResult:
    out.mkdir(parents=True, exist_ok=True)
    return transcode(source, out, cfg, **kwargs)


@pytest.fixture(scope="module", params=["fmp4", "ts"])
def produced(request, tmp_path_factory, landscape, small_cfg):
    """The 4 s landscape clip through the small ladder, once per segment format, with every
    progress report recorded."""
    cfg = TranscodeConfig(**{**small_cfg.__dict__, "segment_format": request.param})
    out = tmp_path_factory.mktemp(f"landscape-{request.param}")
    reports: list[tuple[float, float | None, float]] = []
    result = run_transcode(landscape, out, cfg,
                           on_progress=lambda p, e: reports.append((p, e, time.monotonic())))
    return cfg, out, result, reports


def master_of(out: Path):
    return parse_master((out / "master.m3u8").read_text())


def media_of(out: Path, rendition: dict) -> tuple[Path, dict]:
    path = out / rendition["playlist"]
    return path.parent, parse_media(path.read_text())


def avc_string(profile: str, level: int) -> str:
    """RFC 6381 string from ffprobe's profile name and level (x264 sets these flags)."""
    idc, flags = {"High": ("64", "00"), "Constrained Baseline": ("42", "c0")}[profile]
    return f"avc1.{idc}{flags}{level:02x}"


def output_video_stream(folder: Path, media: dict, tmp_path: Path) -> dict:
    first = folder / media["segments"][0][1]
    source = first if "map" not in media else with_init(
        tmp_path, folder / media["map"], first.read_bytes())
    return next(s for s in streams(source) if s["codec_type"] == "video")


def test_result_matches_the_contract(produced):
    cfg, out, result, _ = produced
    assert result.master == "master.m3u8" and (out / "master.m3u8").is_file()
    assert [r["name"] for r in result.renditions] == ["360p", "240p"]
    for rendition in result.renditions:
        assert set(rendition) == RENDITION_KEYS
        assert (out / rendition["playlist"]).is_file()
    assert (result.width, result.height) == (640, 360)
    assert 3.9 <= result.duration <= 4.1
    assert result.poster == "poster.jpg" and result.storyboard == "storyboard.vtt"


def test_master_declares_what_was_produced(produced, tmp_path):
    cfg, out, result, _ = produced
    variants, iframes, lines = master_of(out)
    assert lines[0] == "#EXTM3U" and "#EXT-X-INDEPENDENT-SEGMENTS" in lines
    assert any(re.fullmatch(r"#EXT-X-VERSION:\d+", line) for line in lines)
    by_uri = {r["playlist"]: r for r in result.renditions}
    assert sorted(uri for _, uri in variants) == sorted(by_uri)
    for attrs, uri in variants:
        rendition = by_uri[uri]
        assert set(attrs) == {"BANDWIDTH", "AVERAGE-BANDWIDTH", "CODECS", "RESOLUTION",
                              "FRAME-RATE", "AUDIO"}
        assert attrs["AUDIO"] == audio_group_of(lines)["GROUP-ID"]
        folder, media = media_of(out, rendition)
        video = output_video_stream(folder, media, tmp_path)
        assert attrs["RESOLUTION"] == f"{video['width']}x{video['height']}"
        assert attrs["RESOLUTION"] == f"{rendition['width']}x{rendition['height']}"
        assert video["profile"] == "High" and video["pix_fmt"] == "yuv420p"
        assert attrs["CODECS"] == avc_string(video["profile"], video["level"]) + ",mp4a.40.2"
        assert attrs["CODECS"] == rendition["codecs"]
        assert re.fullmatch(r"\d+\.\d{3}", attrs["FRAME-RATE"])
        assert float(attrs["FRAME-RATE"]) == pytest.approx(float(Fraction(video["r_frame_rate"])),
                                                           abs=0.001)
        assert int(attrs["BANDWIDTH"]) == rendition["bandwidth"]
        assert int(attrs["AVERAGE-BANDWIDTH"]) == rendition["average_bandwidth"]
        assert int(attrs["BANDWIDTH"]) >= int(attrs["AVERAGE-BANDWIDTH"])


def test_declared_bandwidth_is_within_10_percent_of_a_remeasure(produced):
    """A variant plays its video rung plus the shared audio rendition: both count."""
    _, out, result, _ = produced
    _, _, lines = master_of(out)
    audio_uri = audio_group_of(lines)["URI"]
    audio_folder = (out / audio_uri).parent
    audio_peak, audio_average = remeasure(
        audio_folder, parse_media((out / audio_uri).read_text(encoding="utf-8")))
    for rendition in result.renditions:
        folder, media = media_of(out, rendition)
        peak, average = remeasure(folder, media)
        peak, average = peak + audio_peak, average + audio_average
        assert rendition["bandwidth"] == pytest.approx(peak, rel=0.10)
        assert rendition["average_bandwidth"] == pytest.approx(average, rel=0.10)


def test_first_variant_is_nearest_2_mbit(produced):
    _, out, result, _ = produced
    variants, _, _ = master_of(out)
    nearest = min(result.renditions, key=lambda r: abs(r["average_bandwidth"] - 2_000_000))
    assert variants[0][1] == nearest["playlist"]


def test_media_playlists_are_vod_with_the_configured_segments(produced):
    cfg, out, result, _ = produced
    for rendition in result.renditions:
        folder, media = media_of(out, rendition)
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in media["lines"]
        assert "#EXT-X-ENDLIST" in media["lines"]
        durations = [d for d, _, _ in media["segments"]]
        assert len(durations) == 2 and sum(durations) == pytest.approx(4.0, abs=0.05)
        assert all(d <= media["target"] + 0.5 for d in durations)
        assert durations[0] == pytest.approx(cfg.segment_duration, abs=0.05)
        suffix = ".m4s" if cfg.segment_format == "fmp4" else ".ts"
        assert all(uri.endswith(suffix) for _, uri, _ in media["segments"])
        assert ("map" in media) == (cfg.segment_format == "fmp4")
        assert not list(folder.glob("*.tmp"))


def test_every_segment_starts_with_a_keyframe_aligned_across_renditions(produced, tmp_path):
    cfg, out, result, _ = produced
    keyframe_times = []
    for rendition in result.renditions:
        folder, media = media_of(out, rendition)
        init = folder / media["map"] if "map" in media else None
        times = []
        for _, uri, _ in media["segments"]:
            packets = video_packets(with_init(tmp_path, init, (folder / uri).read_bytes()))
            assert packets[0]["flags"].startswith("K"), f"{rendition['name']}/{uri}"
            times += [round(float(p["pts_time"]), 2) for p in packets if "K" in p["flags"]]
        keyframe_times.append(times)
        gaps = {round(b - a, 2) for a, b in zip(times, times[1:])}
        assert gaps == {float(cfg.keyframe_interval)}
    assert all(t == keyframe_times[0] for t in keyframe_times)


def test_iframe_playlists_point_at_keyframes(produced, tmp_path):
    cfg, out, result, _ = produced
    variants, iframes, _ = master_of(out)
    assert len(iframes) == len(variants) == len(result.renditions)
    for attrs in iframes:
        rendition = next(r for r in result.renditions
                         if attrs["URI"] == r["playlist"].replace("index", "iframes"))
        assert attrs["RESOLUTION"] == f"{rendition['width']}x{rendition['height']}"
        assert attrs["CODECS"] == rendition["codecs"].split(",")[0]
        assert int(attrs["BANDWIDTH"]) >= int(attrs["AVERAGE-BANDWIDTH"]) > 0
        iframe_path = out / attrs["URI"]
        text = iframe_path.read_text()
        assert "#EXT-X-I-FRAMES-ONLY" in text and "#EXT-X-ENDLIST" in text
        media = parse_media(text)
        folder = iframe_path.parent
        entries = media["segments"]
        per_segment = 1 if cfg.segment_format == "fmp4" else cfg.segment_duration
        assert len(entries) == 2 * per_segment
        assert sum(d for d, _, _ in entries) == pytest.approx(4.0, abs=0.05)
        for _, uri, (length, offset) in entries:
            data = (folder / uri).read_bytes()
            assert 0 < length and offset + length <= len(data)
            if cfg.segment_format == "fmp4":
                assert offset == 0
                init = folder / media["map"]
                packets = video_packets(with_init(tmp_path, init, data))
                first = packets[0]
                assert "K" in first["flags"]
                end_in_segment = int(first["pos"]) + int(first["size"]) - init.stat().st_size
                assert end_in_segment == length  # the range ends exactly after the I-frame
            else:
                packets = video_packets(folder / uri)
                keyframes = {int(p["pos"]) for p in packets if "K" in p["flags"]}
                assert offset in keyframes or offset == 0


def test_poster_is_a_real_frame_not_the_black_start(produced):
    _, out, result, _ = produced
    poster = out / result.poster
    assert poster.read_bytes()[:2] == b"\xff\xd8"
    assert mean_luma(poster) > 40
    [stream] = streams(poster)
    assert (stream["width"], stream["height"]) == (640, 360)


def test_storyboard_vtt_maps_the_whole_duration_into_the_sprite(produced):
    _, out, result, _ = produced
    text = (out / result.storyboard).read_text()
    assert text.startswith("WEBVTT")
    cues = re.findall(r"([\d:.]+) --> ([\d:.]+)\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)", text)
    assert len(cues) == 4
    [sprite] = streams(out / cues[0][2])
    seconds = [sum(float(x) * 60 ** i for i, x in enumerate(reversed(t.split(":"))))
               for cue in cues for t in cue[:2]]
    assert seconds[0] == 0 and seconds[-1] == pytest.approx(result.duration, abs=0.05)
    assert seconds[1::2][:-1] == seconds[2::2]  # contiguous cues
    for *_, x, y, w, h in cues:
        assert int(x) + int(w) <= sprite["width"] and int(y) + int(h) <= sprite["height"]


def test_progress_is_reported_and_ends_at_100(produced):
    _, _, _, reports = produced
    percents = [p for p, _, _ in reports]
    assert percents[0] == 0 and percents[-1] == 100
    assert percents == sorted(percents)
    assert all(0 <= p <= 100 for p in percents)
    assert reports[-1][1] == 0


def test_default_ladder_is_capped_at_a_720p_source(landscape_720, tmp_path):
    result = run_transcode(landscape_720, tmp_path / "out", TranscodeConfig(preset="ultrafast"))
    assert [(r["name"], r["width"], r["height"]) for r in result.renditions] == [
        ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360), ("240p", 426, 240)]
    assert not (tmp_path / "out" / "1080p").exists()
    variants, iframes, _ = master_of(tmp_path / "out")
    assert len(variants) == len(iframes) == 4
    assert max(int(a["RESOLUTION"].split("x")[1]) for a, _ in variants) == 720


def test_portrait_keeps_its_aspect_and_low_rungs_drop_to_30fps(portrait, tmp_path, small_cfg):
    result = run_transcode(portrait, tmp_path / "out", small_cfg)
    assert [(r["width"], r["height"]) for r in result.renditions] == [(360, 640), (240, 426)]
    assert all(r["frame_rate"] == 30 for r in result.renditions)
    for rendition in result.renditions:
        folder, media = media_of(tmp_path / "out", rendition)
        video = output_video_stream(folder, media, tmp_path)
        assert (video["width"], video["height"]) == (rendition["width"], rendition["height"])
        assert Fraction(video["r_frame_rate"]) == 30


def keyframe_times(out: Path, rendition: dict, tmp_path: Path) -> list[float]:
    folder, media = media_of(out, rendition)
    init = folder / media["map"] if "map" in media else None
    times = []
    for _, uri, _ in media["segments"]:
        packets = video_packets(with_init(tmp_path, init, (folder / uri).read_bytes()))
        times += [round(float(p["pts_time"]), 3) for p in packets if "K" in p["flags"]]
    return times


def test_keyframes_align_across_rungs_with_different_frame_rates(sixty_fps, tmp_path,
                                                                 small_cfg):
    cfg = TranscodeConfig(**{**small_cfg.__dict__,
                             "ladder": (Rung("480p", 480, 900), Rung("240p", 240, 300))})
    out = tmp_path / "out"
    result = run_transcode(sixty_fps, out, cfg)
    assert [r["frame_rate"] for r in result.renditions] == [60, 30]
    high, low = (keyframe_times(out, r, tmp_path) for r in result.renditions)
    assert high == low
    assert [round(b - a, 3) for a, b in zip(high, high[1:])] == [1.0] * (len(high) - 1)


def test_odd_sized_source_gets_even_sizes_within_the_source(odd_size, tmp_path, small_cfg):
    result = run_transcode(odd_size, tmp_path / "out", small_cfg)
    assert [(r["width"], r["height"]) for r in result.renditions] == [(320, 240)]


def test_source_smaller_than_every_rung_gets_one_source_sized_rendition(odd_size, tmp_path):
    cfg = TranscodeConfig(ladder=(Rung("480p", 480, 1200), Rung("360p", 360, 700)),
                          preset="ultrafast")
    result = run_transcode(odd_size, tmp_path / "out", cfg)
    [rendition] = result.renditions
    assert (rendition["width"], rendition["height"]) == (320, 240)


def test_video_without_audio_declares_no_audio(no_audio, tmp_path, small_cfg):
    result = run_transcode(no_audio, tmp_path / "out", small_cfg)
    variants, _, _ = master_of(tmp_path / "out")
    assert all(attrs["CODECS"].startswith("avc1.") and "mp4a" not in attrs["CODECS"]
               for attrs, _ in variants)
    folder, media = media_of(tmp_path / "out", result.renditions[0])
    init = folder / media["map"]
    assert [s["codec_type"] for s in streams(init)] == ["video"]


def test_audio_only_source_becomes_audio_only_hls(audio_only, tmp_path, small_cfg):
    out = tmp_path / "out"
    result = run_transcode(audio_only, out, small_cfg)
    assert result.poster is None and result.storyboard is None
    assert result.width is None and result.height is None
    assert [r["name"] for r in result.renditions] == ["audio"]
    variants, iframes, _ = master_of(out)
    assert iframes == [] and len(variants) == 1
    attrs, uri = variants[0]
    assert set(attrs) == {"BANDWIDTH", "AVERAGE-BANDWIDTH", "CODECS"}
    assert attrs["CODECS"] == "mp4a.40.2"
    folder, media = media_of(out, result.renditions[0])
    [audio] = streams(folder / media["map"])
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)
    assert not (out / "poster.jpg").exists()


def test_recorder_file_without_duration_and_rotated_phone_video(no_duration, rotated, tmp_path,
                                                                small_cfg):
    result = run_transcode(no_duration, tmp_path / "a", small_cfg)
    assert result.duration == pytest.approx(2.0, abs=0.1)
    result = run_transcode(rotated, tmp_path / "b", small_cfg)
    assert (result.width, result.height) == (360, 640)


def test_truncated_faststart_mp4_is_rejected_after_decoding(truncated_faststart, tmp_path,
                                                            small_cfg):
    with pytest.raises(InputRejected, match="incomplete"):
        run_transcode(truncated_faststart, tmp_path / "out", small_cfg)


def hls_playlist(path: Path, target: Path) -> Path:
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{target}\n"
                    "#EXT-X-ENDLIST\n")
    return path


@pytest.mark.parametrize("kind", ["playlist-to-video", "playlist-to-passwd", "concat", "text",
                                  "empty", "truncated"])
def test_hostile_and_broken_inputs_produce_nothing(kind, tmp_path, transport_stream, landscape,
                                                   truncated, small_cfg):
    upload = tmp_path / "upload.mp4"
    if kind == "playlist-to-video":
        hls_playlist(upload, transport_stream)
    elif kind == "playlist-to-passwd":
        hls_playlist(upload, Path("/etc/passwd"))
    elif kind == "concat":
        upload.write_text(f"ffconcat version 1.0\nfile '{landscape}'\n")
    elif kind == "text":
        upload.write_text("root:x:0:0:root:/root:/bin/bash\n")
    elif kind == "empty":
        upload.write_bytes(b"")
    else:
        upload.write_bytes(truncated.read_bytes())
    out = tmp_path / "out"
    with pytest.raises(InputRejected) as caught:
        run_transcode(upload, out, small_cfg)
    assert caught.value.permanent and caught.value.reason.endswith(".")
    assert list(out.iterdir()) == []
    assert b"root:" not in all_output_bytes(out)


def test_timeout_kills_ffmpeg(long_clip, tmp_path, small_cfg):
    out = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(FfmpegFailed, match="longer than allowed") as caught:
        run_transcode(long_clip, out, small_cfg, timeout=1.0)
    assert not caught.value.permanent
    assert time.monotonic() - started < 10
    assert ffmpeg_processes_in(out) == []


def test_should_stop_cancels_and_kills_ffmpeg(long_clip, tmp_path, small_cfg):
    out = tmp_path / "out"
    seen: list[list[int]] = []

    def should_stop() -> bool:
        running = ffmpeg_processes_in(out)
        seen.append(running)
        return bool(running)  # stop as soon as ffmpeg is actually running

    with pytest.raises(TranscodeCancelled):
        run_transcode(long_clip, out, small_cfg, should_stop=should_stop)
    assert seen[-1], "ffmpeg was never seen running"
    assert ffmpeg_processes_in(out) == []


def test_ffmpeg_is_killed_when_the_progress_callback_raises(long_clip, tmp_path, small_cfg):
    out = tmp_path / "out"

    def explode(percent, eta):
        if percent > 0:
            raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="database went away"):
        run_transcode(long_clip, out, small_cfg, on_progress=explode)
    assert ffmpeg_processes_in(out) == []


def test_codecs_in_the_master_come_from_the_output_not_a_constant(produced):
    """Different rung sizes get different H.264 levels; a hard-coded string would not."""
    _, out, _, _ = produced
    variants, _, _ = master_of(out)
    levels = {attrs["CODECS"].split(",")[0] for attrs, _ in variants}
    assert len(levels) == len(variants)


def test_out_dir_holds_only_the_published_layout(produced):
    cfg, out, result, _ = produced
    top = sorted(p.name for p in out.iterdir())
    assert top == sorted(["master.m3u8", "poster.jpg", "storyboard.jpg", "storyboard.vtt",
                          "360p", "240p", "audio"])
    for rendition in result.renditions:
        names = {p.name for p in (out / rendition["name"]).iterdir()}
        assert {"index.m3u8", "iframes.m3u8"} <= names
    assert ffprobe(out / "storyboard.jpg", "-show_streams")["streams"][0]["codec_name"] == "mjpeg"


def test_ffmpeg_dies_with_a_worker_killed_without_cleanup(long_clip, tmp_path):
    """An RQ work-horse killed with SIGKILL runs no ``finally``; its ffmpeg must still end at
    once instead of transcoding for nobody (ffmpeg ignores SIGPIPE, so the broken progress
    pipe alone would not stop it). A slow preset keeps ffmpeg busy well past the check."""
    out = tmp_path / "out"
    out.mkdir()
    script = ("import sys; from pathlib import Path; from models.config import Rung, "
              "TranscodeConfig; from transcoder.pipeline import transcode; "
              "transcode(Path(sys.argv[1]), Path(sys.argv[2]), TranscodeConfig("
              "ladder=(Rung('360p', 360, 700),), preset='slow'))")
    worker = subprocess.Popen([sys.executable, "-c", script, str(long_clip), str(out)],
                              cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 30
        while not ffmpeg_processes_in(out) and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker ended before ffmpeg started"
            time.sleep(0.05)
        assert ffmpeg_processes_in(out), "ffmpeg never started"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    deadline = time.monotonic() + 1.5
    while ffmpeg_processes_in(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftover = ffmpeg_processes_in(out)
    for pid in leftover:  # do not leave a stray ffmpeg behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert leftover == []


def test_a_probe_passed_in_is_not_repeated(landscape, tmp_path, small_cfg):
    """The job probes first (for its time limit) and hands the result on: the source is
    opened by ffprobe once, not twice. A logging ffprobe wrapper counts the openings."""
    calls = tmp_path / "ffprobe-calls"
    wrapper = tmp_path / "ffprobe"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec ffprobe "$@"\n')
    wrapper.chmod(0o755)
    cfg = dataclasses.replace(small_cfg, ffprobe=str(wrapper))
    source_url = f"file:{landscape.absolute()}"

    def openings_of_source() -> int:
        lines = calls.read_text().splitlines() if calls.exists() else []
        return sum(source_url in line.split() for line in lines)

    info = probe(landscape, cfg)
    assert openings_of_source() == 1
    result = run_transcode(landscape, tmp_path / "once", cfg, probed=info)
    assert openings_of_source() == 1
    assert result.duration == pytest.approx(4.0, abs=0.1)
    assert (tmp_path / "once" / "master.m3u8").is_file()
    run_transcode(landscape, tmp_path / "alone", cfg)  # without one, transcode probes itself
    assert openings_of_source() == 2
