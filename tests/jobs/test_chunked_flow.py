"""The chunked ladder end to end: ``tusflow serve`` + ``tusflow worker`` processes, real
redis-server and ffmpeg. A 10 s clip with ``chunk_seconds = 4`` (2 s segments, 1 s IDRs) is
three chunks (4 + 4 + 2 s, the last one short), each its own RQ job, plus the audio part and
the join. Checked from the published files with ffprobe, independently of the transcoder."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pytest
from rq import Queue
from rq.job import Job

from models.layout import Layout
from models.lifecycle import MediaState
from models.redis_conn import connect
from tests.support.media import make_clip
from tests.support.stack import SLOW_LADDER, upload
from tests.support.waiting import wait_until
from tests.transcoder.kit import ffprobe, parse_attributes

CHUNKED = {"ladder": SLOW_LADDER, "chunk_seconds": 4.0, "segment_duration": 2,
           "keyframe_interval": 1, "first_rung": "240p"}


@pytest.fixture(scope="module")
def ten_s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s at 25 fps with a 48 kHz tone: not a multiple of the 4 s chunks."""
    return make_clip(tmp_path_factory.mktemp("chunked") / "ten.mp4", 640, 360, seconds=10)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _segments(playlist: Path) -> tuple[str | None, list[tuple[str, float]]]:
    init, out, pending = None, [], None
    for line in playlist.read_text().splitlines():
        if line.startswith("#EXT-X-MAP:"):
            init = parse_attributes(line.split(":", 1)[1])["URI"]
        elif line.startswith("#EXTINF:"):
            pending = float(line.split(":", 1)[1].split(",")[0])
        elif line and not line.startswith("#"):
            out.append((line, pending))
    return init, out


def _joined(folder: Path, tmp: Path) -> Path:
    """init + every segment of a rendition, as a player appends them."""
    init, segs = _segments(folder / "index.m3u8")
    joined = tmp / f"{folder.name}.mp4"
    with joined.open("wb") as out:
        if init:
            out.write((folder / init).read_bytes())
        for uri, _ in segs:
            out.write((folder / uri).read_bytes())
    return joined


def _part_lines(stack_workers, media_id: str, what: str) -> list[str]:
    return [line for w in stack_workers for line in w.output.splitlines()
            if what in line and media_id in line]


def check_joined_ladder(out: Path, source: Path, tmp: Path) -> None:
    """Every rendition one continuous stream: frames in exact steps across the chunk joins,
    an IDR at every segment start, as long as the source; audio as long as the video;
    declared bandwidth within 10 % of what the joined playlist measures."""
    src = ffprobe(source, "-show_format", "-show_streams")
    duration = float(src["format"]["duration"])
    fps = 25.0
    master = (out / "master.m3u8").read_text()
    variants = [(parse_attributes(line.split(":", 1)[1]), master.splitlines()[i + 1])
                for i, line in enumerate(master.splitlines())
                if line.startswith("#EXT-X-STREAM-INF:")]
    assert {uri.split("/")[0] for _, uri in variants} >= {"360p", "240p"}, master
    assert "source/" not in master
    audio_dir = out / "audio"
    _, audio_segs = _segments(audio_dir / "index.m3u8")
    audio_bytes = sum((audio_dir / u).stat().st_size for u, _ in audio_segs)
    audio_secs = sum(d for _, d in audio_segs)
    for attrs, uri in variants:
        folder = out / uri.split("/")[0]
        joined = _joined(folder, tmp)
        packets = ffprobe(joined, "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time,dts_time,flags")["packets"]
        pts = sorted(float(p["pts_time"]) for p in packets)
        dts = [float(p["dts_time"]) for p in packets]
        assert all(b > a for a, b in zip(dts, dts[1:])), "decode order not monotonic"
        steps = [round(b - a, 4) for a, b in zip(pts, pts[1:])]
        assert set(steps) == {round(1 / fps, 4)}, f"{uri}: gaps/overlaps {sorted(set(steps))}"
        assert pts[0] == pytest.approx(0.0, abs=1e-3)
        assert len(pts) == round(duration * fps), f"{uri}: {len(pts)} frames"
        # IDR at every segment start, all at whole seconds (the shared 1 s grid)
        _, segs = _segments(folder / "index.m3u8")
        starts, t = [], 0.0
        for _, d in segs:
            starts.append(round(t, 3))
            t += d
        keys = {round(float(p["pts_time"]), 3) for p in packets if "K" in p["flags"]}
        assert set(starts) <= keys, (starts, sorted(keys))
        assert all(abs(k - round(k)) < 1e-3 for k in keys)
        assert max(d for _, d in segs) <= 2.0 + 1e-3
        # declared numbers against the joined files
        video_bytes = sum((folder / u).stat().st_size for u, _ in segs)
        measured = (video_bytes + audio_bytes) * 8 / sum(d for _, d in segs)
        declared = int(attrs["AVERAGE-BANDWIDTH"])
        assert abs(declared - measured) <= 0.1 * measured, (uri, declared, measured)
        assert int(attrs["BANDWIDTH"]) >= declared
        proc = ffprobe(joined, "-show_format")
        assert float(proc["format"]["duration"]) == pytest.approx(duration, abs=0.05)
    # audio: one stream for the whole file, ending with the video (within a frame)
    assert audio_secs == pytest.approx(duration, abs=1 / fps + 0.03)
    assert "#EXT-X-MEDIA:TYPE=AUDIO" in master


def test_chunked_ladder_is_one_continuous_stream_per_rendition(
        stack: Callable, start_server: Callable, ten_s: Path, tmp_path: Path) -> None:
    s = stack(transcode=CHUNKED)
    server = start_server(config=s.config)
    workers = [s.start_worker("a"), s.start_worker("b")]
    media_id = upload(server.url, ten_s)
    done = s.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=180)
    assert done.state == MediaState.READY, done.error
    # three chunk jobs, one audio part and one join, on whichever worker was free
    for part in ("chunk-0", "chunk-1", "chunk-2", "audio", "join"):
        assert _part_lines(workers, media_id, f"part={part}"), part
    assert not _part_lines(workers, media_id, "part=chunk-3")
    out = Layout(s.settings.data_dir).media_dir(media_id)
    check_joined_ladder(out, ten_s, tmp_path)
    assert (out / "poster.jpg").stat().st_size > 0
    assert not list(Layout(s.settings.data_dir).scratch.glob(f"{media_id}.parts*"))
    status, body = _get(f"{server.origin}/api/media/{media_id}")
    item = json.loads(body)
    assert status == 200 and item["state"] == "ready" and item["progress"] == 100
    assert [r["state"] for r in item["renditions"]] == ["ready"] * len(item["renditions"])
    # the whole-video job handed its ladder over and did not encode it itself
    assert _part_lines(workers, media_id, "event=transcode.fanned_out")
