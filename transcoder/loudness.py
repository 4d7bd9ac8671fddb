"""Speech you can hear: measure the audio once (EBU R128, ffmpeg's ``ebur128``),
then hand the ladder's ffmpeg a filter that brings it to the configured loudness.

Lecture audio is often a laptop microphone at -30 LUFS or lower, far below what phones play
comfortably (-16 LUFS, the common target for speech and podcasts). A one-pass ``loudnorm``
guesses from the first seconds and pumps; the two-pass form gives the second pass the whole
file's integrated loudness, range and true peak, so one steady gain (a ``volume`` filter,
``AudioPlan.static_gain``) is applied when the peaks allow it, and loudnorm's limiter only
when they do not.

The measuring pass decodes the audio only (``-vn``), so it costs seconds for an hour of
lecture. It also looks at the two channels of a stereo file: laptop and camera microphones
often record on one channel only, which would play in one ear; such a file, and every mono
file, is played from the live channel in both ears.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from enum import Enum

from models.config import TranscodeConfig
from transcoder.errors import FfmpegFailed
from transcoder.ffmpeg import input_args
from transcoder.probe import ProbeResult, run_tool, tool_limits

SILENT_CHANNEL_DB = 30.0       # a channel this much quieter than the other one is "not there"
SILENCE_LUFS = -70.0           # loudnorm's floor: nothing to normalise
OUTPUT_RATE = 48000            # loudnorm works at 192 kHz; the encoder gets 48 kHz
DUPLICATE_GAIN_DB = 10 * math.log10(2)  # a lone channel copied to both doubles the power
_RMS_LINE = re.compile(r"\[Parsed_astats_\d+ @ [^\]]*\] (Channel: (\d+)|RMS level dB: (\S+))")


class Channels(Enum):
    """How the source's channels become the stereo pair every rendition carries."""

    STEREO = "stereo"   # as it is (more than two channels are downmixed)
    MONO = "mono"       # one channel, played in both ears
    LEFT = "left"       # stereo with a dead right channel: the left one in both ears
    RIGHT = "right"

    def prefix(self) -> str:
        if self in (Channels.MONO, Channels.LEFT):
            return "pan=stereo|c0=c0|c1=c0"
        if self is Channels.RIGHT:
            return "pan=stereo|c0=c1|c1=c1"
        return "aformat=channel_layouts=stereo"


@dataclass(frozen=True)
class Loudness:
    """What the first pass measured (after the channel mapping)."""

    integrated: float    # LUFS
    true_peak: float     # dBTP
    lra: float           # LU
    threshold: float     # LUFS
    offset: float        # dB, loudnorm's second-pass correction: 0 (ebur128 has none)


@dataclass(frozen=True)
class AudioPlan:
    channels: Channels
    measured: Loudness | None   # None: loudness normalisation off, or nothing to normalise

    def static_gain(self, cfg: TranscodeConfig) -> float | None:
        """The one gain (dB) that brings the whole file to the target, when the peaks and the
        loudness range allow it; None when only loudnorm's limiter can. loudnorm's own
        ``linear`` mode applies exactly this gain under these conditions, but at 192 kHz: as a
        ``volume`` filter it costs next to nothing (a 3-minute lecture's audio part: 11 s of
        encode down to 6 s). Unlike loudnorm, a measured range of 0 LU (a steady signal) counts
        as a measurement, not as "not given"."""
        m = self.measured
        if m is None or not all(map(math.isfinite, (m.integrated, m.true_peak, m.lra))):
            return None
        gain = cfg.loudness_target - m.integrated
        if m.true_peak + gain <= cfg.loudness_true_peak and m.lra <= cfg.loudness_range:
            return gain
        return None

    def filter(self, cfg: TranscodeConfig) -> str:
        """The audio chain for the ladder's ffmpeg (values are numbers we formatted)."""
        chain = [self.channels.prefix()]
        m = self.measured
        gain = self.static_gain(cfg)
        if gain is not None:
            chain.append(f"volume={gain:.2f}dB")
        elif m is not None:
            chain.append(
                f"loudnorm=I={cfg.loudness_target:.1f}:TP={cfg.loudness_true_peak:.1f}"
                f":LRA={cfg.loudness_range:.1f}:measured_I={_clamp(m.integrated, -99, 0):.2f}"
                f":measured_TP={_clamp(m.true_peak, -99, 99):.2f}"
                f":measured_LRA={_clamp(m.lra, 0, 99):.2f}"
                f":measured_thresh={_clamp(m.threshold, -99, 0):.2f}"
                f":offset={_clamp(m.offset, -99, 99):.2f}:linear=true:print_format=none")
        chain.append(f"aresample={OUTPUT_RATE}")
        return ",".join(chain)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def default_channels(probe: ProbeResult) -> Channels:
    assert probe.audio is not None
    return Channels.MONO if probe.audio.channels == 1 else Channels.STEREO


def measure_command(cfg: TranscodeConfig, probe: ProbeResult, channels: Channels) -> list[str]:
    """Pass one: per-channel RMS of the source (``astats``), then the EBU R128 measurement
    (``ebur128``, true peak 4x oversampled) of the signal the second pass will see. ebur128
    gives the same integrated loudness, range, threshold and true peak as loudnorm's own
    first pass (to its 0.1 LU display) at a third of the time: 1.6 s against 5 s for a
    3-minute lecture, because loudnorm runs everything at 192 kHz."""
    assert probe.audio is not None
    chain = ["astats=measure_perchannel=RMS_level:measure_overall=none", channels.prefix(),
             "ebur128=peak=true:framelog=verbose"]  # per-frame lines only at -v verbose
    return [cfg.ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
            *input_args(probe.path, probe.demuxer), "-map", f"0:{probe.audio.index}",
            "-vn", "-sn", "-dn", "-af", ",".join(chain), "-f", "null", "-"]


_SUMMARY = re.compile(
    r"Integrated loudness:\s+I:\s+(?P<i>-?[\d.]+) LUFS\s+Threshold:\s+(?P<thresh>-?[\d.]+) LUFS"
    r"\s+Loudness range:\s+LRA:\s+(?P<lra>-?[\d.]+) LU"
    r"(?:.*?True peak:\s+Peak:\s+(?P<tp>-?[\d.]+|-inf) dBFS)?", re.S)


def parse_ebur128(stderr: str) -> Loudness | None:
    """The summary ebur128 prints when its input ends (the last one, should there be two).
    A true peak of -inf (digital silence) stays -inf; the caller treats that as silence."""
    summary = stderr[stderr.rfind("Summary:"):] if "Summary:" in stderr else ""
    match = _SUMMARY.search(summary)
    if match is None or match.group("tp") is None:
        return None
    return Loudness(float(match.group("i")), float(match.group("tp")), float(match.group("lra")),
                    float(match.group("thresh")), 0.0)


def parse_channel_rms(stderr: str) -> dict[int, float]:
    """{channel number: RMS dBFS} from astats' summary (``-inf`` for digital silence)."""
    levels: dict[int, float] = {}
    channel = None
    for match in _RMS_LINE.finditer(stderr):
        if match.group(2):
            channel = int(match.group(2))
        elif channel is not None:
            try:
                levels[channel] = float(match.group(3))
            except ValueError:
                levels[channel] = float("-inf")
    return levels


def one_ear(levels: dict[int, float]) -> Channels | None:
    """LEFT/RIGHT when a two-channel file really has one live channel."""
    if set(levels) != {1, 2}:
        return None
    left, right = levels[1], levels[2]
    if left - right >= SILENT_CHANNEL_DB or (right == float("-inf") and left > right):
        return Channels.LEFT
    if right - left >= SILENT_CHANNEL_DB or (left == float("-inf") and right > left):
        return Channels.RIGHT
    return None


def plan_audio(cfg: TranscodeConfig, probe: ProbeResult, timeout: float) -> AudioPlan | None:
    """The audio chain for ``probe`` (None without audio). With ``cfg.loudness`` off nothing
    is measured and the channels are mapped as ffmpeg always did (mono to both ears)."""
    if probe.audio is None:
        return None
    channels = default_channels(probe)
    if not cfg.loudness:
        return AudioPlan(channels, None)
    started = time.monotonic()
    try:
        rc, _, err = run_tool(measure_command(cfg, probe, channels), timeout,
                              limits=tool_limits(cfg, timeout))
    except FfmpegFailed as exc:
        if time.monotonic() - started >= timeout:  # the job's time ran out while measuring
            raise FfmpegFailed("The conversion took longer than allowed and was stopped.",
                               detail=exc.detail) from exc
        raise
    if rc != 0:  # a broken track: the ladder's ffmpeg reports it with its own words
        return AudioPlan(channels, None)
    measured = parse_ebur128(err)
    if probe.audio.channels == 2:
        live = one_ear(parse_channel_rms(err))
        if live is not None:
            channels = live
            if measured is not None:  # the dead channel added nothing; the copy doubles power
                measured = Loudness(measured.integrated + DUPLICATE_GAIN_DB, measured.true_peak,
                                    measured.lra, measured.threshold + DUPLICATE_GAIN_DB,
                                    measured.offset)
    if measured is None or not math.isfinite(measured.integrated) \
            or measured.integrated <= SILENCE_LUFS:
        measured = None
    return AudioPlan(channels, measured)
