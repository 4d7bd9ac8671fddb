"""The chunked ladder's planning (pure) and its ffmpeg commands joined (real ffmpeg 5.1):
chunks of one rung join into one stream with no gap or overlap, IDRs on one absolute grid
and one byte-identical init segment, also for a lower rung at half the frame rate and a
source whose length is not a multiple of the chunk length."""

from __future__ import annotations

import hashlib
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from models.config import Rung, TranscodeConfig
from models.layout import Layout
from models.mediastore import FileMediaStore
from transcoder import chunks
from transcoder.errors import FfmpegFailed
from transcoder.ffmpeg import chunk_command
from transcoder.join import join_rung
from transcoder.ladder import RenditionPlan, plan_ladder
from transcoder.probe import probe
from tests.support.ffkit import ffprobe, make_clip


def test_grid_step_is_a_common_multiple_of_segment_and_keyframe_interval() -> None:
    assert chunks.grid_step(6, 2) == 6
    assert chunks.grid_step(6, 4) == 12
    assert chunks.grid_step(2, 1) == 2
    assert chunks.grid_step(6, 2.002) == pytest.approx(6.006)  # no common multiple: whole GOPs


def test_chunks_cover_the_file_and_a_short_tail_joins_the_last_chunk() -> None:
    cuts = chunks.plan_chunks(10.0, 4.0, 2, 1)
    assert [(c.start, c.end) for c in cuts] == [(0.0, 4.0), (4.0, 8.0), (8.0, None)]
    cuts = chunks.plan_chunks(130.0, 31.0, 6, 2)  # 31 s rounds to 5 segments of 6 s
    assert [c.start for c in cuts] == [0, 30, 60, 90, 120]
    cuts = chunks.plan_chunks(121.0, 30.0, 6, 2)  # 1 s tail: shorter than a segment
    assert [c.start for c in cuts] == [0, 30, 60, 90] and cuts[-1].end is None
    assert len(chunks.plan_chunks(20.0, 60.0, 6, 2)) == 1


def test_frames_and_keyframes_are_on_each_rungs_absolute_grid() -> None:
    top = RenditionPlan("480p", 854, 480, Fraction(60), 1000, 96)
    low = RenditionPlan("240p", 426, 240, Fraction(30), 400, 64)
    ntsc = RenditionPlan("720p", 1280, 720, Fraction(30000, 1001), 2000, 96)
    chunk = chunks.Chunk(1, 6.0, 12.0)
    assert chunks.frame_ranges(chunk, [top, low, ntsc]) == [(360, 720), (180, 360), (180, 360)]
    assert chunks.keyframe_times(chunk, 20.0, 2) == [6.0, 8.0, 10.0]
    seek, stop = chunks.input_window(chunk, [top, low])
    assert seek == pytest.approx(6.0 - 0.5 / 60) and stop == pytest.approx(12.0 + 1.5 / 60)
    assert chunks.input_window(chunks.Chunk(2, 12.0, None), [top])[1] is None


def test_inexact_demuxers_seek_to_before_the_keyframe_that_starts_each_chunk() -> None:
    cuts = [chunks.Chunk(0, 0.0, 4.0), chunks.Chunk(1, 4.0, 8.0), chunks.Chunk(2, 8.0, None)]
    # 3 s GOPs: chunk 1 (4 s) must decode from the 3 s keyframe, chunk 2 (8 s) from 6 s
    assert chunks.seek_leads(cuts, [0.0, 3.0, 6.0, 9.0]) == [0.0, 2.5, 5.5]
    # a keyframe exactly at the chunk start is the one to start from
    assert chunks.seek_leads(cuts, [0.0, 4.0, 8.0])[1:] == [3.5, 7.5]
    # one keyframe in the file: every chunk decodes from the start
    assert chunks.seek_leads(cuts, [0.0]) == [0.0, 0.0, 0.0]
    plans = [RenditionPlan("240p", 426, 240, Fraction(25), 400, 64)]
    assert chunks.input_window(cuts[1], plans, 2.5)[0] == 2.5
    assert chunks.input_window(cuts[1], plans)[0] == pytest.approx(4.0 - 0.5 / 25)
    assert chunks.input_window(cuts[1], plans, 9.0)[0] == pytest.approx(4.0 - 0.5 / 25)  # never later


def test_weights_and_progress_sum_over_parts() -> None:
    cuts = chunks.plan_chunks(10.0, 4.0, 2, 1)
    w = chunks.weights(cuts, 10.0, audio=True)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["chunk-0"] == pytest.approx(w["chunk-1"]) and w["chunk-2"] == pytest.approx(
        w["chunk-0"] / 2)
    half = chunks.ladder_fraction({"chunk-0": 1.0, "chunk-1": 0.5}, w)
    assert half == pytest.approx(w["chunk-0"] + w["chunk-1"] / 2)


@pytest.fixture(scope="module")
def sixty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s at 60 fps: its 240p rung is encoded at 30 fps; 5 s is not a multiple of 2 s."""
    return make_clip(tmp_path_factory.mktemp("chunks") / "sixty.mp4", size="854x480", rate=60,
                     duration=5.0, audio=False)


MEDIA, GENERATION = "m" * 32, "transcode-" + "m" * 32


def work_dir(tmp_path: Path, part: str) -> Path:
    folder = tmp_path / "work" / part
    folder.mkdir(parents=True)
    return folder


def committed(store: FileMediaStore, parts: list[str]) -> dict[str, tuple[Path, dict]]:
    """The committed parts as the join job reads them (``partjobs._join``)."""
    out = {}
    for part in parts:
        folder = store.fetch_part(MEDIA, GENERATION, chunks.part_name(part), Path("unused"))
        facts = chunks.read_json(folder / chunks.DONE_FILE) if folder else None
        if folder is not None and facts is not None:
            out[part] = (folder, facts)
    return out


def test_chunks_join_into_one_continuous_stream_per_rung(sixty: Path, tmp_path: Path) -> None:
    cfg = TranscodeConfig(ladder=(Rung("480p", 480, 1000, 96, 23), Rung("240p", 240, 400, 64, 23)),
                          segment_duration=1, keyframe_interval=1, preset="veryfast",
                          timeout_min=60)
    info = probe(sixty, cfg)
    plans = plan_ladder(info, cfg)
    assert [p.fps for p in plans] == [60, 30]
    cuts = chunks.plan_chunks(info.duration, 2.0, 1, 1)
    assert len(cuts) == 3 and cuts[-1].length(info.duration) == pytest.approx(1.0)
    store = FileMediaStore(Layout(tmp_path / "data"))
    for cut in cuts:
        work = work_dir(tmp_path, chunks.chunk_part(cut.index))
        for p in plans:
            (work / p.name).mkdir()
        seek, stop = chunks.input_window(cut, plans)
        argv = chunk_command(cfg, info, plans, seek, stop, chunks.frame_ranges(cut, plans),
                             chunks.keyframe_times(cut, info.duration, 1))
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        rungs = {}
        for p in plans:
            playlist = (work / p.name / "index.m3u8").read_text()
            init = next((work / p.name).glob("init*.mp4"))
            segs = [line for line in playlist.splitlines() if line.endswith(".m4s")]
            durs = [float(line.split(":")[1].rstrip(",")) for line in playlist.splitlines()
                    if line.startswith("#EXTINF:")]
            rungs[p.name] = {"map": init.name, "segments": list(map(list, zip(segs, durs))),
                             "init_sha256": hashlib.sha256(init.read_bytes()).hexdigest()}
        store.commit_part(MEDIA, GENERATION, chunks.part_name(chunks.chunk_part(cut.index)), work,
                          {"rungs": rungs})
    parts = [chunks.chunk_part(c.index) for c in cuts]
    located = committed(store, parts)
    assert sorted(located) == sorted(parts)
    inits = {p.name: {located[part][1]["rungs"][p.name]["init_sha256"] for part in parts}
             for p in plans}
    assert all(len(v) == 1 for v in inits.values()), inits  # one init per rung
    out = tmp_path / "out"
    for p in plans:
        total = join_rung(located, parts, p.name, out)
        assert total == pytest.approx(5.0, abs=1e-3)
        folder = out / p.name
        joined = tmp_path / f"{p.name}.mp4"
        names = [line for line in (folder / "index.m3u8").read_text().splitlines()
                 if line.endswith(".m4s")]
        joined.write_bytes((folder / "init.mp4").read_bytes() +
                           b"".join((folder / n).read_bytes() for n in names))
        packets = ffprobe(joined, "-select_streams", "v:0",
                          "-show_entries", "packet=pts_time,flags")["packets"]
        pts = sorted(float(x["pts_time"]) for x in packets)
        fps = float(p.fps)
        assert len(pts) == round(5.0 * fps)
        assert {round(b - a, 4) for a, b in zip(pts, pts[1:])} == {round(1 / fps, 4)}
        keys = sorted(float(x["pts_time"]) for x in packets if "K" in x["flags"])
        assert keys == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])  # one grid, every chunk
        decode = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(joined), "-f",
                                 "null", "-"], capture_output=True, text=True, timeout=120)
        assert decode.returncode == 0 and not decode.stderr.strip(), decode.stderr


def test_a_chunk_with_another_init_is_refused_at_the_join(tmp_path: Path) -> None:
    store = FileMediaStore(Layout(tmp_path / "data"))
    for i, digest in enumerate(["aa", "bb"]):
        work = work_dir(tmp_path, chunks.chunk_part(i))
        (work / "240p").mkdir()
        (work / "240p" / "init_0.mp4").write_bytes(digest.encode())
        (work / "240p" / "seg_00000.m4s").write_bytes(b"x")
        store.commit_part(MEDIA, GENERATION, chunks.part_name(chunks.chunk_part(i)), work, {"rungs": {"240p": {
            "map": "init_0.mp4", "init_sha256": digest, "segments": [["seg_00000.m4s", 1.0]]}}})
    with pytest.raises(FfmpegFailed, match="do not fit together"):
        join_rung(committed(store, ["chunk-0", "chunk-1"]), ["chunk-0", "chunk-1"],
                  "240p", tmp_path / "out")
