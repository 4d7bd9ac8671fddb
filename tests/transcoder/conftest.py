"""Synthetic clips (generated once per session with ffmpeg lavfi) and small ladders that keep
real transcodes fast on a shared 2-core machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.config import Rung, TranscodeConfig
from tests.support.ffkit import ffmpeg, make_clip

SMALL_LADDER = (Rung("360p", 360, 700, 96), Rung("240p", 240, 400, 64))

if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:  # pragma: no cover
    pytest.skip("ffmpeg/ffprobe are not installed", allow_module_level=True)


def _remuxed(source: Path, path: Path, *options: str) -> Path:
    """``source``'s streams copied unchanged into ``path`` with ``options`` (a display
    matrix, another container, the index first): a new kind of input, the same pictures."""
    ffmpeg("-i", str(source), "-c", "copy", *options, str(path))
    return path


@pytest.fixture(scope="session")
def small_cfg() -> TranscodeConfig:
    """Two rungs, 2 s segments and 1 s IDRs, so a 4 s clip has several segments and
    several keyframes per segment."""
    return TranscodeConfig(ladder=SMALL_LADDER, segment_duration=2, keyframe_interval=1,
                           timeout_min=120)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def landscape(media) -> Path:
    """640x360, 4 s, with a black first quarter second (posters must skip it)."""
    return make_clip(media / "landscape.mp4", duration=4.0, black_until=0.25)


@pytest.fixture(scope="session")
def landscape_720(media) -> Path:
    return make_clip(media / "landscape720.mp4", size="1280x720", duration=2.0)


@pytest.fixture(scope="session")
def portrait(media) -> Path:
    return make_clip(media / "portrait.mov", size="360x640", rate=60, duration=2.0)


@pytest.fixture(scope="session")
def odd_size(media) -> Path:
    return make_clip(media / "odd.mkv", size="321x241", rate=25, duration=2.0)


@pytest.fixture(scope="session")
def no_audio(media) -> Path:
    return make_clip(media / "silent.avi", duration=2.0, audio=False,
                     vcodec=["-c:v", "mpeg4", "-q:v", "5"])


@pytest.fixture(scope="session")
def audio_only(media) -> Path:
    path = media / "voice.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:sample_rate=22050:d=3", "-ac", "1", "-c:a", "aac",
           str(path))
    return path


@pytest.fixture(scope="session")
def rotated(media, landscape) -> Path:
    """A phone-style file: landscape pixels plus a 90 degree display matrix."""
    return _remuxed(landscape, media / "rotated.mp4", "-metadata:s:v:0", "rotate=90")


@pytest.fixture(scope="session")
def no_duration(media) -> Path:
    """Matroska written to a pipe has no duration, like browser MediaRecorder WebM."""
    return make_clip(media / "recorder.mkv", size="320x240", duration=2.0, audio=False,
                     fmt=["-f", "matroska", "-live", "1"])


@pytest.fixture(scope="session")
def long_clip(media) -> Path:
    """Long enough that its transcode is still running when a test stops it."""
    return make_clip(media / "long.mp4", size="640x360", duration=30.0)


@pytest.fixture(scope="session")
def transport_stream(media, landscape) -> Path:
    return _remuxed(landscape, media / "target.ts", "-f", "mpegts")


@pytest.fixture(scope="session")
def truncated(media, landscape) -> Path:
    """An MP4 cut off before its index (moov at the end), as an interrupted upload is."""
    data = landscape.read_bytes()
    path = media / "truncated.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


@pytest.fixture(scope="session")
def truncated_faststart(media, landscape) -> Path:
    """Cut off after its index (moov first): ffprobe is happy, the media data is not there."""
    data = _remuxed(landscape, media / "faststart.mp4", "-movflags", "+faststart").read_bytes()
    path = media / "truncated-faststart.mp4"
    path.write_bytes(data[: len(data) * 4 // 10])
    return path


@pytest.fixture(scope="session")
def sixty_fps(media) -> Path:
    """480 lines at 60 fps: its 480p rung keeps 60 fps, its 240p rung drops to 30."""
    return make_clip(media / "sixty.mp4", size="854x480", rate=60, duration=2.0, audio=False)
