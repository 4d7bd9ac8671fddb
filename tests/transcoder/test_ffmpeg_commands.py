"""Command building: the safety options, the one-decode ladder and the per-rendition
alternative, checked on the argv lists without running ffmpeg."""

from fractions import Fraction
from pathlib import Path

import pytest

from models.config import TranscodeConfig
from transcoder.extras import plan_poster, plan_storyboard
from transcoder.ffmpeg import (
    ALLOWED_DEMUXERS, input_args, ladder_command, packet_scan_command, probe_command,
    rendition_commands,
)
from transcoder.ladder import plan_ladder
from tests.support.filtergraph import Graph, last, names
from tests.support.probes import fake_probe, graph_of, value_after, values_after

CFG = TranscodeConfig(rate_control="bitrate", audio_group=False)  # the fixed-bitrate ladder; the
# quality ladder and the shared audio group: test_quality_commands.py





def check_rendition(graph: Graph, label: str, width: int, height: int, fps: int = 30) -> list:
    """The output pad ``label`` comes from the video stream of the one input, ends at
    width x height with square pixels in yuv420p at ``fps``; its filters, in order."""
    source, path = graph.path(label)
    assert source == "0:0"
    assert last(path, "scale").size() == (width, height)
    after_scale = path[max(i for i, f in enumerate(path) if f.name == "scale"):]
    assert last(after_scale, "setsar").options["r"] == "1", names(path)
    assert last(path, "format").options["pix_fmts"] == "yuv420p"
    assert last(path, "fps").rate() == fps
    return path


def check_safe_input(argv: list[str], forced: str | None) -> None:
    i = argv.index("-i")
    head = argv[:i]
    assert value_after(head, "-protocol_whitelist") == "file"
    assert set(value_after(head, "-format_whitelist").split(",")) == set(ALLOWED_DEMUXERS)
    assert int(value_after(head, "-probesize")) > 0
    assert int(value_after(head, "-analyzeduration")) > 0
    if forced:
        assert value_after(head, "-f") == forced
    else:
        assert "-f" not in head
    assert argv[i + 1].startswith("file:/")


def test_probe_command_is_safe_and_not_forced():
    argv = probe_command(CFG, Path("/up/load.mp4"))
    assert argv[0] == "ffprobe"
    check_safe_input(argv, None)


def test_paths_cannot_become_options_or_protocols(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = input_args(Path("-evil.mp4"), "mov")
    assert args[-1] == f"file:{tmp_path}/-evil.mp4"
    assert input_args(Path("http:x"), None)[-1] == f"file:{tmp_path}/http:x"


def test_only_allowed_demuxers_can_be_forced():
    with pytest.raises(ValueError):
        input_args(Path("/a.m3u8"), "hls")
    with pytest.raises(ValueError):
        input_args(Path("/a.txt"), "concat")


def test_ladder_command_decodes_once_and_encodes_every_rung():
    probe = fake_probe()
    plans = plan_ladder(probe, CFG)
    argv = ladder_command(CFG, probe, plans)
    assert argv.count("-i") == 1
    check_safe_input(argv, "mov")
    graph = graph_of(argv)
    assert graph.sources() == ["0:0"]  # one decode feeds every rung
    for i, plan in enumerate(plans):
        check_rendition(graph, f"v{i}", plan.width, plan.height)
        assert value_after(argv, f"-b:v:{i}") == f"{plan.video_kbps}k"
        assert value_after(argv, f"-maxrate:v:{i}") == f"{plan.maxrate_kbps}k"
        assert value_after(argv, f"-bufsize:v:{i}") == f"{plan.bufsize_kbps}k"
        assert value_after(argv, f"-b:a:{i}") == f"{plan.audio_kbps}k"
        assert value_after(argv, f"-g:v:{i}") == "61"  # just past the forced 2 s at 30 fps
    assert values_after(argv, "-map") == ["[v0]", "0:1", "[v1]", "0:1", "[v2]", "0:1",
                                          "[v3]", "0:1", "[v4]", "0:1"]
    assert graph.outputs() == {f"v{i}" for i in range(len(plans))}  # nothing left unmapped
    assert value_after(argv, "-force_key_frames:v") == "expr:gte(t,n_forced*2)"
    assert value_after(argv, "-sc_threshold:v") == "0"
    assert value_after(argv, "-profile:v") == "high"
    assert value_after(argv, "-c:a") == "aac" and value_after(argv, "-ar") == "48000"
    assert value_after(argv, "-ac") == "2"
    assert value_after(argv, "-var_stream_map") == (
        "v:0,a:0,name:1080p v:1,a:1,name:720p v:2,a:2,name:480p v:3,a:3,name:360p "
        "v:4,a:4,name:240p")
    assert value_after(argv, "-hls_segment_type") == "fmp4"
    assert value_after(argv, "-hls_playlist_type") == "vod"
    assert value_after(argv, "-hls_time") == "6"
    assert "temp_file" in value_after(argv, "-hls_flags")
    assert value_after(argv, "-progress") == "pipe:1" and "-nostats" in argv
    assert argv[-1] == "%v/index.m3u8"
    assert all(isinstance(a, str) for a in argv)


def test_ts_segments_and_custom_timing():
    cfg = TranscodeConfig(segment_format="ts", segment_duration=4, keyframe_interval=1)
    probe = fake_probe()
    argv = ladder_command(cfg, probe, plan_ladder(probe, cfg))
    assert value_after(argv, "-hls_segment_type") == "mpegts"
    assert value_after(argv, "-hls_segment_filename") == "%v/seg_%05d.ts"
    assert value_after(argv, "-hls_time") == "4"
    assert value_after(argv, "-force_key_frames:v") == "expr:gte(t,n_forced*1)"


def test_no_audio_source_maps_no_audio():
    probe = fake_probe(audio=False)
    argv = ladder_command(CFG, probe, plan_ladder(probe, CFG))
    assert "-c:a" not in argv and "0:1" not in argv
    assert "a:0" not in value_after(argv, "-var_stream_map")


def test_audio_only_source_has_no_video_at_all():
    probe = fake_probe(None, None)
    argv = ladder_command(CFG, probe, plan_ladder(probe, CFG))
    assert "-filter_complex" not in argv and "-c:v" not in argv and "-vn" in argv
    assert values_after(argv, "-map") == ["0:1"]
    assert argv[-1] == "audio/index.m3u8"


def test_interlaced_sources_are_deinterlaced_once_before_scaling():
    probe = fake_probe(interlaced=True)
    plans = plan_ladder(probe, CFG)
    graph = graph_of(ladder_command(CFG, probe, plans))
    assert len(graph.filters("bwdif")) == 1  # once for the whole ladder
    assert graph.filters("bwdif")[0].options["mode"] in ("send_frame", "0")  # keeps the frame rate
    for i, plan in enumerate(plans):
        path = check_rendition(graph, f"v{i}", plan.width, plan.height)
        assert names(path).index("bwdif") < names(path).index("scale"), names(path)
    progressive = graph_of(ladder_command(CFG, fake_probe(), plans))
    assert not progressive.filters("bwdif")


def test_poster_and_storyboard_are_extra_branches_of_the_same_decode():
    probe = fake_probe()
    plans = plan_ladder(probe, CFG)
    poster, storyboard = plan_poster(probe, plans), plan_storyboard(probe, CFG)
    argv = ladder_command(CFG, probe, plans, poster, storyboard)
    assert argv.count("-i") == 1
    graph = graph_of(argv)
    assert graph.sources() == ["0:0"]
    assert graph.outputs() == {*(f"v{i}" for i in range(len(plans))), "poster", "storyboard"}
    for i, plan in enumerate(plans):  # the extra branches change no rendition
        check_rendition(graph, f"v{i}", plan.width, plan.height)

    source, path = graph.path("poster")
    assert source == "0:0"
    assert last(path, "scale").size() == (poster.width, poster.height)
    assert last(path, "thumbnail").options["n"] == str(poster.batch)
    assert names(path).index("select") < names(path).index("thumbnail")
    assert f"between(t,{poster.start:.3f},{poster.end:.3f})" in last(path, "select").options["expr"]

    source, path = graph.path("storyboard")
    assert source == "0:0"
    assert last(path, "scale").size() == (storyboard.tile_width, storyboard.tile_height)
    assert last(path, "fps").rate() == Fraction(1) / Fraction(storyboard.interval)
    assert last(path, "tile").options["layout"] == f"{storyboard.columns}x{storyboard.rows}"
    assert names(path)[-1] == "tile"

    # Each image is its own output file, taking its pad, one frame.
    for label, name in (("poster", "poster.jpg"), ("storyboard", "storyboard.jpg")):
        tail = argv[argv.index(f"[{label}]"):]
        assert tail[tail.index(name) - 2:tail.index(name)] == ["-f", "image2"]
        assert value_after(tail, "-frames:v") == "1"
    assert argv[-1] == "storyboard.jpg"


def test_per_rendition_commands_decode_once_each():
    probe = fake_probe()
    plans = plan_ladder(probe, CFG)
    commands = rendition_commands(CFG, probe, plans)
    assert len(commands) == len(plans)
    for plan, argv in zip(plans, commands):
        check_safe_input(argv, "mov")
        graph = graph_of(argv)
        assert graph.outputs() == {"v0"} and not graph.filters("split")
        check_rendition(graph, "v0", plan.width, plan.height)
        assert values_after(argv, "-map")[0] == "[v0]"
        assert "-var_stream_map" not in argv
        assert argv[-1] == f"{plan.name}/index.m3u8"


def test_packet_scan_reads_only_a_pipe_of_our_own_formats():
    argv = packet_scan_command(CFG, "fmp4")
    assert value_after(argv, "-protocol_whitelist") == "pipe"
    assert value_after(argv, "-f") == "mp4" and value_after(argv, "-i") == "pipe:0"
    assert value_after(packet_scan_command(CFG, "ts"), "-f") == "mpegts"


def test_threads_and_binaries_come_from_config():
    cfg = TranscodeConfig(threads=3, ffmpeg="/opt/ff/ffmpeg", preset="slow")
    probe = fake_probe()
    argv = ladder_command(cfg, probe, plan_ladder(probe, cfg))
    assert argv[0] == "/opt/ff/ffmpeg"
    assert value_after(argv, "-threads") == "3" and value_after(argv, "-preset") == "slow"
