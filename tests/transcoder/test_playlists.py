"""Playlist parsing, measuring and writing on hand-made inputs."""

import pytest

from transcoder.playlists import (
    IFrame, Segment, Variant, average_bitrate, avc_codec_from_init, avc_codec_from_ts,
    iframe_bitrates, iframe_entries, order_variants, parse_media_playlist, peak_bitrate,
    render_iframe_playlist, render_master,
)
from transcoder.probe import Packet, parse_packet_scan
from tests.support.ffkit import parse_attributes, parse_master

FFMPEG_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init_0.mp4"
#EXTINF:6.000000,
seg_00000.m4s
#EXTINF:1.500000,
seg_00001.m4s
#EXT-X-ENDLIST
"""


def test_parse_media_playlist():
    pl = parse_media_playlist(FFMPEG_PLAYLIST)
    assert pl.version == 7 and pl.target_duration == 6 and pl.playlist_type == "VOD"
    assert pl.map_uri == "init_0.mp4" and pl.endlist
    assert pl.segments == (Segment("seg_00000.m4s", 6.0), Segment("seg_00001.m4s", 1.5))
    assert pl.duration == 7.5


def test_unfinished_playlists_are_visible():
    pl = parse_media_playlist(FFMPEG_PLAYLIST.replace("#EXT-X-ENDLIST\n", ""))
    assert not pl.endlist
    with pytest.raises(ValueError):
        parse_media_playlist("#EXTM3U\nseg.ts\n")


def test_peak_uses_runs_of_segments_near_the_target_duration():
    durations, sizes = [6.0, 6.0, 1.5], [600_000, 900_000, 300_000]
    # Best qualifying run is the last two segments: 1.2 MB in 7.5 s.
    assert peak_bitrate(durations, sizes, 6) == 1_280_000
    assert average_bitrate(durations, sizes) == 1_066_667  # 1.8 MB in 13.5 s, rounded up


def test_peak_falls_back_to_single_segments_for_short_videos():
    assert peak_bitrate([1.0], [1000], 6) == 8000
    assert average_bitrate([], []) == 0


def test_avc_codec_from_fmp4_init():
    init = b"\x00" * 40 + b"avcC" + bytes([1, 0x64, 0x00, 0x1F, 0xFF]) + b"\x00" * 10
    assert avc_codec_from_init(init) == "avc1.64001f"
    assert avc_codec_from_init(b"no video here") is None


def ts_packet(pid: int, payload: bytes, start: bool) -> bytes:
    header = bytes([0x47, (0x40 if start else 0) | (pid >> 8), pid & 0xFF, 0x10])
    return header + payload.ljust(184, b"\xff")


def test_avc_codec_from_ts_finds_an_sps_split_across_packets():
    first = b"\x00\x00\x01\xe0\x00\x00\x80\x80\x05" + b"\x21" * 5 + b"\x00\x00\x00\x01\x09\xf0"
    first += b"\xaa" * (184 - len(first) - 5) + b"\x00\x00\x00\x01\x67"
    segment = (ts_packet(0x100, first, True) + ts_packet(0x101, b"\x00\x00\x01\x67\x42\xc0\x1e",
                                                         True)
               + ts_packet(0x100, b"\x64\x00\x28\xac", False))
    codec = avc_codec_from_ts(segment)
    # Both PIDs carry an SPS here; the video PID's one is the first PID seen.
    assert codec == "avc1.640028"
    assert avc_codec_from_ts(ts_packet(0x100, b"\x00" * 20, True)) is None


def test_fmp4_iframes_use_the_first_keyframe_of_each_segment_with_its_moof():
    packets = [Packet(0.0, 300, 300, True), Packet(0.5, 600, 80, False),
               Packet(1.0, 800, 50, True), Packet(2.0, 1250, 400, True)]
    segs = [Segment("a.m4s", 2.0), Segment("b.m4s", 2.0)]
    entries = iframe_entries(packets, segs, [1000, 1000], 100, "fmp4")
    assert entries == [IFrame("a.m4s", 0, 500, 2.0), IFrame("b.m4s", 0, 550, 2.0)]


def test_ts_iframes_cover_every_keyframe_up_to_the_next_video_packet():
    packets = [Packet(0.0, 0, 500, True), Packet(0.5, 752, 90, False),
               Packet(1.0, 1128, 300, True), Packet(2.0, 1880, 600, True),
               Packet(3.0, 2632, 80, False)]
    segs = [Segment("a.ts", 2.0), Segment("b.ts", 2.0)]
    entries = iframe_entries(packets, segs, [1880, 1880], 0, "ts")
    assert entries == [IFrame("a.ts", 0, 752, 1.0), IFrame("a.ts", 1128, 752, 1.0),
                       IFrame("b.ts", 0, 752, 2.0)]
    peak, average = iframe_bitrates(entries)
    assert peak == 752 * 8 and average == 752 * 3 * 8 // 4


def test_iframe_playlist_text():
    text = render_iframe_playlist([IFrame("a.m4s", 0, 500, 2.0), IFrame("b.m4s", 0, 550, 1.2)],
                                  "init.mp4", 7)
    lines = text.splitlines()
    assert "#EXT-X-I-FRAMES-ONLY" in lines and "#EXT-X-PLAYLIST-TYPE:VOD" in lines
    assert '#EXT-X-MAP:URI="init.mp4"' in lines and lines[-1] == "#EXT-X-ENDLIST"
    assert "#EXT-X-TARGETDURATION:2" in lines
    assert lines[lines.index("#EXT-X-BYTERANGE:550@0") + 1] == "b.m4s"


def variant(name, avg, iframe=True, resolution=(640, 360)):
    return Variant(f"{name}/index.m3u8", avg * 11 // 10, avg, "avc1.64001e,mp4a.40.2",
                   resolution, 29.97, f"{name}/iframes.m3u8" if iframe else None, 90_000,
                   30_000, "avc1.64001e")


def test_first_variant_is_the_one_nearest_2_mbit():
    ordered = order_variants([variant("a", 5_000_000), variant("b", 1_200_000),
                              variant("c", 2_600_000), variant("d", 400_000)])
    assert [v.uri[0] for v in ordered] == ["c", "a", "b", "d"]


def test_master_playlist_attributes():
    text = render_master([variant("hi", 3_000_000), variant("lo", 800_000)], 7)
    variants, iframes, lines = parse_master(text)
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    attrs, uri = variants[0]
    assert uri == "hi/index.m3u8"
    assert attrs == {"BANDWIDTH": "3300000", "AVERAGE-BANDWIDTH": "3000000",
                     "CODECS": "avc1.64001e,mp4a.40.2", "RESOLUTION": "640x360",
                     "FRAME-RATE": "29.970"}
    assert [i["URI"] for i in iframes] == ["hi/iframes.m3u8", "lo/iframes.m3u8"]
    assert iframes[0]["CODECS"] == "avc1.64001e" and "FRAME-RATE" not in iframes[0]


def test_audio_only_master_has_no_video_attributes():
    audio = Variant("audio/index.m3u8", 140_000, 130_000, "mp4a.40.2", None, None)
    variants, iframes, _ = parse_master(render_master([audio], 7))
    assert variants == [({"BANDWIDTH": "140000", "AVERAGE-BANDWIDTH": "130000",
                          "CODECS": "mp4a.40.2"}, "audio/index.m3u8")]
    assert iframes == []


def test_attribute_parser_handles_quoted_commas():
    assert parse_attributes('A=1,CODECS="x,y",URI="u"') == {"A": "1", "CODECS": "x,y", "URI": "u"}


def test_packet_scan_parser():
    scan = parse_packet_scan("packet|pts_time=0.021|size=16466|pos=4220|flags=K_\n"
                             "packet|pts_time=0.054|size=900|pos=20686|flags=__\n"
                             "packet|pts_time=N/A|size=1|pos=N/A|flags=__\n"
                             "stream|width=640|height=360\n")
    assert scan.packets == [Packet(0.021, 4220, 16466, True), Packet(0.054, 20686, 900, False)]
    assert (scan.width, scan.height) == (640, 360)
