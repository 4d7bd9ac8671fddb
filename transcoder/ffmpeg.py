"""Build ffmpeg/ffprobe argv lists; nothing here runs a process or touches the disk.

Every command starts from ``input_args`` so the safety options an untrusted upload needs
(protocol and demuxer allow-lists, capped probing, a forced demuxer, a ``file:`` URL that can
never be read as an option or as another protocol) cannot be forgotten by one caller.
Outputs are relative paths: ffmpeg runs with the scratch directory as its working directory,
so nothing about the caller's directory name (``%`` signs, spaces) reaches a muxer pattern.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Sequence

from models.config import TranscodeConfig

if TYPE_CHECKING:  # imported for annotations only: keeps this module free of cycles
    from transcoder.extras import PosterPlan, StoryboardPlan
    from transcoder.ladder import RenditionPlan
    from transcoder.loudness import AudioPlan
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
AUDIO_GROUP = "audio"             # GROUP-ID of the shared audio rendition, also its folder
QUALITY_BUFSIZE_FACTOR = 2        # capped CRF: VBV buffer = 2x the rung's ceiling
# HDR to SDR: linear light with 100 nits as 1.0, so HLG/PQ reference white (203 nits) sits
# above 1.0 and the curve rolls the highlights off instead of clipping them.
TONEMAP_NOMINAL_PEAK = 100
MOBIUS_PARAM = 0.5                # mobius is linear up to here: measured closest to SDR
_ZSCALE_TRANSFER = MappingProxyType({"smpte2084": "smpte2084", "arib-std-b67": "arib-std-b67"})
_ZSCALE_MATRIX = MappingProxyType({"bt2020nc": "bt2020nc", "bt2020c": "bt2020c",
                                   "bt709": "bt709"})
_ZSCALE_PRIMARIES = MappingProxyType({"bt2020": "bt2020", "bt709": "bt709",
                                      "smpte432": "smpte432"})


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


def tonemap_filters(cfg: TranscodeConfig, probe: ProbeResult) -> str:
    """HLG/PQ BT.2020 to SDR BT.709: to linear light, to BT.709 primaries, a tone curve
    that compresses highlights, then BT.709 transfer and matrix in limited range. The input
    description comes from the probe (only known names pass), so an untagged frame still
    converts the same way."""
    assert probe.video is not None
    v = probe.video
    tin = _ZSCALE_TRANSFER[v.color_transfer or "arib-std-b67"]
    pin = _ZSCALE_PRIMARIES.get(v.color_primaries or "", "bt2020")
    min_ = _ZSCALE_MATRIX.get(v.color_space or "", "bt2020nc")
    curve = cfg.hdr_tonemap + (f":param={MOBIUS_PARAM}" if cfg.hdr_tonemap == "mobius" else "")
    return (f"zscale=tin={tin}:pin={pin}:min={min_}:t=linear:npl={TONEMAP_NOMINAL_PEAK},"
            f"format=gbrpf32le,zscale=p=bt709,tonemap=tonemap={curve}:desat=0,"
            f"zscale=t=bt709:m=bt709:r=tv,format=yuv420p")


def shares_audio(cfg: TranscodeConfig, probe: ProbeResult) -> bool:
    """True when the ladder writes its audio once, as the ``AUDIO_GROUP`` rendition."""
    return cfg.audio_group and probe.video is not None and probe.audio is not None


def _audio_outputs(cfg: TranscodeConfig, probe: ProbeResult,
                   plans: Sequence[RenditionPlan]) -> int:
    """How many audio streams the ladder writes: one shared group, or one per rung."""
    return 1 if shares_audio(cfg, probe) else len(plans)


def _decoded_head(cfg: TranscodeConfig, probe: ProbeResult) -> str:
    """The start of every video chain: the source's video stream, deinterlaced and
    tone-mapped once, so the whole ladder and a chunk's ladder see the same picture."""
    assert probe.video is not None
    head = f"[0:{probe.video.index}]" + ("bwdif=mode=send_frame," if probe.video.interlaced
                                         else "")
    if probe.video.hdr:
        head += tonemap_filters(cfg, probe) + ","
    return head


def _cascade(head: str, rungs: Sequence[str]) -> list[str]:
    """The rungs' chains, largest first: rung ``i`` reads ``head`` then the copy ``[c{i-1}]``
    the rung above split off, writes ``[v{i}]``, and splits ``[c{i}]`` for the next one (all
    but the last), so every scaler reads the smallest picture it can."""
    parts = []
    last = len(rungs) - 1
    for i, filters in enumerate(rungs):
        taps = [f"v{i}"] + ([f"c{i}"] if i < last else [])
        chain = head + filters
        if len(taps) > 1:
            chain += f",split={len(taps)}"
        parts.append(chain + "".join(f"[{t}]" for t in taps))
        head = f"[c{i}]"
    return parts


def _filter_graph(cfg: TranscodeConfig, probe: ProbeResult, plans: Sequence[RenditionPlan],
                  poster: PosterPlan | None, storyboard: StoryboardPlan | None,
                  audio: AudioPlan | None = None) -> str:
    """Decode once, then a cascade: each rung is scaled from the rung above it (plans are
    largest first, and rates only go down), so every scaler reads the smallest picture it
    can. HDR is tone-mapped once, before the cascade; the audio chain (channels, loudness)
    runs once and is split when every rung carries its own copy.

    Poster and storyboard tap the decoded frames *before* any rung's ``fps``: the rate
    conversion may repeat one frame thousands of times across a timestamp gap without asking
    for input, and a side branch waiting for its first image behind it would make every
    rung's queue hold all those copies (issue 14). Fed decoded frames only, a waiting side
    branch just makes ffmpeg read on."""
    parts = []
    head = _decoded_head(cfg, probe)
    side = (["ps"] if poster else []) + (["sb"] if storyboard else [])
    if side:
        parts.append(head + f"split={len(side) + 1}" + "".join(f"[{t}]"
                                                              for t in ["src", *side]))
        head = "[src]"
    parts += _cascade(head, [_rung_filters(plan) for plan in plans])
    if poster is not None:
        parts.append(f"[ps]{poster.filter()}[poster]")
    if storyboard is not None:
        parts.append(f"[sb]{storyboard.filter()}[storyboard]")
    if audio is not None and probe.audio is not None:
        count = _audio_outputs(cfg, probe, plans)
        chain = f"[0:{probe.audio.index}]{audio.filter(cfg)}"
        if count > 1:
            chain += f",asplit={count}"
        parts.append(chain + "".join(f"[a{i}]" for i in range(count)))
    return ";".join(parts)


def _max_gop_frames(plan: RenditionPlan, cfg: TranscodeConfig) -> int:
    """x264's own keyframe limit, one frame past the forced interval: x264 then never places
    a keyframe of its own (which would differ between rungs of different frame rates), yet a
    forced one missing for any reason is still bounded."""
    return math.ceil(plan.fps * cfg.keyframe_interval) + 1


def _rate_args(cfg: TranscodeConfig, i: int, plan: RenditionPlan) -> list[str]:
    """Capped CRF ("quality"): x264 spends what the picture needs for CRF ``quality`` and
    never more than the rung's ceiling over a 2x-ceiling VBV buffer, so slides cost a
    fraction of the ceiling and noise or motion gets all of it. "bitrate": the old fixed
    average with peaks up to 1.5x (kept as a fallback and the benchmark's baseline)."""
    if cfg.rate_control == "quality" and plan.quality is not None:
        ceiling = plan.video_kbps or 0
        return [f"-crf:v:{i}", str(plan.quality), f"-maxrate:v:{i}", f"{ceiling}k",
                f"-bufsize:v:{i}", f"{ceiling * QUALITY_BUFSIZE_FACTOR}k"]
    return [f"-b:v:{i}", f"{plan.video_kbps}k", f"-maxrate:v:{i}", f"{plan.maxrate_kbps}k",
            f"-bufsize:v:{i}", f"{plan.bufsize_kbps}k"]


def _color_args(probe: ProbeResult) -> list[str]:
    """Tone-mapped output says what it now is; without the tags players would take the
    source's BT.2020/HLG description from nowhere and guess."""
    if probe.video is None or not probe.video.hdr:
        return []
    return ["-color_primaries:v", "bt709", "-color_trc:v", "bt709", "-colorspace:v", "bt709",
            "-color_range:v", "tv"]


def audio_kbps(plans: Sequence[RenditionPlan]) -> int:
    """The shared audio group's rate: the best any produced rung asked for."""
    return max(p.audio_kbps for p in plans)


def _encode_args(cfg: TranscodeConfig, plans: Sequence[RenditionPlan], audio: bool,
                 grouped: bool = False) -> list[str]:
    """Per-stream rate control and aligned IDRs: a keyframe is forced on the same
    timestamps in every rung, and scene-cut keyframes are switched off so x264 never adds
    one of its own between them."""
    args: list[str] = []
    video = [p for p in plans if p.has_video]
    if video:
        args += ["-c:v", "libx264", "-profile:v", "high", "-preset", cfg.preset,
                 "-force_key_frames:v", f"expr:gte(t,n_forced*{cfg.keyframe_interval})",
                 "-sc_threshold:v", "0", "-forced-idr:v", "1"]
        for i, p in enumerate(video):
            args += [*_rate_args(cfg, i, p), f"-g:v:{i}", str(_max_gop_frames(p, cfg))]
    if audio:
        args += ["-c:a", "aac", "-profile:a", "aac_low", "-ar", "48000", "-ac", "2"]
        if grouped:
            args += ["-b:a:0", f"{audio_kbps(plans)}k"]
        else:
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


def _hls_output(cfg: TranscodeConfig, plans: Sequence[RenditionPlan], audio: bool,
                grouped: bool = False) -> list[str]:
    if len(plans) == 1 and not grouped:
        name = plans[0].name
        return [*_hls_args(cfg), "-hls_segment_filename", f"{name}/{segment_pattern(cfg)}",
                f"{name}/{MEDIA_PLAYLIST}"]
    streams = []
    if grouped:  # video-only rungs + one audio rendition; the master is ours (playlists.py)
        streams = [f"v:{i},agroup:{AUDIO_GROUP},name:{p.name}" for i, p in enumerate(plans)]
        streams.append(f"a:0,agroup:{AUDIO_GROUP},name:{AUDIO_GROUP}")
    for i, p in enumerate(plans if not grouped else ()):
        parts = ([f"v:{i}"] if p.has_video else []) + ([f"a:{i}"] if audio else [])
        streams.append(",".join(parts + [f"name:{p.name}"]))
    return [*_hls_args(cfg), "-hls_segment_filename", f"%v/{segment_pattern(cfg)}",
            "-var_stream_map", " ".join(streams), f"%v/{MEDIA_PLAYLIST}"]


def _image_output(label: str, filename: str, quality: int) -> list[str]:
    return ["-map", f"[{label}]", "-frames:v", "1", "-update", "1", "-c:v", "mjpeg",
            "-q:v", str(quality), "-map_metadata", "-1", "-f", "image2", filename]


def ladder_command(cfg: TranscodeConfig, probe: ProbeResult, plans: Sequence[RenditionPlan],
                   poster: PosterPlan | None = None,
                   storyboard: StoryboardPlan | None = None,
                   audio_plan: AudioPlan | None = None) -> list[str]:
    """One ffmpeg that decodes once and writes every rendition (plus poster and storyboard
    sprite when given). Run it with the scratch directory as working directory. With
    ``cfg.audio_group`` the audio is written once, to the ``AUDIO_GROUP`` folder;
    ``audio_plan`` (transcoder.loudness) maps channels and normalises loudness."""
    audio = probe.audio is not None
    cmd = _common_head(cfg, probe)
    if probe.video is None:
        if len(plans) != 1:
            raise ValueError("an audio-only source gets exactly one rendition")
        chain = ["-af", audio_plan.filter(cfg)] if audio_plan is not None else []
        return cmd + ["-map", f"0:{probe.audio.index}", "-vn", *chain,
                      *_encode_args(cfg, plans, audio=True), *_hls_output(cfg, plans, True)]
    cmd += ["-filter_complex", _filter_graph(cfg, probe, plans, poster, storyboard,
                                             audio_plan if audio else None)]
    grouped = shares_audio(cfg, probe)
    source_audio = f"0:{probe.audio.index}" if audio else ""
    for i in range(len(plans)):
        cmd += ["-map", f"[v{i}]"]
        if audio and not grouped:
            cmd += ["-map", f"[a{i}]" if audio_plan is not None else source_audio]
    if grouped:
        cmd += ["-map", "[a0]" if audio_plan is not None else source_audio]
    cmd += [*_encode_args(cfg, plans, audio, grouped), *_color_args(probe),
            *_hls_output(cfg, plans, audio, grouped)]
    if poster is not None:
        cmd += _image_output("poster", poster.filename, 3)
    if storyboard is not None:
        cmd += _image_output("storyboard", storyboard.filename, 5)
    return cmd


def rendition_commands(cfg: TranscodeConfig, probe: ProbeResult,
                       plans: Sequence[RenditionPlan]) -> list[list[str]]:
    """The naive alternative, one ffmpeg (one full decode) per rendition; the benchmark
    runs it to show what the shared decode saves."""
    solo = dataclasses.replace(cfg, audio_group=False)  # no shared run writes the group
    return [ladder_command(solo, probe, [p]) for p in plans]


# ---------------------------------------------------------------------------------- chunked ladder
def _chunk_rung_filters(plan: RenditionPlan, first: int, end: int | None) -> str:
    """One rung's frames for one chunk: the rung's CFR grid starting exactly at output frame
    ``first`` (``fps`` pads or drops to it, so a chunk never starts a frame early or late),
    ended before frame ``end`` in absolute time (``-copyts`` keeps source timestamps). Not
    ``trim=end``: in 5.1 it drops a frame whose *end* passes the limit, one frame early.
    The input must run on past ``end``: ``fps`` only emits a frame once it sees the next."""
    fps = plan.fps
    assert fps is not None
    chain = f"fps={fps.numerator}/{fps.denominator}:start_time={float(first / fps):.6f},"
    if end is not None:  # after fps the time base is one frame: pts is the frame number
        chain += f"select='lt(pts,{end})',"
    return chain + f"scale={plan.width}:{plan.height},setsar=1,format=yuv420p"


def _chunk_filter_graph(cfg: TranscodeConfig, probe: ProbeResult, plans: Sequence[RenditionPlan],
                        frames: Sequence[tuple[int, int | None]]) -> str:
    """The ladder's cascade (each rung scaled from the one above), video only, with each
    rung cut to its own frame range of the chunk."""
    return ";".join(_cascade(_decoded_head(cfg, probe),
                             [_chunk_rung_filters(plan, first, end)
                              for plan, (first, end) in zip(plans, frames)]))


def chunk_command(cfg: TranscodeConfig, probe: ProbeResult, plans: Sequence[RenditionPlan],
                  seek: float, stop: float | None, frames: Sequence[tuple[int, int | None]],
                  keyframes: Sequence[float]) -> list[str]:
    """One chunk of the ladder: decode ``[seek, stop)`` of the source once and encode every
    rung of ``plans`` into ``<rung>/`` (fMP4, video only), run in the chunk's work directory.

    What makes the chunks of one rung join into one continuous stream (ffmpeg 5.1, see
    shared/publish-latency-notes.md C2): ``-copyts -start_at_zero`` keeps absolute source
    timestamps with an accurate input seek; ``frames`` puts every rung on its own absolute
    frame grid; keyframes are an explicit list of absolute times (5.1 compares ``expr:`` to
    the chunk's first frame); ``-avoid_negative_ts disabled`` + ``frag_discont`` write the
    absolute decode time into every fragment (tfdt), so the init segment carries no per-chunk
    edit list and is byte-identical between chunks (with ``bitexact`` and equal x264 params).
    """
    head = [cfg.ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            "-nostats", "-progress", "pipe:1", "-stats_period", str(STATS_PERIOD_S),
            "-copyts", "-start_at_zero", "-ss", f"{max(0.0, seek):.6f}"]
    if stop is not None:
        head += ["-to", f"{stop:.6f}"]
    cmd = head + input_args(probe.path, probe.demuxer)
    cmd += ["-filter_complex", _chunk_filter_graph(cfg, probe, plans, frames)]
    for i in range(len(plans)):
        cmd += ["-map", f"[v{i}]"]
    forced = ",".join(f"{t:.6f}" for t in keyframes)
    encode = _encode_args(cfg, plans, audio=False)
    encode[encode.index("-force_key_frames:v") + 1] = forced
    cmd += ["-an", *encode, *_color_args(probe), "-fflags", "+bitexact", "-flags:v",
            "+bitexact", "-avoid_negative_ts", "disabled"]
    cmd += _hls_output(cfg, plans, audio=False, grouped=False)
    at = cmd.index("-hls_segment_filename")
    return cmd[:at] + ["-hls_segment_options", "movflags=+frag_discont"] + cmd[at:]


def audio_group_command(cfg: TranscodeConfig, probe: ProbeResult, kbps: int,
                        audio_plan: AudioPlan | None) -> list[str]:
    """The ladder's shared audio rendition for the whole file, alone (the chunked ladder
    never cuts the audio: AAC priming and padding would click and drift at every join)."""
    assert probe.audio is not None
    chain = ["-af", audio_plan.filter(cfg)] if audio_plan is not None else []
    return _common_head(cfg, probe) + [
        "-map", f"0:{probe.audio.index}", "-vn", *chain,
        "-c:a", "aac", "-profile:a", "aac_low", "-ar", "48000", "-ac", "2", "-b:a", f"{kbps}k",
        "-map_metadata", "-1", "-map_chapters", "-1", *_hls_args(cfg),
        "-hls_segment_filename", f"{AUDIO_GROUP}/{segment_pattern(cfg)}",
        f"{AUDIO_GROUP}/{MEDIA_PLAYLIST}"]


def extras_command(cfg: TranscodeConfig, probe: ProbeResult, poster: PosterPlan | None,
                   storyboard: StoryboardPlan | None) -> list[str] | None:
    """Poster and storyboard sprite of the chunked ladder from the keyframes only
    (``-skip_frame nokey``): no chunk holds the whole video, and decoding only keyframes
    costs a small fraction of a full decode. ``poster`` must pick every decoded frame."""
    if probe.video is None or (poster is None and storyboard is None):
        return None
    side = (["ps"] if poster else []) + (["sb"] if storyboard else [])
    head = f"[0:{probe.video.index}]"
    if probe.video.hdr:
        head += tonemap_filters(cfg, probe) + ","
    parts = [head + (f"split={len(side)}" if len(side) > 1 else "null")
             + "".join(f"[{t}]" for t in side)]
    if poster is not None:
        parts.append(f"[ps]{poster.filter()}[poster]")
    if storyboard is not None:
        parts.append(f"[sb]{storyboard.filter()}[storyboard]")
    cmd = [cfg.ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats",
           "-progress", "pipe:1", "-stats_period", str(STATS_PERIOD_S),
           "-skip_frame:v", "nokey", *input_args(probe.path, probe.demuxer),
           "-filter_complex", ";".join(parts)]
    if poster is not None:
        cmd += _image_output("poster", poster.filename, 3)
    if storyboard is not None:
        cmd += _image_output("storyboard", storyboard.filename, 5)
    return cmd
