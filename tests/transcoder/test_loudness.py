"""Speech you can hear: quiet recordings come out at the loudness target (measured by ffmpeg's
ebur128, independently of loudnorm), mono and one-channel recordings play in both ears."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from models.config import TranscodeConfig
from transcoder.pipeline import transcode
from tests.support.ffkit import run

DURATION = 6.0
# Voiced-speech-like: harmonics of ~120 Hz, 4 syllables a second, pauses.
SPEECH = ("(sin(2*PI*(120+20*sin(2*PI*0.7*t))*t)+0.6*sin(4*PI*120*t)+0.3*sin(10*PI*120*t))"
          "*(0.5+0.5*sin(2*PI*4*t))*gt(sin(2*PI*0.4*t)+0.6,0)")


def lecture(path: Path, pan: str, gain_db: float) -> Path:
    """A 320x180 slide with speech at about -30 LUFS, laid out by ``pan``."""
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", f"color=c=white:s=320x180:r=15:d={DURATION}",
                "-f", "lavfi", "-i", f"aevalsrc='{SPEECH}':s=48000:d={DURATION}",
                "-filter_complex", f"[1:a]volume={gain_db}dB,{pan}[a]", "-map", "0:v",
                "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                "-b:a", "128k", "-shortest", str(path)])
    assert proc.returncode == 0, proc.stderr
    return path


def ebur128(path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) of the first audio stream."""
    proc = run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0",
                "-af", "ebur128=peak=true", "-f", "null", "-"])
    assert proc.returncode == 0, proc.stderr
    summary = proc.stderr[proc.stderr.rfind("Summary:"):]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    return integrated, peak


def channel_rms(path: Path) -> list[float]:
    proc = run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0", "-af",
                "astats=measure_perchannel=RMS_level:measure_overall=none", "-f", "null", "-"])
    assert proc.returncode == 0, proc.stderr
    return [float(v) for v in re.findall(r"RMS level dB: (-?[\d.]+|-inf)", proc.stderr)]


def audio_rendition(out: Path) -> Path:
    """The shared audio group, joined into one file in playlist order."""
    folder = out / "audio"
    text = (folder / "index.m3u8").read_text(encoding="utf-8")
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text).group(1)
    parts = [init] + [line for line in text.splitlines() if line and not line.startswith("#")]
    joined = out / "audio-joined.mp4"
    joined.write_bytes(b"".join((folder / p).read_bytes() for p in parts))
    return joined


@pytest.fixture(scope="module")
def quiet_mono(media) -> Path:
    return lecture(media / "quiet-mono.mp4", "aformat=channel_layouts=mono", -22.0)


@pytest.fixture(scope="module")
def one_ear(media) -> Path:
    """A stereo file whose right channel is silent: a laptop microphone on one input."""
    return lecture(media / "one-ear.mp4", "pan=stereo|c0=c0|c1=0*c0", -22.0)


@pytest.fixture(scope="module")
def cfg(small_cfg) -> TranscodeConfig:
    return dataclasses.replace(small_cfg, ladder=small_cfg.ladder[1:])


def test_quiet_speech_reaches_the_loudness_target(quiet_mono, tmp_path, cfg):
    source_lufs, _ = ebur128(quiet_mono)
    assert source_lufs < -26  # the fixture really is quiet
    out = tmp_path / "out"
    out.mkdir()
    transcode(quiet_mono, out, cfg, timeout=120)
    integrated, peak = ebur128(audio_rendition(out))
    assert integrated == pytest.approx(cfg.loudness_target, abs=1.0)
    assert peak <= cfg.loudness_true_peak + 0.2  # ebur128 measures at 4x, after AAC


def test_mono_plays_in_both_ears(quiet_mono, tmp_path, cfg):
    out = tmp_path / "out"
    out.mkdir()
    transcode(quiet_mono, out, cfg, timeout=120)
    left, right = channel_rms(audio_rendition(out))
    assert left == pytest.approx(right, abs=0.5) and left > -40


def test_a_dead_channel_is_replaced_by_the_live_one(one_ear, tmp_path, cfg):
    assert channel_rms(one_ear)[1] == float("-inf") or channel_rms(one_ear)[1] < -80
    out = tmp_path / "out"
    out.mkdir()
    transcode(one_ear, out, cfg, timeout=120)
    joined = audio_rendition(out)
    left, right = channel_rms(joined)
    assert left == pytest.approx(right, abs=0.5) and left > -40
    assert ebur128(joined)[0] == pytest.approx(cfg.loudness_target, abs=1.0)


def test_loudness_off_leaves_the_level_alone(quiet_mono, tmp_path, cfg):
    """Only the copy to both ears changes it: R128 sums the channels, so +3 LU."""
    out = tmp_path / "out"
    out.mkdir()
    transcode(quiet_mono, out, dataclasses.replace(cfg, loudness=False), timeout=120)
    source_lufs, _ = ebur128(quiet_mono)
    assert ebur128(audio_rendition(out))[0] == pytest.approx(source_lufs + 3.0, abs=1.0)


@pytest.mark.parametrize("integrated, peak, lra, uses", [
    (-30.0, -20.0, 5.0, "volume=14.00dB"),   # quiet speech: one gain, peaks stay below -1 dBTP
    (-26.98, -21.7, 0.0, "volume=10.98dB"),  # a steady signal: 0 LU is a measurement
    (-30.0, -6.0, 5.0, "loudnorm="),         # +14 dB would clip the peaks: the limiter
    (-30.0, -20.0, 15.0, "loudnorm="),       # wider than the target range: loudnorm decides
])
def test_one_gain_when_the_peaks_allow_it_else_loudnorm(cfg, integrated, peak, lra, uses) -> None:
    from transcoder.loudness import AudioPlan, Channels, Loudness
    cfg = dataclasses.replace(cfg, loudness_target=-16.0, loudness_true_peak=-1.0, loudness_range=11.0)
    chain = AudioPlan(Channels.STEREO, Loudness(integrated, peak, lra, integrated - 10, 0.0)).filter(cfg)
    assert uses in chain and chain.endswith("aresample=48000")
    assert ("loudnorm" in chain) != uses.startswith("volume")
