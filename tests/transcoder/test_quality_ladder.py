"""Capped-CRF rungs on real ffmpeg output: easy pictures cost far less than the ceiling, hard
ones reach it and stop there; the master's numbers match what was produced (audio group
included); a rung that adds nothing is not published."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from models.config import TranscodeConfig
from transcoder.pipeline import transcode
from tests.support.ffkit import (
    audio_group_of, parse_master, parse_media, remeasure, run, streams,
)

DURATION = 4.0


def generate(path: Path, video: str) -> Path:
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", video,
                "-f", "lavfi", "-i", f"sine=f=330:sample_rate=48000:d={DURATION}",
                "-c:v", "libx264", "-preset", "ultrafast", "-qp", "10", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-shortest", str(path)])
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture(scope="module")
def easy(media) -> Path:
    """A slide: text-like dark bars on white, still."""
    boxes = ",".join(f"drawbox=x=60:y={40 + 40 * i}:w={300 + 37 * i % 200}:h=14:c=0x202060:t=fill"
                     for i in range(7))
    return generate(media / "slide.mp4", f"color=c=white:s=640x360:r=30:d={DURATION},{boxes}")


@pytest.fixture(scope="module")
def hard(media) -> Path:
    """Motion and strong sensor noise: no encoder can make this small."""
    return generate(media / "noisy.mp4",
                    f"testsrc2=s=640x360:r=30:d={DURATION},noise=alls=40:allf=t+u")


def produce(source: Path, out: Path, cfg: TranscodeConfig):
    out.mkdir()
    return transcode(source, out, cfg, timeout=120)


def video_rates(out: Path, rendition: dict) -> tuple[float, float]:
    folder = out / rendition["name"]
    return remeasure(folder, parse_media((folder / "index.m3u8").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def cfg(small_cfg) -> TranscodeConfig:
    return dataclasses.replace(small_cfg, rung_min_saving=0.0)


def test_easy_content_spends_a_fraction_of_the_ceiling(easy, tmp_path, cfg):
    result = produce(easy, tmp_path / "out", cfg)
    for rendition, rung in zip(result.renditions, cfg.ladder):
        _, average = video_rates(tmp_path / "out", rendition)
        assert average < 0.25 * rung.video_kbps * 1000, (rendition["name"], average)


def test_hard_content_reaches_its_ceiling_and_stays_under_it(hard, tmp_path, cfg):
    """x264's VBV guarantee: over any stretch, at most the ceiling plus one buffer (twice
    the ceiling, so on a 4 s clip the average may exceed the ceiling by up to half)."""
    out = tmp_path / "out"
    result = produce(hard, out, cfg)
    for rendition, rung in zip(result.renditions, cfg.ladder):
        peak, average = video_rates(out, rendition)
        ceiling = rung.video_kbps * 1000
        media = parse_media((out / rendition["playlist"]).read_text(encoding="utf-8"))
        seconds = sum(d for d, _, _ in media["segments"])
        assert average >= 0.8 * ceiling, (rendition["name"], average)
        assert average * seconds <= ceiling * seconds + 2 * ceiling, (rendition["name"], average)
        assert peak <= 2 * average


@pytest.mark.parametrize("which", ["easy", "hard"])
def test_declared_bandwidth_within_10_percent_of_video_plus_audio(which, request, tmp_path,
                                                                  cfg):
    out = tmp_path / "out"
    result = produce(request.getfixturevalue(which), out, cfg)
    variants, _, lines = parse_master((out / "master.m3u8").read_text(encoding="utf-8"))
    group = audio_group_of(lines)
    audio_folder = (out / group["URI"]).parent
    audio_peak, audio_average = remeasure(
        audio_folder, parse_media((out / group["URI"]).read_text(encoding="utf-8")))
    assert [s["codec_type"] for s in streams(next(audio_folder.glob("*.mp4")))] == ["audio"]
    assert len(variants) == len(result.renditions) == len(cfg.ladder)
    for attrs, uri in variants:
        assert attrs["AUDIO"] == group["GROUP-ID"]
        rendition = next(r for r in result.renditions if r["playlist"] == uri)
        peak, average = video_rates(out, rendition)
        assert int(attrs["BANDWIDTH"]) == pytest.approx(peak + audio_peak, rel=0.10)
        assert int(attrs["AVERAGE-BANDWIDTH"]) == pytest.approx(average + audio_average,
                                                                rel=0.10)
        folder = out / rendition["name"]
        init = next(folder.glob("*.mp4"))
        assert [s["codec_type"] for s in streams(init)] == ["video"]  # no audio copy per rung


def test_a_rung_that_saves_too_little_is_not_published(easy, tmp_path, cfg):
    """On a slide the 240p saves well under 90 % of the 360p: with that rule it goes."""
    lean = dataclasses.replace(cfg, rung_min_saving=0.9)
    out = tmp_path / "out"
    result = produce(easy, out, lean)
    assert [r["name"] for r in result.renditions] == ["360p"]
    assert not (out / "240p").exists()
    variants, _, _ = parse_master((out / "master.m3u8").read_text(encoding="utf-8"))
    assert [uri for _, uri in variants] == ["360p/index.m3u8"]
