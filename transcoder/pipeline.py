"""``transcode``: probe, plan, run one ffmpeg for the whole ladder, then describe what it made.

The caller (the RQ job) owns retries, the database and publishing; this module only turns a
file into a directory of HLS output and guarantees that no ffmpeg it started outlives the
call, whether it ends by success, timeout, ``should_stop()`` or an exception.
"""

from __future__ import annotations

import dataclasses
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from models.config import TranscodeConfig
from models.procs import Limits, preexec
from transcoder import extras
from transcoder.errors import FfmpegFailed, InputRejected, TranscodeCancelled
from transcoder.ffmpeg import (
    AUDIO_GROUP, IFRAME_PLAYLIST, MASTER_PLAYLIST, MEDIA_PLAYLIST, audio_kbps, ladder_command,
    shares_audio,
)
from transcoder.ladder import RenditionPlan, lean_ladder, plan_ladder
from transcoder.loudness import plan_audio
from transcoder.playlists import (
    AAC_LC, AudioRendition, MediaPlaylist, Variant, average_bitrate, avc_codec_from_init,
    avc_codec_from_ts, iframe_bitrates, iframe_entries, parse_media_playlist, peak_bitrate,
    render_iframe_playlist, render_master, with_audio,
)
from transcoder.probe import (
    ProbeResult, children_cpu_s, ladder_limits, limit_error, probe, scan_video_packets,
)
from transcoder.progress import ProgressParser, estimate

ProgressCallback = Callable[[float, float | None], None]

ENCODE_SHARE = 95.0              # percent of the progress bar the ffmpeg run covers
REPORT_EVERY_S = 1.0
POLL_S = 0.25
STDERR_LINES = 60
KILL_WAIT_S = 10.0
TRUNCATED_RATIO = 0.9            # output shorter than this share of the probed duration...
TRUNCATED_SLACK_S = 1.0          # ...and by more than this is a cut-off input
# stderr phrases meaning "the input is broken" rather than "ffmpeg or the machine failed".
_BAD_INPUT_MARKERS = ("partial file", "Invalid data found when processing input",
                      "moov atom not found", "Error while decoding", "corrupt",
                      "not found for input stream")  # "Decoder (codec x) not found for..."


@dataclass
class TranscodeResult:
    duration: float
    width: int | None
    height: int | None
    renditions: list[dict]
    master: str
    poster: str | None
    storyboard: str | None


def transcode(source: Path, out_dir: Path, cfg: TranscodeConfig,
              on_progress: ProgressCallback | None = None,
              timeout: float | None = None,
              should_stop: Callable[[], bool] | None = None,
              probed: ProbeResult | None = None) -> TranscodeResult:
    """Write an HLS ladder for ``source`` into the empty directory ``out_dir``.

    ``probed`` is what the caller's own ``probe(source)`` found: the job probes first to set
    its time limit, and the file is not read twice. Without it this call probes.
    ``timeout`` bounds the whole call, probing and checking included (default:
    ``max(timeout_min, duration * timeout_factor)`` from ``cfg``). Raises ``InputRejected``
    (permanent), ``FfmpegFailed`` (transient) or its subclass ``TranscodeCancelled``; on any
    failure ``out_dir`` may hold partial output for the caller to delete.
    """
    started = time.monotonic()
    out_dir = Path(out_dir).absolute()
    stop = StopCheck(should_stop)
    stop.check(force=True)
    info = probed if probed is not None else probe(Path(source), cfg, timeout=timeout)
    budget = timeout if timeout is not None else max(cfg.timeout_min,
                                                     info.duration * cfg.timeout_factor)
    deadline = started + budget
    plans = plan_ladder(info, cfg)
    poster = extras.plan_poster(info, plans)
    storyboard = extras.plan_storyboard(info, cfg)
    shared = shares_audio(cfg, info)
    for name in [p.name for p in plans] + ([AUDIO_GROUP] if shared else []):
        (out_dir / name).mkdir(exist_ok=True)
    if on_progress:
        on_progress(0.0, None)
    audio_plan = plan_audio(cfg, info, max(1.0, deadline - time.monotonic()))
    limits = ladder_limits(cfg, info, [(p.width, p.height) for p in plans if p.has_video],
                           deadline - time.monotonic())
    run_ffmpeg(ladder_command(cfg, info, plans, poster, storyboard, audio_plan), out_dir,
               info.duration, deadline, _scaled(on_progress, ENCODE_SHARE), stop, limits)

    made = []
    for plan in plans:
        stop.check()
        made.append(_describe(out_dir, plan, info, cfg, deadline))
    top = made[0]
    _check_complete(top.playlist, info)
    made = _lean(out_dir, made, cfg)
    group = None
    if shared:
        audio = _describe(out_dir, RenditionPlan(AUDIO_GROUP, None, None, None, None,
                                                 audio_kbps(plans)), info, cfg, deadline)
        made = [_with_shared_audio(m, audio) for m in made]
        group = AudioRendition(audio.variant.uri, AUDIO_GROUP)
    (out_dir / MASTER_PLAYLIST).write_text(
        render_master([m.variant for m in made], _playlist_version(cfg), group),
        encoding="utf-8")

    poster_name = None
    if poster is not None and _nonempty(out_dir / poster.filename):
        poster_name = poster.filename
    storyboard_name = None
    if storyboard is not None and _nonempty(out_dir / storyboard.filename):
        (out_dir / extras.STORYBOARD_VTT).write_text(storyboard.vtt(top.playlist.duration),
                                                     encoding="utf-8")
        storyboard_name = extras.STORYBOARD_VTT
    if on_progress:
        on_progress(100.0, 0.0)
    return TranscodeResult(
        duration=round(top.playlist.duration, 3),
        width=top.rendition["width"], height=top.rendition["height"],
        renditions=[m.rendition for m in made], master=MASTER_PLAYLIST,
        poster=poster_name, storyboard=storyboard_name,
    )


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _scaled(report: ProgressCallback | None, share: float) -> ProgressCallback | None:
    if report is None:
        return None
    return lambda percent, eta: report(percent * share / 100.0, eta)


class StopCheck:
    """Asks ``should_stop`` at most once a second: it may hit Redis or the database."""

    def __init__(self, should_stop: Callable[[], bool] | None) -> None:
        self._should_stop = should_stop
        self._last = float("-inf")

    def check(self, force: bool = False) -> None:
        if self._should_stop is None:
            return
        now = time.monotonic()
        if not force and now - self._last < REPORT_EVERY_S:
            return
        self._last = now
        if self._should_stop():
            raise TranscodeCancelled("The conversion was stopped before it finished.")


@dataclass
class _StderrTail:
    lines: deque = field(default_factory=lambda: deque(maxlen=STDERR_LINES))
    markers: set = field(default_factory=set)

    def consume(self, stream) -> None:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self.lines.append(line)
            for marker in _BAD_INPUT_MARKERS:
                if marker in line:
                    self.markers.add(marker)
            if "No space left on device" in line:
                self.markers.add("ENOSPC")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run_ffmpeg(argv: list[str], cwd: Path, duration: float, deadline: float,
               on_progress: ProgressCallback | None, stop: "StopCheck | None" = None,
               limits: Limits | None = None) -> None:
    """Run one long ffmpeg with ``-progress pipe:1`` to its end (``Running.follow``)."""
    Running(argv, cwd, limits).follow(duration, deadline, on_progress, stop)


class Running:
    """One started ffmpeg with ``-progress pipe:1``, its output drained by two threads so it
    never blocks while the caller does something else (the fast path scans the source while
    the speculative copy runs); ``follow`` waits for it, ``abandon`` kills it.

    If this process dies without running ``finally`` (an RQ work-horse killed with SIGKILL),
    the kernel kills ffmpeg too (``PR_SET_PDEATHSIG``): ffmpeg ignores SIGPIPE and would
    otherwise transcode on for nobody. ``limits`` (probe.ladder_limits) cap its memory and
    CPU time; hitting them raises ``InputRejected`` saying so.
    """

    def __init__(self, argv: list[str], cwd: Path, limits: Limits | None = None) -> None:
        self.limits = limits
        self.started = time.monotonic()
        self.cpu_before = children_cpu_s()
        try:
            self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         preexec_fn=preexec(signal.SIGKILL, limits))
        except OSError as exc:
            raise FfmpegFailed("The video converter could not be started on the server.",
                               detail=str(exc)) from exc
        self.lines: queue.Queue = queue.Queue()
        self.tail = _StderrTail()
        self.threads = [threading.Thread(target=self._pump_stdout, daemon=True),
                        threading.Thread(target=self.tail.consume, args=(self.proc.stderr,),
                                         daemon=True)]
        for thread in self.threads:
            thread.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw)
        self.lines.put(None)

    def follow(self, duration: float, deadline: float, on_progress: ProgressCallback | None,
               stop: "StopCheck | None" = None) -> None:
        """Wait for the end, reporting progress; kill ffmpeg (by PID) on deadline, stop
        request or any exception, and turn its exit into a ``TranscodeError``."""
        stop = stop or StopCheck(None)
        parser, last_report, eof = ProgressParser(), float("-inf"), False
        try:
            while not eof or self.proc.poll() is None:
                stop.check()
                if time.monotonic() > deadline:
                    raise FfmpegFailed("The conversion took longer than allowed and was "
                                       "stopped.", detail=self.tail.text)
                try:
                    raw = self.lines.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if raw is None:
                    eof = True
                    continue
                snapshot = parser.feed(raw.decode("utf-8", errors="replace"))
                now = time.monotonic()
                if snapshot and on_progress and (now - last_report >= REPORT_EVERY_S
                                                 or snapshot.finished):
                    last_report = now
                    percent, eta = estimate(snapshot, duration, now - self.started)
                    on_progress(percent, eta)
        finally:
            self.abandon()
        over = limit_error(self.proc.returncode, self.tail.text, self.limits,
                           children_cpu_s() - self.cpu_before)
        if over is not None:
            raise over
        _raise_for_exit(self.proc.returncode, self.tail)

    def abandon(self) -> None:
        """Kill ffmpeg if it still runs and reap it; its output is the caller's to remove."""
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=KILL_WAIT_S)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass
        for thread in self.threads:
            thread.join(timeout=KILL_WAIT_S)


def _raise_for_exit(returncode: int, tail: _StderrTail) -> None:
    if returncode < 0:
        raise FfmpegFailed(f"The video converter was stopped by the system (signal "
                           f"{-returncode}), possibly for lack of memory.", detail=tail.text)
    if "ENOSPC" in tail.markers:
        raise FfmpegFailed("The server ran out of disk space while converting.",
                           detail=tail.text)
    if returncode != 0:
        if "partial file" in tail.markers:
            raise InputRejected("The video file ends early: the upload or the recording "
                                "looks incomplete.", detail=tail.text)
        if tail.markers:
            raise InputRejected("The video is damaged and could not be converted.",
                                detail=tail.text)
        raise FfmpegFailed(f"The video converter failed (exit code {returncode}).",
                           detail=tail.text)


@dataclass(frozen=True)
class _Made:
    plan: RenditionPlan
    playlist: MediaPlaylist
    variant: Variant
    rendition: dict
    sizes: tuple[int, ...] = ()


def _describe(out_dir: Path, plan: RenditionPlan, info: ProbeResult, cfg: TranscodeConfig,
              deadline: float) -> _Made:
    """Measure one produced rendition (and write its I-frame playlist)."""
    folder = out_dir / plan.name
    try:
        playlist = parse_media_playlist((folder / MEDIA_PLAYLIST).read_text(encoding="utf-8"))
        sizes = [(folder / s.uri).stat().st_size for s in playlist.segments]
    except (OSError, ValueError) as exc:
        raise FfmpegFailed("The converter did not produce a complete video.",
                           detail=f"{plan.name}: {exc}") from exc
    if not playlist.segments or not playlist.endlist or playlist.playlist_type != "VOD":
        raise FfmpegFailed("The converter did not produce a complete video.",
                           detail=f"{plan.name}: incomplete playlist")
    durations = [s.duration for s in playlist.segments]
    target = playlist.target_duration or cfg.segment_duration
    bandwidth, average = peak_bitrate(durations, sizes, target), average_bitrate(durations, sizes)
    video = _describe_video(folder, plan, playlist, sizes, cfg, deadline) if plan.has_video \
        else None
    codecs = ([video.codec] if video else []) + ([AAC_LC] if info.audio is not None else [])
    uri = f"{plan.name}/{MEDIA_PLAYLIST}"
    frame_rate = round(plan.frame_rate, 3) if plan.frame_rate else None
    width, height = (video.width, video.height) if video else (None, None)
    variant = Variant(uri, bandwidth, average, ",".join(codecs),
                      (width, height) if video else None, frame_rate,
                      video.iframe_uri if video else None,
                      video.iframe_bandwidth if video else 0,
                      video.iframe_average_bandwidth if video else 0,
                      video.codec if video else "")
    rendition = {"name": plan.name, "width": width, "height": height, "bandwidth": bandwidth,
                 "average_bandwidth": average, "codecs": variant.codecs,
                 "frame_rate": frame_rate, "playlist": uri}
    return _Made(plan, playlist, variant, rendition, tuple(sizes))


def _lean(out_dir: Path, made: list[_Made], cfg: TranscodeConfig) -> list[_Made]:
    """Drop (and delete) rungs that add nothing over the rung above (ladder.lean_ladder)."""
    keep = lean_ladder([m.variant.average_bandwidth for m in made], cfg.rung_min_saving)
    for m, kept in zip(made, keep):
        if not kept:
            shutil.rmtree(out_dir / m.plan.name, ignore_errors=True)
    return [m for m, kept in zip(made, keep) if kept]


def _with_shared_audio(video: _Made, audio: _Made) -> _Made:
    """A video rung's numbers once its audio comes from the shared group."""
    target = video.playlist.target_duration or 1
    peak, average = with_audio(video.variant.bandwidth, video.variant.average_bandwidth,
                               [s.duration for s in audio.playlist.segments], audio.sizes,
                               target)
    variant = dataclasses.replace(video.variant, bandwidth=peak, average_bandwidth=average)
    rendition = {**video.rendition, "bandwidth": peak, "average_bandwidth": average}
    return dataclasses.replace(video, variant=variant, rendition=rendition)


@dataclass(frozen=True)
class _VideoFacts:
    codec: str
    width: int
    height: int
    iframe_uri: str | None
    iframe_bandwidth: int
    iframe_average_bandwidth: int


def _describe_video(folder: Path, plan: RenditionPlan, playlist: MediaPlaylist,
                    sizes: list[int], cfg: TranscodeConfig, deadline: float) -> _VideoFacts:
    """The real codec string and size of a rendition, read back from its files, plus the
    I-frame playlist built from its keyframe positions."""
    try:
        if playlist.map_uri:
            init = (folder / playlist.map_uri).read_bytes()
            codec = avc_codec_from_init(init)
        else:
            init = b""
            with (folder / playlist.segments[0].uri).open("rb") as fh:
                codec = avc_codec_from_ts(fh.read(1 << 20))
    except OSError as exc:
        raise FfmpegFailed("The converter did not produce a complete video.",
                           detail=f"{plan.name}: {exc}") from exc
    if not codec:
        raise FfmpegFailed("The converted video could not be checked.",
                           detail=f"{plan.name}: no H.264 parameters found")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FfmpegFailed("The conversion took longer than allowed and was stopped.")
    files = ([folder / playlist.map_uri] if playlist.map_uri else []) + \
        [folder / s.uri for s in playlist.segments]
    scan = scan_video_packets(files, cfg.segment_format, cfg, remaining)
    entries = iframe_entries(scan.packets, playlist.segments, sizes, len(init),
                             cfg.segment_format)
    iframe_uri, peak, average = None, 0, 0
    if entries:
        text = render_iframe_playlist(entries, playlist.map_uri, _playlist_version(cfg))
        (folder / IFRAME_PLAYLIST).write_text(text, encoding="utf-8")
        iframe_uri = f"{plan.name}/{IFRAME_PLAYLIST}"
        peak, average = iframe_bitrates(entries)
    return _VideoFacts(codec, scan.width or plan.width, scan.height or plan.height,
                       iframe_uri, peak, average)


def _playlist_version(cfg: TranscodeConfig) -> int:
    """7 for fMP4 (EXT-X-MAP needs 6, ffmpeg writes 7), 4 for TS (byte ranges, I-frames)."""
    return 7 if cfg.segment_format == "fmp4" else 4


def _check_complete(playlist: MediaPlaylist, info: ProbeResult) -> None:
    """A truncated MP4 whose index survived decodes "successfully" up to the cut; the only
    trace is an output much shorter than the duration the index promised."""
    produced = playlist.duration
    if produced < info.duration * TRUNCATED_RATIO and info.duration - produced > TRUNCATED_SLACK_S:
        raise InputRejected(f"The video stops after {produced:.0f} s of its {info.duration:.0f} "
                            "s: the file looks incomplete.")


__all__ = ["Running", "TranscodeResult", "transcode", "run_ffmpeg"]
