"""Join the chunked ladder's parts into one ladder folder, shaped exactly like ``transcode``'s.

Pure file work, no encoder, on local copies of the parts (``MediaStore.fetch_part``: the file
store's staging in place, or the S3 store's objects downloaded): for every rung the chunks' segments are linked in order under one
numbering (hard links, so a join killed half-way leaves the parts intact and simply runs
again), the one init segment is kept (every chunk's init of a rung must be byte-identical, see
``ffmpeg.chunk_command``), and one VOD media playlist is written. Then each rung is measured
from its joined files (``progressive.describe``: codec string, I-frame playlist, peak and
average bitrate of the joined playlist against the shared audio group) and the master is
written. ``progressive.finish_ladder`` publishes the folder beside the stand-in.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from models.config import TranscodeConfig
from transcoder import chunks
from transcoder.errors import FfmpegFailed, InputRejected
from transcoder.extras import STORYBOARD_VTT, StoryboardPlan
from transcoder.ffmpeg import AUDIO_GROUP, INIT_SEGMENT, MASTER_PLAYLIST, MEDIA_PLAYLIST
from transcoder.ladder import RenditionPlan, lean_ladder
from transcoder.pipeline import TranscodeResult
from transcoder.playlists import parse_media_playlist, with_audio
from transcoder.probe import ProbeResult
from transcoder.progressive import PLAYLIST_VERSION, Piece, describe, master_text

SEGMENT_NAME = "seg_{:05d}.m4s"
TRUNCATED_RATIO = 0.9
TRUNCATED_SLACK_S = 1.0


def media_playlist(segments: Sequence[tuple[str, float]], map_uri: str) -> str:
    """RFC 8216 VOD playlist; TARGETDURATION is every EXTINF rounded up (not ffmpeg's lrint)."""
    target = max(1, math.ceil(max(d for _, d in segments) - 1e-3))
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{PLAYLIST_VERSION}", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD",
             "#EXT-X-INDEPENDENT-SEGMENTS", f'#EXT-X-MAP:URI="{map_uri}"']
    for uri, duration in segments:
        lines += [f"#EXTINF:{duration:.6f},", uri]
    return "\n".join(lines + ["#EXT-X-ENDLIST", ""])


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem or no hard links: a copy is as good
        shutil.copyfile(src, dst)


Located = Mapping[str, tuple[Path, dict[str, Any]]]  # part -> (local folder, its marker)


def join_rung(located: Located, parts: Sequence[str], name: str, out: Path) -> float:
    """Write rung ``name`` of every chunk in ``parts`` into ``out/name``; its duration.
    ``located``: each committed part's local folder and marker (``MediaStore.fetch_part``)."""
    folder = out / name
    folder.mkdir(parents=True)
    init_hash: str | None = None
    segments: list[tuple[str, float]] = []
    for part in parts:
        folder_facts = located.get(part)
        facts = folder_facts[1] if folder_facts is not None else None
        if folder_facts is None or facts is None or name not in facts.get("rungs", {}):
            raise FfmpegFailed("A part of the converted video is missing.",
                               detail=f"{part}: no {name} in its marker")
        rung = facts["rungs"][name]
        src = folder_facts[0] / name
        if init_hash is None:
            init_hash = rung["init_sha256"]
            _link(src / rung["map"], folder / INIT_SEGMENT)
        elif rung["init_sha256"] != init_hash:
            raise FfmpegFailed("The parts of the converted video do not fit together.",
                               detail=f"{name}: {part}'s init segment differs from the first "
                                      "chunk's (another ffmpeg/x264 build or other settings?)")
        for uri, duration in rung["segments"]:
            joined = SEGMENT_NAME.format(len(segments))
            _link(src / uri, folder / joined)
            segments.append((joined, float(duration)))
    (folder / MEDIA_PLAYLIST).write_text(media_playlist(segments, INIT_SEGMENT),
                                         encoding="utf-8")
    return sum(d for _, d in segments)


def join_ladder(located: Located, plan: dict[str, Any], plans: Sequence[RenditionPlan],
                info: ProbeResult, cfg: TranscodeConfig, out: Path, deadline: float,
                storyboard: StoryboardPlan | None) -> TranscodeResult:
    """The whole ladder folder ``out`` (rungs, audio group, extras, master) from the parts."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    parts = [chunks.chunk_part(i) for i in range(len(plan["chunks"]))]
    durations = {p.name: join_rung(located, parts, p.name, out) for p in plans}
    top = durations[plans[0].name]
    if top < info.duration * TRUNCATED_RATIO and info.duration - top > TRUNCATED_SLACK_S:
        raise InputRejected(f"The video stops after {top:.0f} s of its {info.duration:.0f} "
                            "s: the file looks incomplete.")
    audio_dir = None
    poster = storyboard_name = None
    if chunks.AUDIO_PART in located:
        src, audio_facts = located[chunks.AUDIO_PART]
        if audio_facts.get("audio") and (src / AUDIO_GROUP / MEDIA_PLAYLIST).is_file():
            audio_dir = out / AUDIO_GROUP
            shutil.copytree(src / AUDIO_GROUP, audio_dir, copy_function=_link_copy)
        for extra in audio_facts.get("extras", []):
            _link(src / extra, out / extra)
        poster = audio_facts.get("poster")
        if audio_facts.get("storyboard") and storyboard is not None:
            storyboard_name = STORYBOARD_VTT
            (out / STORYBOARD_VTT).write_text(storyboard.vtt(top), encoding="utf-8")
    pieces = []
    for p in plans:
        piece = describe(out / p.name, p.name, info, cfg, deadline)
        variant = dataclasses.replace(piece.variant, frame_rate=round(p.frame_rate, 3)
                                      if p.frame_rate else piece.variant.frame_rate,
                                      bandwidth=piece.video_peak,
                                      average_bandwidth=piece.video_average)
        pieces.append(dataclasses.replace(piece, variant=variant))
    keep = lean_ladder([p.video_average for p in pieces], cfg.rung_min_saving)
    for piece, kept in zip(pieces, keep):
        if not kept:
            shutil.rmtree(out / piece.name, ignore_errors=True)
    pieces = [_with_audio(p, audio_dir) for p, kept in zip(pieces, keep) if kept]
    (out / MASTER_PLAYLIST).write_text(master_text(pieces, AUDIO_GROUP if audio_dir else None),
                                       encoding="utf-8")
    renditions = [{"name": p.name, "width": p.variant.resolution[0] if p.variant.resolution
                   else None,
                   "height": p.variant.resolution[1] if p.variant.resolution else None,
                   "bandwidth": p.variant.bandwidth,
                   "average_bandwidth": p.variant.average_bandwidth,
                   "codecs": p.variant.codecs, "frame_rate": p.variant.frame_rate,
                   "playlist": p.variant.uri} for p in pieces]
    first = renditions[0]
    return TranscodeResult(round(top, 3), first["width"], first["height"], renditions,
                           MASTER_PLAYLIST, poster, storyboard_name)


def _link_copy(src: str, dst: str) -> None:
    _link(Path(src), Path(dst))


def _with_audio(piece: Piece, audio_dir: Path | None) -> Piece:
    """A rung's declared numbers: its joined video plus the shared audio group's."""
    if audio_dir is None:
        return piece
    playlist = parse_media_playlist((audio_dir / MEDIA_PLAYLIST).read_text(encoding="utf-8"))
    sizes = [(audio_dir / s.uri).stat().st_size for s in playlist.segments]
    peak, average = with_audio(piece.video_peak, piece.video_average,
                               [s.duration for s in playlist.segments], sizes, piece.target)
    return dataclasses.replace(piece, variant=dataclasses.replace(
        piece.variant, bandwidth=peak, average_bandwidth=average))
