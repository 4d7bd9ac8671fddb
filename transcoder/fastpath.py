"""The fast path: may this upload be published by stream copy, and how is its first rendition made?

Most lecture recordings (OBS, Zoom, screen recorders, phones in compatibility mode) are already
H.264 8-bit 4:2:0 with regular keyframes. Packaging such a file into HLS by stream copy takes
seconds (no decode, no encode), so the video is playable almost at once; when it also fits the
ladder's top rung it *is* that rung and the most expensive encode of the ladder is skipped.

Everything else (HEVC, VP9/AV1, ProRes, 10-bit, HDR, interlaced, rotated, over the limits, long
keyframe gaps, offset start times) gets a quick first rung instead: one low rendition at a fast
preset (``[transcode] first_rung`` / ``first_rung_preset``). The verdict is one ``Verdict`` with
a reason a person can read: it is logged and shown in the media JSON.

The judgement needs one ffprobe of the streams (the job's probe) and the video packets
(``scan_source``): keyframe positions, GOP sizes and the average bitrate come from packet flags
and sizes, read from an MP4's sample tables (``mp4index``) or, for other files, by one
demux-only pass; nothing is decoded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

from models.config import TranscodeConfig
from transcoder import mp4index
from transcoder.errors import InputRejected
from transcoder.ffmpeg import INIT_SEGMENT, MEDIA_PLAYLIST, input_args, ladder_command
from transcoder.ladder import RenditionPlan, plan_ladder
from transcoder.probe import ProbeResult, run_tool, tool_limits

COPY_PROFILES = ("Baseline", "Constrained Baseline", "Main", "High")
COPY_PIX_FMTS = ("yuv420p", "yuvj420p")
COPY_CONTAINERS = ("mov", "matroska")      # demuxers whose AAC needs no bitstream filter
HDR_PRIMARIES = ("bt2020",)
MIN_FPS = 2.0
AUDIO_COPY_RATES = (44100, 48000)
AUDIO_COPY_LAYOUTS = ("mono", "stereo")
AUDIO_COPY_MAX_BPS = 384_000
AUDIO_ENCODE = ["-c:a", "aac", "-profile:a", "aac_low", "-b:a", "128k", "-ac", "2",
                "-ar", "48000"]
GOP_REGULAR_SLACK = 1.5   # frames: keyframe gaps this close to each other count as one grid
COPY_NAME = "source"       # the copied rendition when it is not the top rung
QUICK_PREFIX = "quick-"    # the first rung of a source that cannot be copied
FIRST_AUDIO = "audio-first"  # the stand-ins' audio group, so the ladder's "audio" never clashes
SCAN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SourcePackets:
    """What the demux-only pass found in the video stream."""

    keyframes: tuple[float, ...]    # pts of key packets, in order
    max_gap: float                  # largest distance between keyframes (or to the end)
    regular_gap: float | None       # the one GOP length, when every GOP has it
    average_bps: int
    peak_gop_bps: int
    first_is_key: bool
    count: int


@dataclass(frozen=True)
class Verdict:
    eligible: bool                  # packaged by stream copy
    reason: str                     # why (or why not), for logs and the media JSON
    top_rung: str | None = None     # the ladder rung the copy replaces, when it fits
    copy_audio: bool = False        # audio copied (else encoded once to AAC-LC)
    keyframe_interval: float | None = None  # the copy's GOP: the grid the other rungs follow

    def as_json(self) -> dict:
        return {"eligible": self.eligible, "reason": self.reason, "top_rung": self.top_rung,
                "copy_audio": self.copy_audio}


def scan_command(cfg: TranscodeConfig, info: ProbeResult) -> list[str]:
    return [cfg.ffprobe, "-hide_banner", "-v", "error", *input_args(info.path, info.demuxer),
            "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags,size",
            "-of", "csv=p=0"]


def scan_source(cfg: TranscodeConfig, info: ProbeResult,
                timeout: float = SCAN_TIMEOUT_S) -> SourcePackets:
    """The video packets' summary: from an MP4's sample tables when they answer
    (``mp4index``, milliseconds), else from a demux-only ffprobe pass over the file."""
    if info.demuxer == "mov" and info.video is not None:
        rows = mp4index.video_rows(info.path, info.video.index)
        if rows:
            return summarise(rows, info.duration)
    rc, out, err = run_tool(scan_command(cfg, info), timeout, limits=tool_limits(cfg, timeout))
    if rc != 0:
        raise InputRejected("The video is damaged: its frames could not be listed.", detail=err)
    rows = []
    for line in out.splitlines():
        parts = line.split(",")
        if len(parts) < 3:
            continue
        try:
            pts, size = float(parts[0]), int(parts[1])
        except ValueError:
            continue  # packets without a timestamp
        rows.append((pts, size, "K" in parts[2]))
    return summarise(rows, info.duration)


def summarise(rows: Sequence[tuple[float, int, bool]], duration: float) -> SourcePackets:
    """Keyframe grid and bitrates from (pts, size, key) packet rows (pure: tested alone)."""
    if not rows:
        return SourcePackets((), math.inf, None, 0, 0, False, 0)
    first_is_key = rows[0][2]
    ordered = sorted(rows)
    start = ordered[0][0]
    end = max(start + duration, ordered[-1][0])
    keys = [pts for pts, _, key in ordered if key]
    bounds = keys + [end]
    gaps = [b - a for a, b in zip(bounds, bounds[1:]) if b > a]
    max_gap = max(gaps, default=math.inf) if keys else math.inf
    total = sum(size for _, size, _ in ordered)
    seconds = max(end - start, 1e-3)
    peak = 0.0
    if keys:
        sizes = [0] * len(keys)
        k = 0
        for pts, size, _ in ordered:
            while k + 1 < len(keys) and pts >= keys[k + 1]:
                k += 1
            if pts >= keys[0]:
                sizes[k] += size
        for i, size in enumerate(sizes):
            span = bounds[i + 1] - bounds[i]
            if span > 0 and (i + 1 < len(keys) or span >= 1.0):  # a short last GOP says little
                peak = max(peak, size * 8 / span)
    frame = seconds / max(len(ordered), 1)
    inner = gaps[:-1] if len(gaps) > 1 else gaps
    regular = None
    if inner and max(inner) - min(inner) <= GOP_REGULAR_SLACK * frame:
        regular = round(sum(inner) / len(inner), 3)
    return SourcePackets(tuple(keys), max_gap, regular, math.ceil(total * 8 / seconds),
                         math.ceil(peak), first_is_key, len(ordered))


def assess(info: ProbeResult, packets: SourcePackets | None, cfg: TranscodeConfig) -> Verdict:
    """The fast path's decision for this source, with its reason."""
    if not cfg.fast_path:
        return Verdict(False, "the fast path is switched off ([transcode] fast_path = false)")
    v = info.video
    if v is None:
        return Verdict(False, "audio only: there is no video to copy")
    refusal = stream_refusal(info, cfg)
    if refusal is None and packets is not None:
        refusal = _packet_refusal(packets, cfg)
    if refusal is not None:
        return Verdict(False, refusal)
    assert packets is not None
    copy_audio = audio_copyable(info)
    top = _fits_top(info, packets, cfg)
    sound = "audio copied" if copy_audio else ("audio encoded once to AAC"
                                               if info.audio is not None else "no audio")
    if top is not None:
        return Verdict(True, f"H.264 {v.profile} copied as the {top} rung ({sound})", top,
                       copy_audio, packets.regular_gap)
    return Verdict(True, f"H.264 {v.profile} copied as a first rendition; "
                         f"{_why_not_top(info, packets, cfg)} ({sound})", None, copy_audio)


def stream_refusal(info: ProbeResult, cfg: TranscodeConfig) -> str | None:
    """Why the streams alone (the probe, before any packet is listed) rule the copy out, or
    None: then only the packet scan can still refuse, and the copy may start beside it."""
    v = info.video
    assert v is not None
    if v.codec != "h264":
        return f"the video is {v.codec}, not H.264: a quick first rung is encoded"
    if v.pix_fmt not in COPY_PIX_FMTS or (v.bits or 8) != 8:
        return f"the picture is {v.pix_fmt or 'unknown'} ({v.bits or '?'}-bit), not 8-bit 4:2:0"
    if v.profile not in COPY_PROFILES:
        return f"H.264 profile {v.profile or 'unknown'} cannot be copied"
    if v.hdr or (v.color_primaries or "") in HDR_PRIMARIES:
        return "the video is HDR / BT.2020: it is tone-mapped, not copied"
    if v.interlaced:
        return "the video is interlaced: it is deinterlaced, not copied"
    if v.rotation % 360:
        return (f"the video is stored rotated ({v.rotation}°): a stream copy to HLS drops the "
                "rotation and would play sideways")
    if v.level is not None and v.level > cfg.fast_path_max_level:
        return f"H.264 level {v.level / 10:g} is above {cfg.fast_path_max_level / 10:g}"
    fps = float(v.fps)
    if not MIN_FPS <= fps <= cfg.fast_path_max_fps:
        return f"{fps:.1f} frames per second is outside {MIN_FPS:g}-{cfg.fast_path_max_fps:g}"
    if info.demuxer not in COPY_CONTAINERS:
        return f"the container ({info.container}) is not copied, only MP4/MOV and MKV"
    frame = 1.0 / fps
    vstart = v.start_time or 0.0
    if abs(vstart) > frame + 1e-3:
        return f"the video starts at {vstart:.3f} s, not at 0 (an edit list or offset)"
    if info.audio is not None:
        astart = info.audio.start_time or 0.0
        if abs(astart - vstart) > frame + 1e-3:
            return (f"audio and video start {abs(astart - vstart):.3f} s apart "
                    "(an edit list the copy would not keep in sync)")
    return None


def _packet_refusal(p: SourcePackets, cfg: TranscodeConfig) -> str | None:
    if not p.keyframes or not p.first_is_key:
        return "the video does not start with a keyframe"
    if p.max_gap > cfg.fast_path_max_keyframe_interval:
        return (f"keyframes are up to {p.max_gap:.1f} s apart (at most "
                f"{cfg.fast_path_max_keyframe_interval:g} s): segments would be too long")
    if p.average_bps > cfg.fast_path_max_kbps * 1000:
        return (f"the video averages {p.average_bps / 1e6:.1f} Mbit/s (at most "
                f"{cfg.fast_path_max_kbps / 1000:g})")
    if p.peak_gop_bps > cfg.fast_path_max_gop_kbps * 1000:
        return (f"the video peaks at {p.peak_gop_bps / 1e6:.1f} Mbit/s over a GOP (at most "
                f"{cfg.fast_path_max_gop_kbps / 1000:g})")
    return None


def audio_copyable(info: ProbeResult) -> bool:
    a = info.audio
    return (a is not None and a.codec == "aac" and a.profile == "LC" and 1 <= a.channels <= 2
            and a.channel_layout in AUDIO_COPY_LAYOUTS and a.sample_rate in AUDIO_COPY_RATES
            and a.bit_rate is not None and a.bit_rate <= AUDIO_COPY_MAX_BPS)


def _top_plan(info: ProbeResult, cfg: TranscodeConfig) -> RenditionPlan:
    return plan_ladder(info, cfg)[0]


def _fits_top(info: ProbeResult, p: SourcePackets, cfg: TranscodeConfig) -> str | None:
    """The top rung's name when the copy can stand in for it: the same picture size, within
    its bitrate ceiling (peak within its VBV buffer), and one regular GOP no longer than a
    segment, so the encoded rungs can put their IDRs on the copy's grid."""
    return _top_plan(info, cfg).name if _why_not_top(info, p, cfg) == "" else None


def _why_not_top(info: ProbeResult, p: SourcePackets, cfg: TranscodeConfig) -> str:
    v = info.video
    assert v is not None
    plan = _top_plan(info, cfg)
    if (plan.width, plan.height) != (v.width, v.height):
        return f"it is {v.width}x{v.height}, the top rung {plan.width}x{plan.height}"
    ceiling = (plan.video_kbps or 0) * 1000
    if p.average_bps > ceiling:
        return f"it averages {p.average_bps // 1000} kbit/s, above the top rung's {ceiling // 1000}"
    if p.peak_gop_bps > 2 * ceiling:
        return f"it peaks at {p.peak_gop_bps // 1000} kbit/s, above twice the top rung's ceiling"
    if p.regular_gap is None:
        return "its keyframes are irregular, so the other rungs cannot share its IDR grid"
    if p.regular_gap > cfg.segment_duration + 0.5:
        return f"its keyframes are {p.regular_gap:g} s apart, longer than a segment"
    if info.video is not None and float(info.video.fps) > float(plan.fps or 0) + 0.01:
        return "its frame rate is above the top rung's"
    return ""


def grid_config(cfg: TranscodeConfig, verdict: Verdict) -> TranscodeConfig:
    """The configuration the remaining rungs are encoded with: the copy's rung left out of
    the ladder and its keyframe interval as everybody's, so IDRs and segment cuts line up."""
    if verdict.top_rung is None:
        return cfg
    ladder = tuple(r for r in cfg.ladder if r.name != verdict.top_rung)
    return dataclasses.replace(cfg, ladder=ladder,
                               keyframe_interval=verdict.keyframe_interval or cfg.keyframe_interval)


# ---------------------------------------------------------------------------------- commands
def _hls(cfg: TranscodeConfig) -> list[str]:
    return ["-f", "hls", "-hls_time", str(cfg.segment_duration), "-hls_playlist_type", "vod",
            "-hls_list_size", "0", "-hls_segment_type", "fmp4",
            "-hls_fmp4_init_filename", INIT_SEGMENT,
            "-hls_flags", "independent_segments+temp_file"]


def copy_command(cfg: TranscodeConfig, info: ProbeResult, name: str = COPY_NAME) -> list[str]:
    """Video copied into ``name/``, audio (copied or AAC) into ``FIRST_AUDIO/``; ffmpeg runs in
    the stage directory. No decode of the video."""
    assert info.video is not None
    cmd = [cfg.ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats",
           "-progress", "pipe:1", "-stats_period", "1", *input_args(info.path, info.demuxer),
           "-map", f"0:{info.video.index}"]
    streams = f"v:0,name:{name}"
    if info.audio is not None:
        cmd += ["-map", f"0:{info.audio.index}"]
        cmd += ["-c:a", "copy"] if audio_copyable(info) else AUDIO_ENCODE
        streams = f"v:0,agroup:{FIRST_AUDIO},name:{name} a:0,agroup:{FIRST_AUDIO},name:{FIRST_AUDIO}"
    cmd += ["-c:v", "copy", "-map_metadata", "-1", "-map_chapters", "-1", *_hls(cfg),
            "-hls_segment_filename", "%v/seg_%05d.m4s", "-var_stream_map", streams,
            f"%v/{MEDIA_PLAYLIST}"]
    return cmd


def first_rung_plan(info: ProbeResult, cfg: TranscodeConfig) -> RenditionPlan:
    """The rung named ``first_rung`` when the source is big enough for it, else the smallest
    rung it gets; renamed ``quick-<name>`` so it never clashes with the ladder's own."""
    plans = plan_ladder(info, cfg)
    chosen = next((p for p in plans if p.name == cfg.first_rung), plans[-1])
    return dataclasses.replace(chosen, name=QUICK_PREFIX + chosen.name)


def first_rung_copies_audio(info: ProbeResult) -> bool:
    """True when the quick rung carries the source's own audio packets instead of an AAC
    encode: AAC-LC stereo the fast path would copy (``audio_copyable``), in a container whose
    AAC needs no bitstream filter, with audio and video starting together at 0 (the video is
    re-timed by the encode, copied audio is not; an offset would play out of sync). Measured on
    a 3-minute 1080p HEVC lecture: the AAC encode was about 4.7 of the quick rung's 39 CPU
    seconds. Stereo only, because the stand-in's audio group is declared CHANNELS="2"."""
    v, a = info.video, info.audio
    if v is None or a is None or not audio_copyable(info) or a.channels != 2:
        return False
    if info.demuxer not in COPY_CONTAINERS:
        return False
    frame = 1.0 / max(float(v.fps or 0), MIN_FPS)
    vstart, astart = v.start_time or 0.0, a.start_time or 0.0
    return abs(vstart) <= frame + 1e-3 and abs(astart - vstart) <= frame + 1e-3


def first_rung_command(cfg: TranscodeConfig, info: ProbeResult,
                       plan: RenditionPlan) -> list[str]:
    """One low rung at the fast preset, audio once without the loudness passes: the ladder's
    own command builder, so tone mapping, deinterlacing and rotation are the ladder's. The
    audio is copied when ``first_rung_copies_audio`` allows it (the ladder's own audio group,
    with loudness, replaces it once the ladder is out), else encoded once to AAC-LC."""
    quick = dataclasses.replace(cfg, preset=cfg.first_rung_preset, audio_group=True)
    cmd = ladder_command(quick, info, [plan])
    if first_rung_copies_audio(info):
        at = cmd.index("-c:a")
        end = cmd.index("-b:a:0", at) + 2  # the whole AAC encode: codec, profile, rate, bitrate
        cmd[at:end] = ["-c:a", "copy"]
    return cmd
