"""The quality ladder's command building (capped CRF, one shared audio rendition, the audio
chain, HDR tone mapping) and its pure rules (lean ladder, loudnorm parsing), without ffmpeg."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from models.config import ConfigError, TranscodeConfig, load_settings
from transcoder.ffmpeg import ladder_command, rendition_commands
from transcoder.ladder import lean_ladder, plan_ladder
from transcoder.loudness import (
    AudioPlan, Channels, Loudness, one_ear, parse_channel_rms, parse_ebur128,
)
from transcoder.playlists import AudioRendition, Variant, render_master, with_audio
from tests.support.filtergraph import Graph
from tests.support.probes import fake_probe, value_after, values_after

CFG = TranscodeConfig()





def test_every_rung_is_capped_crf_at_its_ceiling():
    probe = fake_probe()
    plans = plan_ladder(probe, CFG)
    argv = ladder_command(CFG, probe, plans)
    for i, (plan, rung) in enumerate(zip(plans, CFG.ladder)):
        assert value_after(argv, f"-crf:v:{i}") == str(rung.quality)
        assert value_after(argv, f"-maxrate:v:{i}") == f"{rung.video_kbps}k"
        assert value_after(argv, f"-bufsize:v:{i}") == f"{2 * rung.video_kbps}k"
        assert f"-b:v:{i}" not in argv  # no average target: easy content may stay far below


def test_bitrate_mode_is_the_old_fixed_ladder():
    cfg = dataclasses.replace(CFG, rate_control="bitrate")
    probe = fake_probe()
    plans = plan_ladder(probe, cfg)
    argv = ladder_command(cfg, probe, plans)
    assert not [a for a in argv if a.startswith("-crf")]
    assert [value_after(argv, f"-b:v:{i}") for i in range(len(plans))] == [
        f"{p.video_kbps}k" for p in plans]


def test_audio_is_encoded_once_into_a_group_every_rung_shares():
    probe = fake_probe()
    plans = plan_ladder(probe, CFG)
    audio = AudioPlan(Channels.STEREO, None)
    argv = ladder_command(CFG, probe, plans, audio_plan=audio)
    graph = Graph.parse(value_after(argv, "-filter_complex"))
    graph.check()
    assert values_after(argv, "-map") == [f"[v{i}]" for i in range(len(plans))] + ["[a0]"]
    assert values_after(argv, "-b:a:0") == ["160k"] and "-b:a:1" not in argv
    streams = value_after(argv, "-var_stream_map").split(" ")
    assert streams[:-1] == [f"v:{i},agroup:audio,name:{p.name}" for i, p in enumerate(plans)]
    assert streams[-1] == "a:0,agroup:audio,name:audio"
    assert not graph.filters("asplit")


def test_without_the_group_every_rung_gets_the_same_normalised_audio():
    cfg = dataclasses.replace(CFG, audio_group=False)
    probe = fake_probe()
    plans = plan_ladder(probe, cfg)
    m = Loudness(-30.0, -12.0, 5.0, -40.0, 0.3)
    argv = ladder_command(cfg, probe, plans, audio_plan=AudioPlan(Channels.STEREO, m))
    graph = Graph.parse(value_after(argv, "-filter_complex"))  # (check() knows split only)
    assert graph.outputs() == {f"v{i}" for i in range(len(plans))} | {
        f"a{i}" for i in range(len(plans))}
    assert len(graph.filters("asplit")) == 1 and len(graph.filters("loudnorm")) == 1
    assert values_after(argv, "-map")[1::2] == [f"[a{i}]" for i in range(len(plans))]
    assert "agroup" not in value_after(argv, "-var_stream_map")


def test_per_rendition_commands_carry_their_own_audio():
    probe = fake_probe()
    for argv in rendition_commands(CFG, probe, plan_ladder(probe, CFG)):
        assert "-var_stream_map" not in argv


def test_audio_chain_maps_channels_then_loudnorm_with_the_measurement():
    m = Loudness(-31.25, -14.5, 6.0, -41.7, 0.42)
    chain = AudioPlan(Channels.MONO, m).filter(CFG)
    pan, loudnorm, resample = chain.split(",")
    assert pan == "pan=stereo|c0=c0|c1=c0"
    options = dict(item.split("=", 1) for item in loudnorm.removeprefix("loudnorm=").split(":"))
    assert options["I"] == "-16.0" and options["TP"] == "-1.0" and options["LRA"] == "11.0"
    assert options["measured_I"] == "-31.25" and options["measured_TP"] == "-14.50"
    assert options["measured_thresh"] == "-41.70" and options["offset"] == "0.42"
    assert options["linear"] == "true"
    assert resample == "aresample=48000"  # loudnorm itself outputs 192 kHz
    assert AudioPlan(Channels.RIGHT, None).filter(CFG) == "pan=stereo|c0=c1|c1=c1,aresample=48000"


def test_ebur128_and_astats_output_is_parsed():
    stderr = """[Parsed_astats_0 @ 0x5] Channel: 1
[Parsed_astats_0 @ 0x5] RMS level dB: -inf
[Parsed_astats_0 @ 0x5] Channel: 2
[Parsed_astats_0 @ 0x5] RMS level dB: -21.073583
[Parsed_ebur128_2 @ 0x5] Summary:

  Integrated loudness:
    I:         -21.9 LUFS
    Threshold: -31.9 LUFS

  Loudness range:
    LRA:         0.0 LU
    Threshold: -41.9 LUFS
    LRA low:   -22.0 LUFS
    LRA high:  -21.8 LUFS

  True peak:
    Peak:      -18.1 dBFS
"""
    assert parse_ebur128(stderr) == Loudness(-21.9, -18.1, 0.0, -31.9, 0.0)
    levels = parse_channel_rms(stderr)
    assert levels == {1: float("-inf"), 2: pytest.approx(-21.073583)}
    assert one_ear(levels) is Channels.RIGHT
    assert one_ear({1: -20.0, 2: -60.0}) is Channels.LEFT
    assert one_ear({1: -20.0, 2: -26.0}) is None  # a panned source is still stereo
    assert parse_ebur128("no summary here") is None
    silent = stderr.replace("-21.9 LUFS", "-70.0 LUFS").replace("-18.1 dBFS", "-inf dBFS")
    assert parse_ebur128(silent).true_peak == float("-inf")


def test_hdr_source_is_tone_mapped_once_and_tagged_bt709():
    for transfer in ("arib-std-b67", "smpte2084"):
        probe = fake_probe(transfer=transfer)
        plans = plan_ladder(probe, CFG)
        argv = ladder_command(CFG, probe, plans)
        graph = Graph.parse(value_after(argv, "-filter_complex"))
        graph.check()
        [tonemap] = graph.filters("tonemap")
        assert tonemap.options["tonemap"] == "mobius" and tonemap.options["desat"] == "0"
        linear, primaries, back = graph.filters("zscale")
        assert linear.options["tin"] == transfer and linear.options["pin"] == "bt2020"
        assert linear.options["t"] == "linear"
        assert primaries.options["p"] == "bt709"
        assert (back.options["t"], back.options["m"], back.options["r"]) == ("bt709", "bt709", "tv")
        assert value_after(argv, "-color_primaries:v") == "bt709"
        assert value_after(argv, "-color_trc:v") == "bt709"
        assert value_after(argv, "-colorspace:v") == "bt709"
    sdr = ladder_command(CFG, fake_probe(), plan_ladder(fake_probe(), CFG))
    assert "tonemap" not in value_after(sdr, "-filter_complex")
    assert "-color_trc:v" not in sdr


def test_lean_ladder_rule():
    assert lean_ladder([5000, 2800, 1200, 700, 400], 0.25) == [True] * 5
    # slides: 480p costs 90 % of 720p, so it goes; 360p is compared with 720p, the kept one
    assert lean_ladder([900, 600, 540, 400, 390], 0.25) == [True, True, False, True, False]
    assert lean_ladder([900, 899, 898], 0.0) == [True, True, True]
    assert lean_ladder([100], 0.9) == [True]


def test_master_lists_the_audio_group_and_adds_its_bandwidth():
    peak, average = with_audio(500_000, 400_000, [6.0, 6.0, 2.0], [96_000, 96_000, 30_000], 6)
    assert (peak, average) == (500_000 + 128_000, 400_000 + 126_858)
    variant = Variant("360p/index.m3u8", peak, average, "avc1.64001e,mp4a.40.2", (640, 360), 30.0)
    text = render_master([variant], 7, AudioRendition("audio/index.m3u8", "audio"))
    assert ('#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Audio",DEFAULT=YES,'
            'AUTOSELECT=YES,CHANNELS="2",URI="audio/index.m3u8"') in text.splitlines()
    assert 'AUDIO="audio"' in text


def test_config_file_documents_and_validates_the_new_keys(tmp_path):
    """The shipped [transcode] section (read alone: other sections belong to other work)
    states exactly the defaults, and bad values of the new keys are refused."""
    text = (Path(__file__).resolve().parents[2] / "config.toml").read_text(encoding="utf-8")
    start = text.index("[transcode]\n")
    end = text.find("\n[", start + 1)
    shipped = tmp_path / "transcode.toml"
    shipped.write_text(text[start:end if end > 0 else None], encoding="utf-8")
    assert load_settings(shipped, env={}).transcode == TranscodeConfig()
    bad = tmp_path / "bad.toml"
    for line in ('rate_control = "vbr"', "loudness_true_peak = 1.0", 'hdr_tonemap = "x"',
                 "rung_min_saving = 1.0",
                 'ladder = [{ name = "a", height = 240, video_kbps = 300, quality = 60 }]'):
        bad.write_text(f"[transcode]\n{line}\n", encoding="utf-8")
        with pytest.raises(ConfigError):
            load_settings(bad, env={})
