"""Read the media playlists ffmpeg wrote, measure what was really produced, and write the
I-frame and multivariant playlists from those measurements.

ffmpeg's own master playlist declares the *configured* bitrates, has no FRAME-RATE and no
I-frame playlists; players pick renditions from these numbers, so they are measured from the
segment files instead. Everything here works on bytes and text: no process is started.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from typing import Sequence

from transcoder.probe import Packet

AAC_LC = "mp4a.40.2"
PREFERRED_FIRST_BPS = 2_000_000   # Apple: list the variant nearest 2 Mbit/s first
TS_PACKET = 188


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float


@dataclass(frozen=True)
class MediaPlaylist:
    version: int | None
    target_duration: int | None
    playlist_type: str | None
    map_uri: str | None
    segments: tuple[Segment, ...]
    endlist: bool

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Enough of RFC 8216 for the playlists ffmpeg's hls muxer writes."""
    version = target = ptype = map_uri = None
    segments: list[Segment] = []
    pending: float | None = None
    endlist = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-VERSION":
            version = int(value)
        elif tag == "#EXT-X-TARGETDURATION":
            target = int(value)
        elif tag == "#EXT-X-PLAYLIST-TYPE":
            ptype = value
        elif tag == "#EXT-X-MAP":
            found = re.search(r'URI="([^"]*)"', value)
            map_uri = found.group(1) if found else None
        elif tag == "#EXTINF":
            pending = float(value.split(",")[0])
        elif tag == "#EXT-X-ENDLIST":
            endlist = True
        elif not line.startswith("#"):
            if pending is None:
                raise ValueError(f"segment {line!r} has no #EXTINF")
            segments.append(Segment(line, pending))
            pending = None
    return MediaPlaylist(version, target, ptype, map_uri, tuple(segments), endlist)


def peak_bitrate(durations: Sequence[float], sizes: Sequence[int], target: float) -> int:
    """RFC 8216bis peak segment bit rate: the highest rate of any run of consecutive
    segments lasting 0.5-1.5x the target duration (a lone segment when none qualifies)."""
    low, high = 0.5 * target, 1.5 * target
    best = 0.0
    for i in range(len(durations)):
        seconds, total = 0.0, 0
        for j in range(i, len(durations)):
            seconds, total = seconds + durations[j], total + sizes[j]
            if seconds > high:
                break
            if seconds >= low:
                best = max(best, total * 8 / seconds)
    if best == 0.0:
        best = max((s * 8 / d for d, s in zip(durations, sizes) if d > 0), default=0.0)
    return math.ceil(best)


def average_bitrate(durations: Sequence[float], sizes: Sequence[int]) -> int:
    seconds = sum(durations)
    return math.ceil(sum(sizes) * 8 / seconds) if seconds > 0 else 0


def avc_codec_from_init(init: bytes) -> str | None:
    """``avc1.PPCCLL`` from the avcC box of an fMP4 init segment."""
    at = init.find(b"avcC")
    if at < 0 or len(init) < at + 8:
        return None
    profile, compat, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}"


def avc_codec_from_ts(segment: bytes) -> str | None:
    """``avc1.PPCCLL`` from the first SPS in an MPEG-TS segment (payloads are reassembled
    per PID first, so a start code split across TS packets is still found)."""
    payloads: dict[int, bytearray] = {}
    for off in range(0, len(segment) - TS_PACKET + 1, TS_PACKET):
        packet = segment[off:off + TS_PACKET]
        if packet[0] != 0x47:
            continue
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        control = (packet[3] >> 4) & 3
        start = 4 + (1 + packet[4] if control & 2 else 0)
        if control & 1 and start < TS_PACKET:
            payloads.setdefault(pid, bytearray()).extend(packet[start:])
    for data in payloads.values():
        for found in re.finditer(b"\x00\x00\x01", data):
            at = found.end()
            if at + 4 <= len(data) and data[at] & 0x9F == 0x07:  # SPS, forbidden bit clear
                profile, compat, level = data[at + 1], data[at + 2], data[at + 3]
                return f"avc1.{profile:02x}{compat:02x}{level:02x}"
    return None


@dataclass(frozen=True)
class IFrame:
    uri: str
    offset: int
    length: int
    duration: float


def iframe_entries(packets: Sequence[Packet], segments: Sequence[Segment],
                   sizes: Sequence[int], init_size: int, container: str) -> list[IFrame]:
    """Byte ranges of keyframes inside the normal segments.

    ``packets`` positions are offsets into init + segments concatenated. An fMP4 segment from
    ffmpeg is one fragment whose ``moof`` describes every sample, so only its first keyframe is
    addressable: the range runs from the segment start (moof included) to the end of that
    frame. In MPEG-TS every keyframe is: its range runs from the TS packet where its PES starts
    (from the segment start for the first one, so PAT/PMT are included) to the next video
    packet.
    """
    starts, pos = [], init_size
    for size in sizes:
        starts.append(pos)
        pos += size
    video = sorted(packets, key=lambda p: p.pos)
    picked: list[tuple[Packet, int, int]] = []   # packet, segment index, end offset
    for k, packet in enumerate(video):
        seg = bisect.bisect_right(starts, packet.pos) - 1
        if not packet.key or seg < 0:
            continue
        seg_start, seg_end = starts[seg], starts[seg] + sizes[seg]
        first_in_segment = not picked or picked[-1][1] != seg
        if container == "fmp4":
            if first_in_segment:
                picked.append((packet, seg, packet.pos + packet.size - seg_start))
            continue
        following = video[k + 1].pos if k + 1 < len(video) else seg_end
        picked.append((packet, seg, min(following, seg_end) - seg_start))
    if not picked:
        return []
    end_time = video[0].pts + sum(s.duration for s in segments) if video else 0.0
    entries = []
    for i, (packet, seg, end) in enumerate(picked):
        first_in_segment = i == 0 or picked[i - 1][1] != seg
        offset = 0 if first_in_segment else packet.pos - starts[seg]
        next_pts = picked[i + 1][0].pts if i + 1 < len(picked) else end_time
        entries.append(IFrame(segments[seg].uri, offset, end - offset,
                              max(0.001, next_pts - packet.pts)))
    return entries


def iframe_bitrates(entries: Sequence[IFrame]) -> tuple[int, int]:
    """(peak, average) for EXT-X-I-FRAME-STREAM-INF: each I-frame's size over the time it
    stays on screen."""
    peak = max((e.length * 8 / e.duration for e in entries), default=0.0)
    seconds = sum(e.duration for e in entries)
    average = sum(e.length for e in entries) * 8 / seconds if seconds else 0.0
    return math.ceil(peak), math.ceil(average)


def _target(durations: Sequence[float]) -> int:
    return max(1, math.ceil(max(durations, default=1.0) - 1e-3))


def render_iframe_playlist(entries: Sequence[IFrame], map_uri: str | None, version: int) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}",
             f"#EXT-X-TARGETDURATION:{_target([e.duration for e in entries])}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-I-FRAMES-ONLY",
             "#EXT-X-INDEPENDENT-SEGMENTS"]
    if map_uri:
        lines.append(f'#EXT-X-MAP:URI="{map_uri}"')
    for e in entries:
        lines += [f"#EXTINF:{e.duration:.6f},", f"#EXT-X-BYTERANGE:{e.length}@{e.offset}", e.uri]
    return "\n".join(lines + ["#EXT-X-ENDLIST", ""])


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int
    average_bandwidth: int
    codecs: str
    resolution: tuple[int, int] | None
    frame_rate: float | None
    iframe_uri: str | None = None
    iframe_bandwidth: int = 0
    iframe_average_bandwidth: int = 0
    iframe_codecs: str = ""


@dataclass(frozen=True)
class AudioRendition:
    """The one audio rendition every variant shares (``EXT-X-MEDIA TYPE=AUDIO``)."""

    uri: str
    group_id: str
    name: str = "Audio"
    channels: int = 2


def order_variants(variants: Sequence[Variant]) -> list[Variant]:
    """Nearest to 2 Mbit/s first (players start there before measuring), then the rest from
    the best down."""
    if not variants:
        return []
    first = min(variants, key=lambda v: abs(v.average_bandwidth - PREFERRED_FIRST_BPS))
    rest = sorted((v for v in variants if v is not first), key=lambda v: -v.bandwidth)
    return [first, *rest]


def with_audio(video_peak: int, video_average: int, audio_durations: Sequence[float],
               audio_sizes: Sequence[int], target: float) -> tuple[int, int]:
    """(BANDWIDTH, AVERAGE-BANDWIDTH) of a variant whose audio lives in a shared rendition:
    RFC 8216 counts every rendition the variant plays, so the audio's own peak and average
    (measured the same way) are added to the video's."""
    return (video_peak + peak_bitrate(audio_durations, audio_sizes, target),
            video_average + average_bitrate(audio_durations, audio_sizes))


def render_master(variants: Sequence[Variant], version: int,
                  audio: AudioRendition | None = None) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{audio.group_id}",NAME="{audio.name}",'
                     f'DEFAULT=YES,AUTOSELECT=YES,CHANNELS="{audio.channels}",URI="{audio.uri}"')
    ordered = order_variants(variants)
    for v in ordered:
        attrs = [f"BANDWIDTH={v.bandwidth}", f"AVERAGE-BANDWIDTH={v.average_bandwidth}",
                 f'CODECS="{v.codecs}"']
        if v.resolution:
            attrs.append(f"RESOLUTION={v.resolution[0]}x{v.resolution[1]}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        if audio is not None:
            attrs.append(f'AUDIO="{audio.group_id}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), v.uri]
    for v in ordered:
        if v.iframe_uri:
            attrs = [f"BANDWIDTH={v.iframe_bandwidth}",
                     f"AVERAGE-BANDWIDTH={v.iframe_average_bandwidth}",
                     f'CODECS="{v.iframe_codecs}"']
            if v.resolution:
                attrs.append(f"RESOLUTION={v.resolution[0]}x{v.resolution[1]}")
            lines.append("#EXT-X-I-FRAME-STREAM-INF:" + ",".join(attrs) + f',URI="{v.iframe_uri}"')
    return "\n".join(lines + [""])
