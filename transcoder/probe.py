"""Ask ffprobe what an upload is, and refuse it before any transcoding when it is not a video
we are willing to open.

Checks run cheapest first: an empty file or a text file (playlists, concat scripts, notes) is
recognised from its first bytes in Python, so ffprobe never even parses it; everything else is
opened by ffprobe under the demuxer allow-list, so a disguised playlist fails inside ffprobe
before it can open the file it points at. Also home to the packet scan of our own output
(used for I-frame playlists), because it is the other question we ask ffprobe, and to the
resource ceilings every ffmpeg/ffprobe runs under (``tool_limits``, ``ladder_limits``).

A file can be small and valid yet ask for hours of frames: two pictures an hour apart in a
stream that declares 30 fps become ~100,000 frames once converted to a constant rate. So the
pictures a video really holds are counted and compared with duration x frame rate.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import signal
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Iterable

from models.config import TranscodeConfig
from models.procs import Limits, preexec
from transcoder.errors import FfmpegFailed, InputRejected, TranscodeError
from transcoder.ffmpeg import (
    ALLOWED_DEMUXERS, duration_scan_command, input_args, packet_scan_command, probe_command,
)

PROBE_TIMEOUT_S = 60.0
SNIFF_BYTES = 4096
MIN_SIDE_PX = 16
STDERR_LINES = 40
FEED_CHUNK = 1 << 20
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")
# Repeated frames below this many are cheap whatever the ratio (a one-picture clip + audio).
SPARSE_MIN_FRAMES = 3600
# Address space per thread (stack, per-thread buffers): ~18 MB measured with ffmpeg 5.1 and
# x264 at 2 and 16 threads; the allowance leaves a margin.
THREAD_ALLOWANCE_MB = 24
CPU_SLACK_S = 30
# What ffmpeg, x264 and the loader print when the address-space ceiling refuses an allocation
# (a thread whose stack cannot be mapped fails with EAGAIN, "Resource temporarily unavailable").
_MEMORY_MARKERS = ("Cannot allocate memory", "malloc of size", "failed to map segment",
                   "ut of memory", "cannot allocate memory", "Resource temporarily unavailable")
MEMORY_REASON = ("The conversion needed more memory than allowed for this video and was "
                 "stopped.")
CPU_REASON = ("The conversion needed more processing time than allowed for this video and "
              "was stopped.")

# Demuxers ffmpeg may detect but we refuse, described for the person who uploaded the file.
_REFUSED_DESCRIPTIONS = MappingProxyType({
    "hls": "an HLS playlist (a text file that points at other files)",
    "concat": "an ffmpeg concat script (a text file that points at other files)",
    "dash": "a DASH manifest (a text file that points at other files)",
    "tty": "a text file",
    "srt": "a subtitle file", "ass": "a subtitle file", "webvtt": "a subtitle file",
    "subviewer": "a subtitle file", "microdvd": "a subtitle file",
    "image2": "an image", "gif": "an animated GIF",
})
_WHITELIST_RE = re.compile(r"^\[([\w,]+) @ [^\]]*\] Format not on whitelist", re.M)


@dataclass(frozen=True)
class VideoInfo:
    index: int
    codec: str
    width: int           # display width: sample aspect ratio and rotation applied
    height: int
    fps: Fraction
    interlaced: bool
    bit_rate: int | None
    # Colour description as ffprobe names it (None when the file does not say); only
    # compared with known names, never put into a filter graph as read.
    color_transfer: str | None = None
    color_primaries: str | None = None
    color_space: str | None = None
    rotation: int = 0
    # What the fast path (transcoder/fastpath.py) judges a stream copy by; "" / None unknown.
    profile: str = ""
    level: int | None = None
    pix_fmt: str = ""
    bits: int | None = None
    start_time: float | None = None

    @property
    def hdr(self) -> bool:
        """PQ (HDR10, Dolby Vision 8.1) or HLG (iPhone, Dolby Vision 8.4) pictures, which look
        washed out and dull when shown as BT.709 without tone mapping."""
        return self.color_transfer in HDR_TRANSFERS


@dataclass(frozen=True)
class AudioInfo:
    index: int
    codec: str
    channels: int
    sample_rate: int
    profile: str = ""
    channel_layout: str = ""
    bit_rate: int | None = None
    start_time: float | None = None


@dataclass(frozen=True)
class ProbeResult:
    path: Path
    demuxer: str          # forced with -f when transcoding
    container: str        # label for people, e.g. "MP4/MOV"
    duration: float
    size: int
    stream_count: int
    video: VideoInfo | None
    audio: AudioInfo | None

    @property
    def width(self) -> int | None:
        return self.video.width if self.video else None

    @property
    def height(self) -> int | None:
        return self.video.height if self.video else None


def probe(path: Path, cfg: TranscodeConfig, *, timeout: float | None = None) -> ProbeResult:
    """Describe ``path`` or raise ``InputRejected`` with a reason a person understands."""
    path = Path(path).absolute()
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise FfmpegFailed("The uploaded file could not be opened on the server.",
                           detail=str(exc)) from exc
    if size == 0:
        raise InputRejected("The file is empty.")
    text_kind = sniff_text(head)
    if text_kind:
        raise InputRejected(f"This file is {text_kind}, not a video.")
    limit = PROBE_TIMEOUT_S if timeout is None else max(1.0, min(PROBE_TIMEOUT_S, timeout))
    rc, out, err = run_tool(probe_command(cfg, path), limit, limits=tool_limits(cfg, limit))
    if rc != 0:
        raise InputRejected(_reason_from_ffprobe(err), detail=err)
    try:
        data = json.loads(out)
    except json.JSONDecodeError as exc:
        raise InputRejected("This file could not be read as a video.", detail=out[:2000]) from exc
    return _interpret(path, size, data, cfg, limit)


def sniff_text(head: bytes) -> str | None:
    """Name the kind of text file ``head`` starts, or None when it looks binary.

    Every container we accept has NUL or high bytes in its first kilobytes, so "valid UTF-8
    without control bytes" is a safe test for text, and a useful one: ffprobe would otherwise
    fall back to the ``.mp4`` extension and only say "moov atom not found".
    """
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if body.startswith(b"#EXTM3U") or body.startswith(b"#EXT-X-"):
        return _REFUSED_DESCRIPTIONS["hls"]
    if body.startswith(b"ffconcat"):
        return _REFUSED_DESCRIPTIONS["concat"]
    if not body or b"\x00" in head:
        return None
    text = head.decode("utf-8", errors="replace")
    controls = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\r\n\f"))
    if controls > 4:  # a multi-byte character cut at the end of the sniff is fine
        return None
    if body.lstrip().startswith((b"<?xml", b"<MPD", b"<mpd")) and b"MPD" in head:
        return _REFUSED_DESCRIPTIONS["dash"]
    if body.startswith(b"file ") or b"\nfile " in head:
        return _REFUSED_DESCRIPTIONS["concat"]
    return "a text file"


def _reason_from_ffprobe(stderr: str) -> str:
    refused = _WHITELIST_RE.search(stderr)
    if refused:
        name = refused.group(1).split(",")[0]
        if name.endswith("_pipe"):
            kind = "an image"
        else:
            kind = _REFUSED_DESCRIPTIONS.get(name, f"a {name} file")
        return f"This file is {kind}, not a video tusflow can convert."
    if "moov atom not found" in stderr:
        return ("This MP4/MOV file is incomplete (its index is missing), usually because the "
                "recording or the upload was cut off.")
    return "This file is not a video or audio file tusflow can read, or it is damaged."


def _fraction(value: object) -> Fraction | None:
    try:
        num, _, den = str(value).partition("/")
        frac = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return None
    return frac if frac > 0 else None


def _number(value: object) -> float | None:
    try:
        num = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return num if math.isfinite(num) else None


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(_number(side["rotation"]) or 0)
    return int(_number((stream.get("tags") or {}).get("rotate")) or 0)


def _video_info(stream: dict) -> VideoInfo:
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if width < MIN_SIDE_PX or height < MIN_SIDE_PX:
        raise InputRejected("The video has no usable picture size.")
    sar = _fraction(stream.get("sample_aspect_ratio"))
    if sar and sar != 1:  # anamorphic (DVD, some camcorders): scale to square pixels
        width = max(MIN_SIDE_PX, round(width * sar))
    if abs(_rotation(stream)) % 180 == 90:  # phones store portrait video as rotated landscape
        width, height = height, width
    fps = _fraction(stream.get("avg_frame_rate")) or _fraction(stream.get("r_frame_rate"))
    if fps is None:
        raise InputRejected("The video's frame rate could not be determined.")
    rate = _number(stream.get("bit_rate"))
    return VideoInfo(
        index=int(stream["index"]), codec=str(stream.get("codec_name") or "unknown"),
        width=width, height=height, fps=fps,
        interlaced=stream.get("field_order") in ("tt", "bb", "tb", "bt"),
        bit_rate=int(rate) if rate else None,
        color_transfer=_tag(stream.get("color_transfer")),
        color_primaries=_tag(stream.get("color_primaries")),
        color_space=_tag(stream.get("color_space")),
        rotation=_rotation(stream),
        profile=str(stream.get("profile") or ""),
        level=int(_number(stream.get("level")) or 0) or None,
        pix_fmt=str(stream.get("pix_fmt") or ""),
        bits=int(_number(stream.get("bits_per_raw_sample")) or 0) or None,
        start_time=_number(stream.get("start_time")),
    )


def _tag(value: object) -> str | None:
    return str(value) if value not in (None, "", "unknown", "unspecified") else None


def _pick(streams: list[dict], kind: str) -> dict | None:
    """The default stream of a kind, else the first; cover art is not a video."""
    found = [s for s in streams if s.get("codec_type") == kind
             and not (s.get("disposition") or {}).get("attached_pic")]
    for stream in found:
        if (stream.get("disposition") or {}).get("default"):
            return stream
    return found[0] if found else None


def _interpret(path: Path, size: int, data: dict, cfg: TranscodeConfig,
               timeout: float) -> ProbeResult:
    fmt = data.get("format") or {}
    demuxer = str(fmt.get("format_name") or "").split(",")[0]
    if demuxer not in ALLOWED_DEMUXERS:  # ffprobe's whitelist already refused; belt and braces
        raise InputRejected(f"This file is a {fmt.get('format_long_name') or demuxer} file, "
                            "not a video tusflow can convert.")
    streams = data.get("streams") or []
    if len(streams) > cfg.max_streams:
        raise InputRejected(f"The file has {len(streams)} tracks; at most {cfg.max_streams} "
                            "are accepted.")
    vstream, astream = _pick(streams, "video"), _pick(streams, "audio")
    if vstream is None and astream is None:
        raise InputRejected("The file contains no video or audio.")
    for stream in (vstream, astream):
        if stream is not None and stream.get("codec_name") in (None, "", "none", "unknown"):
            raise InputRejected("The file uses a video or audio format tusflow cannot decode.")
    video = _video_info(vstream) if vstream is not None else None
    if video is not None:
        _check_video_limits(video, cfg)
    audio = None
    if astream is not None:
        audio = AudioInfo(index=int(astream["index"]), codec=str(astream["codec_name"]),
                          channels=int(astream.get("channels") or 0),
                          sample_rate=int(_number(astream.get("sample_rate")) or 0),
                          profile=str(astream.get("profile") or ""),
                          channel_layout=str(astream.get("channel_layout") or ""),
                          bit_rate=int(_number(astream.get("bit_rate")) or 0) or None,
                          start_time=_number(astream.get("start_time")))
    # The chosen streams' own durations first: a container's duration also counts subtitle
    # or data tracks we drop, which would make a complete file look truncated afterwards.
    durations = [_number(s.get("duration")) for s in (vstream, astream) if s is not None]
    duration = max((d for d in durations if d is not None and d > 0), default=None)
    if duration is None:
        duration = _number(fmt.get("duration"))
    if duration is None:
        duration = scan_duration(path, demuxer, cfg, timeout)
    if duration is None or duration <= 0:
        raise InputRejected("The file has no playable content.")
    if duration > cfg.max_duration:
        raise InputRejected(f"The video is {_clock(duration)} long; the limit is "
                            f"{_clock(cfg.max_duration)}.")
    if video is not None and vstream is not None:
        _check_frame_count(path, demuxer, vstream, video, duration, cfg, timeout)
    return ProbeResult(path=path, demuxer=demuxer, container=ALLOWED_DEMUXERS[demuxer],
                       duration=duration, size=size, stream_count=len(streams),
                       video=video, audio=audio)


def _check_video_limits(video: VideoInfo, cfg: TranscodeConfig) -> None:
    # Compare long side with long side so a portrait 2160x3840 fits a 3840x2160 limit.
    long_side, short_side = max(video.width, video.height), min(video.width, video.height)
    if long_side > max(cfg.max_width, cfg.max_height) or short_side > min(cfg.max_width,
                                                                          cfg.max_height):
        raise InputRejected(f"The video is {video.width}x{video.height} pixels; the largest "
                            f"accepted size is {cfg.max_width}x{cfg.max_height}.")
    if video.fps > Fraction(cfg.max_fps).limit_denominator(1001):
        raise InputRejected(f"The video has {float(video.fps):.0f} frames per second; at most "
                            f"{cfg.max_fps:g} are accepted.")


def frames_needed(video: VideoInfo, duration: float) -> float:
    """Frames a constant-rate conversion at the source's rate writes for ``duration``."""
    return duration * float(video.fps)


def _check_frame_count(path: Path, demuxer: str, stream: dict, video: VideoInfo,
                       duration: float, cfg: TranscodeConfig, timeout: float) -> None:
    """Refuse a video whose declared rate would repeat each picture it holds more than
    ``max_frame_repeat`` times: the conversion's cost (and, through the filter graph's
    queues, its memory) follows the frames written, not the bytes uploaded.

    MP4/MOV states its sample count in the index, which is exactly what its demuxer
    returns; every other container is counted by a demux-only pass (no decoding)."""
    needed = frames_needed(video, duration)
    if cfg.max_frame_repeat <= 0 or needed <= max(SPARSE_MIN_FRAMES, cfg.max_frame_repeat):
        return
    held = int(_number(stream.get("nb_frames")) or 0) if demuxer == "mov" else 0
    if held <= 0:
        held = count_video_packets(path, demuxer, video.index, cfg, timeout)
    if held * cfg.max_frame_repeat >= needed:
        return
    raise InputRejected(
        f"The video says it has {float(video.fps):g} frames per second for "
        f"{_clock(duration)}, but it holds only {held} picture{'s' if held != 1 else ''}: "
        f"converting it would repeat each one about {needed / max(held, 1):,.0f} times. "
        "Export it again at a constant frame rate.")


def count_video_packets(path: Path, demuxer: str, index: int, cfg: TranscodeConfig,
                        timeout: float) -> int:
    """How many packets stream ``index`` really has, read by demuxing the whole file."""
    argv = [cfg.ffprobe, "-hide_banner", "-v", "error", *input_args(path, demuxer),
            "-select_streams", str(index), "-count_packets",
            "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"]
    rc, out, err = run_tool(argv, timeout, limits=tool_limits(cfg, timeout))
    if rc != 0:
        raise InputRejected("This file is damaged: its frames could not be counted.",
                            detail=err)
    return int(_number(out.strip().split(",")[0] if out.strip() else None) or 0)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def scan_duration(path: Path, demuxer: str, cfg: TranscodeConfig,
                  timeout: float) -> float | None:
    """The end of the last packet, for containers that do not state their duration."""
    rc, out, err = run_tool(duration_scan_command(cfg, path, demuxer), timeout,
                            limits=tool_limits(cfg, timeout))
    if rc != 0:
        raise InputRejected("This file is damaged: its length could not be determined.",
                            detail=err)
    end = None
    for line in out.splitlines():
        pts, _, dur = line.partition(",")
        start = _number(pts)
        if start is not None:
            stop = start + (_number(dur) or 0.0)
            end = stop if end is None else max(end, stop)
    return end


def run_tool(argv: list[str], timeout: float, feed: Iterable[Path] = (),
             limits: Limits | None = None) -> tuple[int, str, str]:
    """Run a short ffprobe/ffmpeg, optionally streaming files to its stdin; kill it by PID
    when ``timeout`` passes, and with this process (``PR_SET_PDEATHSIG``). With ``limits``
    (see ``tool_limits``) a run that hits its memory or CPU ceiling raises ``InputRejected``
    saying so. Returns (exit code, stdout, last lines of stderr)."""
    feed = list(feed)
    cpu_before = children_cpu_s()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=preexec(signal.SIGKILL, limits))
    except OSError as exc:
        raise FfmpegFailed(f"The video tools could not be started on the server ({argv[0]}).",
                           detail=str(exc)) from exc
    out_chunks: list[bytes] = []
    err_lines: deque[bytes] = deque(maxlen=STDERR_LINES)
    threads = [threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)]
    if feed:
        threads.append(threading.Thread(target=_feed, args=(proc, feed), daemon=True))
    for thread in threads:
        thread.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise FfmpegFailed("Reading the video took too long.", detail=" ".join(argv)) from exc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for thread in threads:
            thread.join(timeout=5)
    stderr = b"".join(err_lines).decode("utf-8", errors="replace")
    if limits is not None:
        over = limit_error(proc.returncode, stderr, limits, children_cpu_s() - cpu_before)
        if over is not None:
            raise over
    return proc.returncode, b"".join(out_chunks).decode("utf-8", errors="replace"), stderr


def _threads(cfg: TranscodeConfig) -> int:
    return cfg.threads if cfg.threads > 0 else (os.cpu_count() or 1)


def process_limits(cfg: TranscodeConfig, timeout: float, megapixels: float,
                   encoders: int = 0) -> Limits:
    """Ceilings for one ffmpeg/ffprobe: ``memory_limit_mb`` when set, else
    ``memory_base_mb`` (libraries, muxers, queues) + ``memory_per_megapixel_mb`` for each
    megapixel of picture the process holds frames of + an allowance per thread (ffmpeg gives
    each encoder about 1.5 threads per core, the decoder one per core). CPU: ``cpu_limit_s``
    when set, else the wall-clock budget times the cores (threads run in parallel, and their
    times add up), so it only ever stops a run the watchdog failed to stop."""
    threads = _threads(cfg)
    if cfg.memory_limit_mb > 0:
        memory_mb = float(cfg.memory_limit_mb)
    else:
        expected_threads = encoders * (1.5 * threads + 4) + threads + 12
        memory_mb = (cfg.memory_base_mb + cfg.memory_per_megapixel_mb * megapixels
                     + THREAD_ALLOWANCE_MB * expected_threads)
    cpu = cfg.cpu_limit_s if cfg.cpu_limit_s > 0 else \
        math.ceil(max(1.0, timeout) * (os.cpu_count() or 1)) + CPU_SLACK_S
    return Limits(memory_bytes=int(memory_mb * (1 << 20)), cpu_seconds=int(cpu))


def tool_limits(cfg: TranscodeConfig, timeout: float) -> Limits:
    """Ceilings of ffprobe and the other short passes: sized for the largest picture the
    limits accept, since they run before (or without) knowing what the ladder needs."""
    return process_limits(cfg, timeout, cfg.max_width * cfg.max_height / 1e6)


def ladder_limits(cfg: TranscodeConfig, info: ProbeResult, sizes: Iterable[tuple[int, int]],
                  timeout: float) -> Limits:
    """Ceilings of one encoding ffmpeg: the source's picture plus each rendition's (``sizes``
    as width, height), one encoder per rendition."""
    sizes = list(sizes)
    pixels = (info.video.width * info.video.height if info.video else 0) + \
        sum(w * h for w, h in sizes)
    return process_limits(cfg, timeout, pixels / 1e6, encoders=max(1, len(sizes)))


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children: read before and after one child to
    know what it used (a worker runs one job, so the difference is that child's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def limit_error(returncode: int, stderr: str, limits: Limits | None = None,
                cpu_used: float | None = None) -> TranscodeError | None:
    """The readable failure of a process stopped by its ceilings, or None. Checked before
    any "damaged input" marker: a decoder refused memory also prints decoding errors."""
    # ffprobe dies of SIGXCPU; ffmpeg catches it as a request to stop (exit 255, or this line
    # when the kernel's repeats come faster than it can stop), so the time used says it too.
    out_of_time = (limits is not None and limits.cpu_seconds is not None
                   and cpu_used is not None and cpu_used >= limits.cpu_seconds - 0.5)
    if returncode != 0 and (returncode == -signal.SIGXCPU or out_of_time
                            or "Received > 3 system signals" in stderr):
        return InputRejected(CPU_REASON, detail=stderr)
    if returncode != 0 and any(marker in stderr for marker in _MEMORY_MARKERS):
        return InputRejected(MEMORY_REASON, detail=stderr)
    return None


def _feed(proc: subprocess.Popen, paths: list[Path]) -> None:
    try:
        for path in paths:
            with path.open("rb") as fh:
                while chunk := fh.read(FEED_CHUNK):
                    proc.stdin.write(chunk)
    except (BrokenPipeError, OSError):
        pass  # the reader died; its exit code tells the story
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


@dataclass(frozen=True)
class Packet:
    pts: float
    pos: int     # offset in the concatenation of the files that were fed
    size: int
    key: bool


@dataclass(frozen=True)
class PacketScan:
    packets: list[Packet]
    width: int | None
    height: int | None


def scan_video_packets(files: list[Path], container: str, cfg: TranscodeConfig,
                       timeout: float) -> PacketScan:
    """Video packets of one produced rendition (init segment first, then every segment)."""
    rc, out, err = run_tool(packet_scan_command(cfg, container), timeout, feed=files,
                            limits=tool_limits(cfg, timeout))
    if rc != 0:
        raise FfmpegFailed("The converted video could not be checked.", detail=err)
    return parse_packet_scan(out)


def parse_packet_scan(text: str) -> PacketScan:
    packets, width, height = [], None, None
    for line in text.splitlines():
        section, _, rest = line.partition("|")
        fields = dict(item.partition("=")[::2] for item in rest.split("|"))
        if section == "packet":
            pts, pos, size = (_number(fields.get(k)) for k in ("pts_time", "pos", "size"))
            if pts is None or pos is None or size is None:
                continue
            packets.append(Packet(pts, int(pos), int(size), "K" in fields.get("flags", "")))
        elif section == "stream":
            width = int(_number(fields.get("width")) or 0) or None
            height = int(_number(fields.get("height")) or 0) or None
    return PacketScan(packets, width, height)
