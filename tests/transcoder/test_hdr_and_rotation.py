"""Phone sources: HLG and PQ 10-bit HEVC come out as SDR BT.709 (tagged so) that looks like
an SDR rendering of the same scene, neither washed out nor clipped; a rotated clip comes out
upright."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from models.config import TranscodeConfig
from transcoder.pipeline import transcode
from tests.support.ffkit import TIMEOUT, run, streams

PATTERN = "testsrc2=s=640x360:r=30:d=2"
TRANSFERS = {"hlg": "arib-std-b67", "pq": "smpte2084"}


@pytest.fixture(scope="module")
def sdr(media) -> Path:
    path = media / "pattern-sdr.mkv"
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                PATTERN, "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(path)])
    assert proc.returncode == 0, proc.stderr
    return path


def hdr_clip(path: Path, transfer: str) -> Path:
    """The same pattern as an iPhone would store it: BT.2020, HLG or PQ, HEVC Main 10, with
    SDR white placed at the 203 nits BT.2408 recommends."""
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", PATTERN,
                "-vf", f"zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t={transfer}:m=bt2020nc:"
                       f"p=bt2020:r=tv:npl=203,format=yuv420p10le",
                "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                f"log-level=error:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc",
                "-tag:v", "hvc1", str(path)])
    assert proc.returncode == 0, proc.stderr
    return path


def picture_stats(path: Path) -> dict[str, float]:
    """Mean luma, mean saturation and the brightest luma over all frames (signalstats)."""
    proc = run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-vf",
                "format=yuv420p,signalstats,metadata=print:file=-", "-f", "null", "-"])
    assert proc.returncode == 0, proc.stderr
    values: dict[str, list[float]] = {}
    for key, value in re.findall(r"lavfi\.signalstats\.(YAVG|SATAVG|YMAX)=([\d.]+)", proc.stdout):
        values.setdefault(key, []).append(float(value))
    return {"Y": sum(values["YAVG"]) / len(values["YAVG"]),
            "SAT": sum(values["SATAVG"]) / len(values["SATAVG"]), "YMAX": max(values["YMAX"])}


def joined_rung(out: Path, name: str) -> Path:
    folder = out / name
    text = (folder / "index.m3u8").read_text(encoding="utf-8")
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text).group(1)
    parts = [init] + [line for line in text.splitlines() if line and not line.startswith("#")]
    joined = out / f"{name}-joined.mp4"
    joined.write_bytes(b"".join((folder / p).read_bytes() for p in parts))
    return joined


@pytest.fixture(scope="module")
def cfg(small_cfg) -> TranscodeConfig:
    return dataclasses.replace(small_cfg, ladder=small_cfg.ladder[:1])


@pytest.fixture(scope="module")
def sdr_rendition(sdr, tmp_path_factory, cfg) -> dict[str, float]:
    """The SDR pattern through the same ladder: same scaler, same encoder overshoot."""
    out = tmp_path_factory.mktemp("sdr-out")
    result = transcode(sdr, out, cfg, timeout=120)
    return picture_stats(joined_rung(out, result.renditions[0]["name"]))


@pytest.mark.parametrize("kind", sorted(TRANSFERS))
def test_hdr_comes_out_bt709_sdr_like_the_sdr_rendering(kind, media, sdr_rendition, tmp_path,
                                                        cfg):
    source = hdr_clip(media / f"pattern-{kind}.mp4", TRANSFERS[kind])
    assert streams(source)[0]["color_transfer"] == TRANSFERS[kind]
    out = tmp_path / "out"
    out.mkdir()
    result = transcode(source, out, cfg, timeout=120)
    joined = joined_rung(out, result.renditions[0]["name"])
    video = streams(joined)[0]
    assert (video["color_transfer"], video["color_primaries"], video["color_space"]) == (
        "bt709", "bt709", "bt709")
    assert video["pix_fmt"] == "yuv420p" and video["color_range"] == "tv"
    got, want = picture_stats(joined), sdr_rendition
    assert got["Y"] == pytest.approx(want["Y"], rel=0.08)      # not darkened or brightened
    assert got["SAT"] >= 0.85 * want["SAT"]                     # not washed out (BT.2020 as 709)
    assert got["SAT"] <= 1.1 * want["SAT"]
    assert got["YMAX"] <= want["YMAX"] + 20 and got["YMAX"] < 250  # highlights not clipped


def frame_grid(path: Path) -> bytes:
    """The first frame as it is meant to be seen (ffmpeg applies the display matrix), 4x4."""
    proc = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-vf",
                           "scale=4:4:flags=area,format=gray", "-f", "rawvideo", "pipe:1"],
                          capture_output=True, timeout=TIMEOUT, check=True)
    return proc.stdout


def test_rotated_phone_clip_comes_out_upright(media, tmp_path, cfg):
    """White on the left third of the stored pixels; shown rotated 90 degrees it is a
    white band across the top or bottom, and the rendition must look the same."""
    stored = media / "marker-landscape.mp4"
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                "color=c=black:s=640x360:r=30:d=2,drawbox=x=0:y=0:w=213:h=360:c=white:t=fill",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(stored)])
    assert proc.returncode == 0, proc.stderr
    phone = media / "marker-phone.mp4"
    proc = run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(stored), "-c",
                "copy", "-metadata:s:v:0", "rotate=90", str(phone)])
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    out.mkdir()
    result = transcode(phone, out, cfg, timeout=120)
    rendition = result.renditions[0]
    assert rendition["height"] > rendition["width"]
    joined = joined_rung(out, rendition["name"])
    assert not [s for s in streams(joined) if (s.get("side_data_list") or [])]  # no 2nd turn
    shown, produced = frame_grid(phone), frame_grid(joined)
    assert shown != frame_grid(stored)  # the display matrix matters for this picture
    assert max(abs(a - b) for a, b in zip(shown, produced)) < 40
