"""Probing real files: what is accepted, what is refused and why, and that a refused
playlist never gets to open the file it points at."""

import os
import random
import subprocess
from fractions import Fraction

import pytest

from models.config import TranscodeConfig
from transcoder import probe as probe_module
from transcoder.errors import InputRejected
from transcoder.probe import probe, sniff_text

CFG = TranscodeConfig()


def hls_playlist(path, target):
    path.write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n"
                    f"file:{target}\n#EXT-X-ENDLIST\n")
    return path


def concat_script(path, target):
    path.write_text(f"ffconcat version 1.0\nfile '{target}'\n")
    return path


def test_video_with_audio(landscape):
    info = probe(landscape, CFG)
    assert (info.demuxer, info.container) == ("mov", "MP4/MOV")
    assert (info.width, info.height) == (640, 360)
    assert info.video.fps == Fraction(30) and not info.video.interlaced
    assert info.audio.codec == "aac" and info.audio.sample_rate == 44100
    assert 3.9 < info.duration < 4.1
    assert info.stream_count == 2 and info.size == landscape.stat().st_size


def test_rotation_gives_display_size(rotated):
    info = probe(rotated, CFG)
    assert (info.width, info.height) == (360, 640)


def test_missing_duration_is_measured_from_packets(no_duration):
    info = probe(no_duration, CFG)
    assert info.demuxer == "matroska" and 1.9 < info.duration < 2.1


def test_other_containers(odd_size, no_audio, audio_only, transport_stream):
    assert probe(odd_size, CFG).demuxer == "matroska"
    silent = probe(no_audio, CFG)
    assert silent.demuxer == "avi" and silent.audio is None and silent.video.codec == "mpeg4"
    voice = probe(audio_only, CFG)
    assert voice.video is None and voice.audio.channels == 1
    assert probe(transport_stream, CFG).demuxer == "mpegts"


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, words", [
    (lambda d, t: hls_playlist(d / "lesson.mp4", t), "HLS playlist"),
    (lambda d, t: concat_script(d / "lesson.mp4", t), "concat script"),
    (lambda d, t: write(d / "notes.mp4", b"Week 3 notes\nbring a calculator\n"), "text file"),
    (lambda d, t: write(d / "empty.mp4", b""), "empty"),
    (lambda d, t: write(d / "noise.mp4", random.Random(7).randbytes(3000) + b"\x00"),
     "not a video"),
])
def test_non_videos_are_refused_with_a_reason(tmp_path, transport_stream, make, words):
    with pytest.raises(InputRejected) as caught:
        probe(make(tmp_path, transport_stream), CFG)
    assert words in caught.value.reason
    assert caught.value.permanent


def test_truncated_mp4_is_refused(truncated):
    with pytest.raises(InputRejected, match="incomplete"):
        probe(truncated, CFG)


def test_image_is_refused_by_the_demuxer_allow_list(tmp_path):
    image = tmp_path / "photo.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x64",
                    "-frames:v", "1", "-f", "image2", "-c:v", "png", str(image)],
                   check=True, timeout=60)
    with pytest.raises(InputRejected, match="an image"):
        probe(image, CFG)


@pytest.mark.parametrize("make, words", [(hls_playlist, "HLS playlist"),
                                         (concat_script, "concat script")])
def test_ffprobe_itself_refuses_playlists_without_opening_their_target(
        tmp_path, transport_stream, monkeypatch, make, words):
    """Skip the Python text sniffing: ffprobe's demuxer allow-list must stop the playlist,
    and the target's access time proves it was never opened."""
    target = tmp_path / "secret.ts"
    target.write_bytes(transport_stream.read_bytes())
    hostile = make(tmp_path / "lesson.mp4", target)
    os.utime(target, (0, target.stat().st_mtime))
    # Control: an unprotected ffprobe does read the target, so the atime check can fail.
    subprocess.run(["ffprobe", "-v", "quiet", "-safe", "0", str(hostile)], timeout=60)
    if target.stat().st_atime == 0:  # pragma: no cover - filesystem without atime updates
        pytest.skip("this filesystem does not record access times")
    os.utime(target, (0, target.stat().st_mtime))
    monkeypatch.setattr(probe_module, "sniff_text", lambda head: None)
    with pytest.raises(InputRejected) as caught:
        probe(hostile, CFG)
    assert words in caught.value.reason
    assert target.stat().st_atime == 0


@pytest.mark.parametrize("cfg, words", [
    (TranscodeConfig(max_duration=3.0), "the limit is 0:00:03"),
    (TranscodeConfig(max_width=320, max_height=320), "640x360 pixels"),
    (TranscodeConfig(max_fps=25), "30 frames per second"),
    (TranscodeConfig(max_streams=1), "2 tracks"),
])
def test_limits(landscape, cfg, words):
    with pytest.raises(InputRejected) as caught:
        probe(landscape, cfg)
    assert words in caught.value.reason


def test_portrait_fits_a_landscape_size_limit(portrait):
    assert probe(portrait, TranscodeConfig(max_width=640, max_height=360, max_fps=60)).height == 640


@pytest.mark.parametrize("head, kind", [
    (b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n", "HLS playlist"),
    (b"\xef\xbb\xbf  #EXTM3U\n", "HLS playlist"),
    (b"ffconcat version 1.0\nfile x\n", "concat script"),
    (b"file '/etc/passwd'\n", "concat script"),
    (b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash">', "DASH manifest"),
    ("Notizen f\u00fcr die Stunde\n".encode() * 50, "text file"),
])
def test_text_sniffing(head, kind):
    assert kind in sniff_text(head)


@pytest.mark.parametrize("head", [b"\x00\x00\x00\x20ftypisom", b"\x1aE\xdf\xa3\x9fB\x86\x81",
                                  b"RIFF\x24\x08\x00\x00AVI ", b"OggS\x00\x02", b"G@\x11\x10",
                                  b"FLV\x01\x05\x00\x00\x00\x09", b"ID3\x04\x00\x00"])
def test_binary_containers_are_not_text(head):
    assert sniff_text(head + bytes(range(256))) is None
