"""Made-up probe results and argv readers for the pure transcoder tests (ladder, commands,
posters): what ffprobe would have said about a file that does not need to exist."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from tests.support.filtergraph import Graph
from transcoder.probe import AudioInfo, ProbeResult, VideoInfo


def fake_probe(width: int | None = 1920, height: int | None = 1080, *, fps: float | Fraction = 30,
               duration: float = 30.0, audio: bool = True, channels: int = 2, interlaced: bool = False,
               transfer: str | None = None, path: str = "/up/load.mp4") -> ProbeResult:
    """A probe of an MP4 with H.264 video (HEVC BT.2020 when ``transfer`` names an HDR curve)
    and AAC audio; ``width=None`` means no video stream."""
    video = None
    if width is not None and height is not None:
        hdr = transfer is not None
        video = VideoInfo(0, "hevc" if hdr else "h264", width, height, Fraction(fps), interlaced, None,
                          color_transfer=transfer, color_primaries="bt2020" if hdr else None,
                          color_space="bt2020nc" if hdr else None)
    return ProbeResult(Path(path), "mov", "MP4/MOV", duration, 1000, 2, video,
                       AudioInfo(1, "aac", channels, 48000) if audio else None)


def value_after(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def graph_of(argv: list[str]) -> Graph:
    """The command's ``-filter_complex``, parsed and checked for what ffmpeg itself would refuse."""
    graph = Graph.parse(value_after(argv, "-filter_complex"))
    graph.check()
    return graph


def values_after(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]
