"""Build ffmpeg/ffprobe argv lists; nothing here runs a process or touches the disk.

Every command starts from ``input_args`` so the safety options an untrusted upload needs
(protocol and demuxer allow-lists, capped probing, a forced demuxer, a ``file:`` URL that can
never be read as an option or as another protocol) cannot be forgotten by one caller.
Outputs are relative paths: ffmpeg runs with the scratch directory as its working directory,
so nothing about the caller's directory name (``%`` signs, spaces) reaches a muxer pattern.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Sequence

from models.config import TranscodeConfig

if TYPE_CHECKING:  # imported for annotations only: keeps this module free of cycles
    from transcoder.extras import PosterPlan, StoryboardPlan
    from transcoder.ladder import RenditionPlan
    from transcoder.probe import ProbeResult

# Demuxers an upload may use, by the first name ffprobe reports, with a label for messages.
# Everything else (hls, concat, dash, image2, tty, subtitle and playlist demuxers...) is refused
# by ffmpeg itself through -format_whitelist, before it can open any other file.
ALLOWED_DEMUXERS = MappingProxyType({
    "mov": "MP4/MOV",
    "matroska": "MKV/WebM",
    "avi": "AVI",
    "mpegts": "MPEG-TS",
    "flv": "FLV",
    "ogg": "Ogg",
    "mp3": "MP3",
    "wav": "WAV",
})
PROBE_SIZE_BYTES = 50_000_000
ANALYZE_DURATION_US = 20_000_000
STATS_PERIOD_S = 1.0

MEDIA_PLAYLIST = "index.m3u8"
IFRAME_PLAYLIST = "iframes.m3u8"
MASTER_PLAYLIST = "master.m3u8"
INIT_SEGMENT = "init.mp4"
MAX_MUXING_QUEUE = 4096


def source_url(path: Path) -> str:
    """``file:/abs/path``: not an option (no leading ``-``), not another protocol (``a:b``)."""
    return "file:" + str(Path(path).absolute())


def input_args(source: Path, demuxer: str | None) -> list[str]:
    """Options that must precede every ``-i`` of an untrusted file."""
    args = [
        "-protocol_whitelist", "file",
        "-format_whitelist", ",".join(ALLOWED_DEMUXERS),
        "-probesize", str(PROBE_SIZE_BYTES),
        "-analyzeduration", str(ANALYZE_DURATION_US),
    ]
    if demuxer is not None:
        if demuxer not in ALLOWED_DEMUXERS:
            raise ValueError(f"demuxer {demuxer!r} is not allowed")
        args += ["-f", demuxer]
    return args + ["-i", source_url(source)]


def probe_command(cfg: TranscodeConfig, source: Path) -> list[str]:
    return [cfg.ffprobe, "-hide_banner", "-v", "error", *input_args(source, None),
            "-show_format", "-show_streams", "-of", "json"]


def duration_scan_command(cfg: TranscodeConfig, source: Path, demuxer: str) -> list[str]:
    """Read every packet timestamp: the fallback when a container has no duration
    (browser MediaRecorder WebM files) — demuxing only, nothing is decoded."""
    return [cfg.ffprobe, "-hide_banner", "-v", "error", *input_args(source, demuxer),
            "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0"]


def packet_scan_command(cfg: TranscodeConfig, container: str) -> list[str]:
    """List video packets of our own output, fed on stdin as init + segments concatenated,
    so byte positions are offsets into that concatenation."""
    demuxer = {"fmp4": "mp4", "ts": "mpegts"}[container]
    return [cfg.ffprobe, "-hide_banner", "-v", "error",
            "-protocol_whitelist", "pipe", "-format_whitelist", "mov,mpegts", "-f", demuxer,
            "-i", "pipe:0", "-select_streams", "v:0",
            "-show_entries", "packet=pts_time,pos,size,flags:stream=width,height",
            "-of", "compact"]


def _common_head(cfg: TranscodeConfig, probe: ProbeResult) -> list[str]:
    return [cfg.ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            "-nostats", "-progress", "pipe:1", "-stats_period", str(STATS_PERIOD_S),
            *input_args(probe.path, probe.demuxer)]


def _rung_filters(plan: RenditionPlan) -> str:
    """Frames for one rung: CFR at the plan's rate, exact even size with square pixels (the
    plan already kept the display aspect), 8-bit 4:2:0."""
    return (f"fps={plan.fps.numerator}/{plan.fps.denominator},"
            f"scale={plan.width}:{plan.height},setsar=1,format=yuv420p")


def _filter_graph(probe: ProbeResult, plans: Sequence[RenditionPlan],
                  poster: PosterPlan | None, storyboard: StoryboardPlan | None) -> str:
    """Decode once, then a cascade: each rung is scaled from the rung above it (plans are
    largest first, and rates only go down), so every scaler reads the smallest picture it
    can. The poster taps the top rung, the storyboard the bottom one."""
    assert probe.video is not None
    parts = []
    head = f"[0:{probe.video.index}]" + ("bwdif=mode=send_frame," if probe.video.interlaced
                                         else "")
    last = len(plans) - 1
    for i, plan in enumerate(plans):
        taps = [f"v{i}"] + ([f"c{i}"] if i < last else [])
        taps += ["ps"] if i == 0 and poster else []
        taps += ["sb"] if i == last and storyboard else []
        chain = head + _rung_filters(plan)
        if len(taps) > 1:
            chain += f",split={len(taps)}"
        parts.append(chain + "".join(f"[{t}]" for t in taps))
        head = f"[c{i}]"
    if poster is not None:
        parts.append(f"[ps]{poster.filter()}[poster]")
    if storyboard is not None:
        parts.append(f"[sb]{storyboard.filter()}[storyboard]")
    return ";".join(parts)


def _max_gop_frames(plan: RenditionPlan, cfg: TranscodeConfig) -> int:
    """x264's own keyframe limit, one frame past the forced interval: x264 then never places
    a keyframe of its own (which would differ between rungs of different frame rates), yet a
    forced one missing for any reason is still bounded."""
    return math.ceil(plan.fps * cfg.keyframe_interval) + 1


def _encode_args(cfg: TranscodeConfig, plans: Sequence[RenditionPlan], audio: bool) -> list[str]:
    """Per-stream rate control (capped VBR) and aligned IDRs: a keyframe is forced on the
    same timestamps in every rung, and scene-cut keyframes are switched off so x264 never
    adds one of its own between them."""
    args: list[str] = []
    video = [p for p in plans if p.has_video]
    if video:
        args += ["-c:v", "libx264", "-profile:v", "high", "-preset", cfg.preset,
                 "-force_key_frames:v", f"expr:gte(t,n_forced*{cfg.keyframe_interval})",
                 "-sc_threshold:v", "0", "-forced-idr:v", "1"]
        for i, p in enumerate(video):
            args += [f"-b:v:{i}", f"{p.video_kbps}k", f"-maxrate:v:{i}", f"{p.maxrate_kbps}k",
                     f"-bufsize:v:{i}", f"{p.bufsize_kbps}k",
                     f"-g:v:{i}", str(_max_gop_frames(p, cfg))]
    if audio:
        args += ["-c:a", "aac", "-profile:a", "aac_low", "-ar", "48000", "-ac", "2"]
        for i, p in enumerate(plans):
            args += [f"-b:a:{i}", f"{p.audio_kbps}k"]
    if cfg.threads > 0:
        args += ["-threads", str(cfg.threads)]
    return args + ["-map_metadata", "-1", "-map_chapters", "-1",
                   "-max_muxing_queue_size", str(MAX_MUXING_QUEUE)]


def segment_pattern(cfg: TranscodeConfig) -> str:
    return "seg_%05d.ts" if cfg.segment_format == "ts" else "seg_%05d.m4s"


def _hls_args(cfg: TranscodeConfig) -> list[str]:
    args = ["-f", "hls", "-hls_time", str(cfg.segment_duration), "-hls_playlist_type", "vod",
            "-hls_list_size", "0", "-hls_flags", "independent_segments+temp_file"]
    if cfg.segment_format == "ts":
        return args + ["-hls_segment_type", "mpegts"]
    return args + ["-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", INIT_SEGMENT]


def _hls_output(cfg: TranscodeConfig, plans: Sequence[RenditionPlan], audio: bool) -> list[str]:
    if len(plans) == 1:
        name = plans[0].name
        return [*_hls_args(cfg), "-hls_segment_filename", f"{name}/{segment_pattern(cfg)}",
                f"{name}/{MEDIA_PLAYLIST}"]
    streams = []
    for i, p in enumerate(plans):
        parts = ([f"v:{i}"] if p.has_video else []) + ([f"a:{i}"] if audio else [])
        streams.append(",".join(parts + [f"name:{p.name}"]))
    return [*_hls_args(cfg), "-hls_segment_filename", f"%v/{segment_pattern(cfg)}",
            "-var_stream_map", " ".join(streams), f"%v/{MEDIA_PLAYLIST}"]


def _image_output(label: str, filename: str, quality: int) -> list[str]:
    return ["-map", f"[{label}]", "-frames:v", "1", "-update", "1", "-c:v", "mjpeg",
            "-q:v", str(quality), "-map_metadata", "-1", "-f", "image2", filename]


def ladder_command(cfg: TranscodeConfig, probe: ProbeResult, plans: Sequence[RenditionPlan],
                   poster: PosterPlan | None = None,
                   storyboard: StoryboardPlan | None = None) -> list[str]:
    """One ffmpeg that decodes once and writes every rendition (plus poster and storyboard
    sprite when given). Run it with the scratch directory as working directory."""
    audio = probe.audio is not None
    cmd = _common_head(cfg, probe)
    if probe.video is None:
        if len(plans) != 1:
            raise ValueError("an audio-only source gets exactly one rendition")
        return cmd + ["-map", f"0:{probe.audio.index}", "-vn",
                      *_encode_args(cfg, plans, audio=True), *_hls_output(cfg, plans, True)]
    cmd += ["-filter_complex", _filter_graph(probe, plans, poster, storyboard)]
    for i in range(len(plans)):
        cmd += ["-map", f"[v{i}]"]
        if audio:
            cmd += ["-map", f"0:{probe.audio.index}"]
    cmd += [*_encode_args(cfg, plans, audio), *_hls_output(cfg, plans, audio)]
    if poster is not None:
        cmd += _image_output("poster", poster.filename, 3)
    if storyboard is not None:
        cmd += _image_output("storyboard", storyboard.filename, 5)
    return cmd


def rendition_commands(cfg: TranscodeConfig, probe: ProbeResult,
                       plans: Sequence[RenditionPlan]) -> list[list[str]]:
    """The naive alternative, one ffmpeg (one full decode) per rendition; the benchmark
    runs it to show what the shared decode saves."""
    return [ladder_command(cfg, probe, [p]) for p in plans]
