"""Progressive publish: a first rendition out in seconds, then the ladder, one master at a time.

``run`` turns one source into a published ladder in two stages:

1. a *stand-in*: the source stream-copied (``transcoder.fastpath``) or, for sources the fast
   path cannot take, one quick low rung. With ``[transcode] progressive`` it is published at
   once and the master lists it: the media becomes ``playable``. When the copy fits the top
   rung it *is* that rung and stays; otherwise it leaves the master once the ladder is out
   (its files stay, so a player already playing it keeps playing).
2. the ladder (``transcoder.pipeline.transcode``, capped-CRF rungs, shared
   audio group, loudness, tone mapping) for every remaining rung.

Publishing a piece means: all its segments and its media playlist are written in scratch,
then the folder is handed to the media store (``models.mediastore``: one rename into
``media/<id>/`` on the file store; every object, then its media playlist, on S3), then the
master is rebuilt from what is published and replaced (atomically on either store). A player
never sees a rendition before all of it exists, and a SIGKILLed worker leaves only scratch
behind.

Without ``progressive`` every piece goes into one staged directory which the caller publishes
as a whole (``MediaStore.publish_ladder``), exactly as before.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from models import mediastore
from models.config import TranscodeConfig
from models.lifecycle import RenditionState
from models.mediastore import MediaStore
from transcoder import fastpath
from transcoder.extras import STORYBOARD_FILE
from transcoder.errors import FfmpegFailed
from transcoder.ffmpeg import AUDIO_GROUP, IFRAME_PLAYLIST, MASTER_PLAYLIST, MEDIA_PLAYLIST
from transcoder.ladder import RenditionPlan, plan_ladder
from transcoder.pipeline import Running, StopCheck, TranscodeResult, run_ffmpeg, transcode
from transcoder.playlists import (
    AAC_LC, AudioRendition, MediaPlaylist, Variant, average_bitrate, avc_codec_from_init,
    iframe_bitrates, iframe_entries, parse_media_playlist, peak_bitrate, render_iframe_playlist,
    render_master, with_audio,
)
from transcoder.probe import PacketScan, ProbeResult, ladder_limits, scan_video_packets

COPY_SHARE = 3.0     # percent of the bar a stream copy covers
QUICK_SHARE = 20.0   # ... and a quick first rung
PLAYLIST_VERSION = 7

ProgressHook = Callable[[float, "float | None", list[dict]], None]


@dataclass
class Hooks:
    """What the job hears while ``run`` works; each may be None."""

    progress: ProgressHook | None = None                       # percent, eta, renditions
    verdict: Callable[[fastpath.Verdict], None] | None = None
    playable: Callable[[list[dict], float, int | None, int | None], None] | None = None


@dataclass
class Piece:
    """A published (or publishable) video rendition and the numbers the master needs."""

    name: str
    variant: Variant
    video_peak: int
    video_average: int
    target: int


@dataclass
class Board:
    """Every rendition's state and progress, in the order the media JSON lists them."""

    rows: list[dict] = field(default_factory=list)

    def add(self, name: str, role: str, plan: RenditionPlan | None = None) -> None:
        self.rows.append({"name": name, "role": role, "state": RenditionState.PENDING.value,
                          "progress": 0.0, "width": plan.width if plan else None,
                          "height": plan.height if plan else None})

    def set(self, name: str, **values: object) -> None:
        for row in self.rows:
            if row["name"] == name:
                row.update({k: (v.value if isinstance(v, RenditionState) else v)
                            for k, v in values.items()})

    def names(self, role: str | None = None) -> list[str]:
        return [r["name"] for r in self.rows if role is None or r["role"] == role]

    def snapshot(self) -> list[dict]:
        return [dict(r) for r in self.rows]


class Target(Protocol):
    """Where ``run`` publishes pieces: the media store (``StoreTarget``) or a local folder."""

    def place(self, src: Path, name: str) -> None: ...

    def master(self, text: str) -> None: ...


class StoreTarget:
    """The media's published output, through its store: what ``progressive`` writes to."""

    def __init__(self, store: MediaStore, media_id: str):
        self.store = store
        self.media_id = media_id

    def place(self, src: Path, name: str) -> None:
        if src.is_dir():
            self.store.publish_rendition(self.media_id, src, name)
        else:
            self.store.publish_file(self.media_id, src, name)

    def master(self, text: str) -> None:
        self.store.write_master(self.media_id, text)


class LocalTarget:
    """A local folder: the staged ladder the caller publishes whole, or a test's directory."""

    def __init__(self, root: Path, trash: Path):
        self.root = root
        self.trash = trash
        root.mkdir(parents=True, exist_ok=True)

    def place(self, src: Path, name: str) -> None:
        mediastore.place(src, self.root, name, self.trash)

    def master(self, text: str) -> None:
        mediastore.write_atomic(self.root / MASTER_PLAYLIST, text)


@dataclass
class Remaining:
    """What is left after the stand-in: handed to a fan-out (the chunked ladder, whose parts
    run as other jobs) and, once the ladder exists, back to ``finish_ladder``. JSON-safe."""

    board: list[dict]
    standin: str | None
    top_rung: str | None
    published: list[Piece]
    stand_share: float
    names: list[str]

    def as_json(self) -> dict:
        return {"board": self.board, "standin": self.standin, "top_rung": self.top_rung,
                "stand_share": self.stand_share, "names": self.names,
                "published": [dataclasses.asdict(p) for p in self.published]}

    @classmethod
    def from_json(cls, data: dict) -> "Remaining":
        pieces = []
        for p in data["published"]:
            v = dict(p["variant"])
            v["resolution"] = tuple(v["resolution"]) if v.get("resolution") else None
            pieces.append(Piece(p["name"], Variant(**v), p["video_peak"], p["video_average"],
                                p["target"]))
        return cls(data["board"], data["standin"], data["top_rung"], pieces,
                   data["stand_share"], data["names"])


# Called with the remaining rungs, their configuration and what the stand-in left; True when
# it took the ladder over (``run`` then returns None: the chunked ladder's join finishes).
FanOut = Callable[[list[RenditionPlan], TranscodeConfig, Remaining], bool]


def run(source: Path, info: ProbeResult, cfg: TranscodeConfig, scratch: Path,
        target: Path | Target, deadline: float, should_stop: Callable[[], bool] | None = None,
        hooks: Hooks | None = None, fan_out: FanOut | None = None) -> TranscodeResult | None:
    """Convert ``source`` into ``target``: the media's store (``progressive``) or an empty
    staged directory that the caller publishes whole (not ``progressive``). A plain path is
    a local folder. With ``fan_out`` (``progressive`` only) the rungs after the stand-in may
    be handed to the chunked ladder: None is returned and its join job finishes the media."""
    hooks = hooks or Hooks()
    stop = StopCheck(should_stop)
    stop.check(force=True)
    scratch.mkdir(parents=True, exist_ok=True)
    out: Target = LocalTarget(target, scratch) if isinstance(target, Path) else target
    stage = scratch / "stage"
    copying = _copy_early(info, cfg, stage, deadline)
    try:
        return _run(source, info, cfg, scratch, stage, out, deadline, stop, should_stop,
                    hooks, fan_out, copying)
    finally:
        if copying is not None:
            copying.abandon()


def _copy_early(info: ProbeResult, cfg: TranscodeConfig, stage: Path,
                deadline: float) -> Running | None:
    """Start the stream copy before the packet scan has judged the source, when the streams
    alone allow it: on a 10-minute lecture the scan and the copy each took about a third of
    a second one after the other, and playable waited for both. A copy the scan then refuses
    is killed and its stage removed; without ``progressive`` a copy is only kept as the top
    rung, so it is not started early."""
    if not (cfg.fast_path and cfg.progressive and info.video is not None
            and fastpath.stream_refusal(info, cfg) is None):
        return None
    _stage(stage, [fastpath.COPY_NAME] + ([fastpath.FIRST_AUDIO] if info.audio else []))
    return Running(fastpath.copy_command(cfg, info), stage,
                   ladder_limits(cfg, info, [], deadline - time.monotonic()))


def _run(source: Path, info: ProbeResult, cfg: TranscodeConfig, scratch: Path, stage: Path,
         out: Target, deadline: float, stop: StopCheck,
         should_stop: Callable[[], bool] | None, hooks: Hooks, fan_out: FanOut | None,
         copying: Running | None) -> TranscodeResult | None:
    packets = None
    if cfg.fast_path and info.video is not None:
        packets = fastpath.scan_source(cfg, info, max(1.0, min(fastpath.SCAN_TIMEOUT_S,
                                                                 deadline - time.monotonic())))
    verdict = fastpath.assess(info, packets, cfg)
    if hooks.verdict:
        hooks.verdict(verdict)

    # What to make: a stand-in (copy or quick rung), then the remaining rungs.
    ladder_cfg = cfg
    standin: str | None = None
    quick_plan: RenditionPlan | None = None
    full = plan_ladder(info, cfg)
    board = Board()
    if verdict.eligible and verdict.top_rung is not None and (cfg.audio_group
                                                              or info.audio is None):
        standin = verdict.top_rung
        top_short = min(full[0].width or 0, full[0].height or 0)
        # The copy's GOP becomes everybody's IDR interval, so segment cuts line up.
        ladder_cfg = dataclasses.replace(
            cfg, keyframe_interval=verdict.keyframe_interval or cfg.keyframe_interval,
            ladder=tuple(r for r in cfg.ladder if r.height < top_short))
        board.add(standin, "copy", full[0])
    elif verdict.eligible and cfg.progressive:
        standin = fastpath.COPY_NAME
        board.add(standin, "standin")
    elif info.video is not None and cfg.progressive and len(full) > 1 and cfg.first_rung:
        quick_plan = fastpath.first_rung_plan(info, cfg)
        standin = quick_plan.name
        board.add(standin, "standin", quick_plan)
    ladder_plans = plan_ladder(info, ladder_cfg) if ladder_cfg.ladder else []
    for plan in ladder_plans:
        board.add(plan.name, "ladder", plan)

    report = _Reporter(hooks.progress, board)
    published: list[Piece] = []
    stand_share = 0.0
    if standin is not None:
        stand_share = QUICK_SHARE if quick_plan is not None else COPY_SHARE
        if not ladder_plans:
            stand_share = 100.0
        board.set(standin, state=RenditionState.ENCODING)
        report(0.0, None)
        progress = report.scaled(0.0, stand_share, [standin])
        if copying is not None and quick_plan is None:
            copying.follow(info.duration, deadline, progress, stop)
            if standin != fastpath.COPY_NAME:
                os.rename(stage / fastpath.COPY_NAME, stage / standin)
        else:
            if copying is not None:
                copying.abandon()
            _stage(stage, [standin] + ([AUDIO_GROUP if quick_plan else fastpath.FIRST_AUDIO]
                                       if info.audio is not None else []))
            argv = (fastpath.first_rung_command(cfg, info, quick_plan) if quick_plan is not None
                    else fastpath.copy_command(cfg, info, standin))
            sizes = [(quick_plan.width, quick_plan.height)] if quick_plan is not None else []
            run_ffmpeg(argv, stage, info.duration, deadline, progress, stop,
                       ladder_limits(cfg, info, sizes, deadline - time.monotonic()))
        if quick_plan is not None and info.audio is not None:
            os.rename(stage / AUDIO_GROUP, stage / fastpath.FIRST_AUDIO)
        _fix_target_duration(stage / standin / MEDIA_PLAYLIST)
        piece = describe(stage / standin, standin, info, cfg, deadline,
                         iframes=not cfg.progressive)
        audio_dir = stage / fastpath.FIRST_AUDIO if info.audio is not None else None
        stop.check(force=True)
        if cfg.progressive:
            kept = keep_for_iframes(stage / standin, scratch / "iframes" / standin)
            if audio_dir is not None:
                out.place(audio_dir, fastpath.FIRST_AUDIO)
            out.place(stage / standin, standin)
            group = fastpath.FIRST_AUDIO if audio_dir else None
            out.master(master_text([piece], group))
            board.set(standin, state=RenditionState.READY, progress=100.0)
            report(stand_share, None)
            if hooks.playable:
                hooks.playable(board.snapshot(), round(info.duration, 3),
                               piece.variant.resolution[0] if piece.variant.resolution else None,
                               piece.variant.resolution[1] if piece.variant.resolution else None)
            piece = with_iframes(piece, kept, cfg, out, deadline)
            out.master(master_text([piece], group))
        published.append(piece)

    elif copying is not None:
        copying.abandon()
        shutil.rmtree(stage, ignore_errors=True)

    if not ladder_plans:
        if not published:
            raise FfmpegFailed("Nothing was planned for this video.")
        if not cfg.progressive:
            for name in [published[0].name, fastpath.FIRST_AUDIO]:
                if (scratch / "stage" / name).exists():
                    out.place(scratch / "stage" / name, name)
        out.master(master_text(published, fastpath.FIRST_AUDIO if info.audio is not None else None))
        board.set(published[0].name, state=RenditionState.READY, progress=100.0)
        report(100.0, 0.0)
        res = published[0].variant.resolution
        return TranscodeResult(round(info.duration, 3), res[0] if res else None,
                               res[1] if res else None, board.snapshot(), MASTER_PLAYLIST,
                               None, None)

    lnames = [p.name for p in ladder_plans]
    for name in lnames:
        board.set(name, state=RenditionState.ENCODING)
    remaining = Remaining(board.rows, standin, verdict.top_rung, published, stand_share, lnames)
    if fan_out is not None and cfg.progressive and fan_out(ladder_plans, ladder_cfg, remaining):
        report(stand_share, None)
        return None
    ladder_dir = scratch / "ladder"
    _fresh(ladder_dir)
    result = transcode(source, ladder_dir, ladder_cfg,
                       on_progress=report.scaled(stand_share, 100.0, lnames),
                       timeout=max(1.0, deadline - time.monotonic()), should_stop=should_stop,
                       probed=info)
    stop.check(force=True)
    return finish_ladder(result, ladder_dir, remaining, cfg, out, scratch, report)


def finish_ladder(result: TranscodeResult, ladder_dir: Path, remaining: Remaining,
                  cfg: TranscodeConfig, out: Target, scratch: Path,
                  report: "_Reporter | None" = None) -> TranscodeResult:
    """Publish a written ladder (``transcode``'s output, or the chunked ladder's join) beside
    the stand-in: each rendition folder, then the master."""
    board = Board(remaining.board)
    if report is None:
        report = _Reporter(None, board)
    report.board = board
    standin, published, lnames = remaining.standin, remaining.published, remaining.names
    made = {r["name"] for r in result.renditions}
    variants, group = parse_master((ladder_dir / MASTER_PLAYLIST).read_text(encoding="utf-8"))
    # Measured against the audio group while it is still in scratch (a store may not hand
    # published files back).
    final = list(variants)
    if remaining.top_rung is not None and standin == remaining.top_rung:
        top = published[0]
        final.insert(0, _with_group_audio(top, ladder_dir / AUDIO_GROUP if group else None))
    if not cfg.progressive and standin is not None:
        stage = scratch / "stage"
        if remaining.top_rung == standin:
            out.place(stage / standin, standin)
    for name in lnames:
        if name in made:
            out.place(ladder_dir / name, name)
    if group is not None:
        out.place(ladder_dir / AUDIO_GROUP, AUDIO_GROUP)
    extras = [result.poster] + ([STORYBOARD_FILE, result.storyboard] if result.storyboard
                                else [])
    for extra in extras:
        if extra and (ladder_dir / extra).exists():
            out.place(ladder_dir / extra, extra)
    out.master(master_text(final, AUDIO_GROUP if group else None))
    for name in lnames:
        board.set(name, state=RenditionState.READY if name in made else RenditionState.DROPPED,
                  progress=100.0)
    if standin is not None and standin != remaining.top_rung:
        board.set(standin, state=RenditionState.REPLACED)
    elif standin is not None:
        board.set(standin, state=RenditionState.READY, progress=100.0)
    for row, rendition in ((r, _find(result.renditions, r["name"])) for r in board.rows):
        if rendition:
            row.update({k: rendition.get(k) for k in ("width", "height", "bandwidth",
                                                      "average_bandwidth", "codecs",
                                                      "frame_rate")})
    for piece in final:
        row_name = piece.variant.uri.split("/")[0]
        board.set(row_name, bandwidth=piece.variant.bandwidth,
                  average_bandwidth=piece.variant.average_bandwidth, codecs=piece.variant.codecs,
                  frame_rate=piece.variant.frame_rate)
    report(100.0, 0.0)
    first = final[0].variant.resolution
    # Ready: the list is what the master holds (a stand-in that left it is history).
    kept = [r for r in board.snapshot() if r["state"] != RenditionState.REPLACED]
    return TranscodeResult(result.duration, first[0] if first else result.width,
                           first[1] if first else result.height, kept,
                           MASTER_PLAYLIST, result.poster, result.storyboard)


def _find(rows: list[dict], name: str) -> dict | None:
    return next((r for r in rows if r.get("name") == name), None)


class _Reporter:
    """Turns ffmpeg progress of one stage into the media's percent and the board's rows."""

    def __init__(self, hook: ProgressHook | None, board: Board) -> None:
        self.hook = hook
        self.board = board

    def __call__(self, percent: float, eta: float | None) -> None:
        if self.hook:
            self.hook(percent, eta, self.board.snapshot())

    def scaled(self, low: float, high: float,
               names: list[str]) -> Callable[[float, float | None], None]:
        def report(percent: float, eta: float | None) -> None:
            for name in names:
                self.board.set(name, progress=round(min(percent, 99.9), 1))
            self(low + (high - low) * percent / 100.0, eta)
        return report


# ---------------------------------------------------------------------------------- describing
def describe(folder: Path, name: str, info: ProbeResult, cfg: TranscodeConfig,
             deadline: float, iframes: bool = True) -> Piece:
    """Measure one written video rendition (its own files, not what was asked for) and write
    its I-frame playlist. ``iframes=False`` reads the init segment alone (the picture size)
    and leaves the I-frame playlist to ``with_iframes``: listing every packet is a pass over
    the whole rendition, as long as the stream copy itself, and a stand-in must not wait for
    it (a 10-minute copy: 0.35 s of the 0.7 s between probe and playable)."""
    try:
        playlist, sizes, init = _listing(folder)
    except (OSError, ValueError) as exc:
        raise FfmpegFailed("The converter did not produce a complete video.",
                           detail=f"{name}: {exc}") from exc
    if not playlist.segments or not playlist.endlist:
        raise FfmpegFailed("The converter did not produce a complete video.",
                           detail=f"{name}: incomplete playlist")
    durations = [s.duration for s in playlist.segments]
    target = playlist.target_duration or cfg.segment_duration
    codec = avc_codec_from_init(init) or ""
    files = _packet_files(folder, playlist, segments=iframes)
    scan = (scan_video_packets(files, "fmp4", cfg, max(1.0, deadline - time.monotonic()))
            if files else PacketScan([], None, None))
    iframe_uri, ipeak, iavg = (_write_iframes(folder, name, playlist, sizes, len(init), scan)
                               if iframes else (None, 0, 0))
    peak, average = peak_bitrate(durations, sizes, target), average_bitrate(durations, sizes)
    width, height = scan.width, scan.height
    if info.video is not None and (width is None or height is None):
        width, height = info.video.width, info.video.height
    codecs = ",".join([codec] + ([AAC_LC] if info.audio is not None else []))
    fps = round(float(info.video.fps), 3) if info.video is not None else None
    variant = Variant(f"{name}/{MEDIA_PLAYLIST}", peak, average, codecs,
                      (width, height) if width and height else None, fps, iframe_uri, ipeak,
                      iavg, codec)
    if info.audio is not None:
        variant = _add_audio(variant, peak, average, target, folder.parent / fastpath.FIRST_AUDIO)
    return Piece(name, variant, peak, average, target)


def _add_audio(variant: Variant, peak: int, average: int, target: int,
               audio_dir: Path | None) -> Variant:
    if audio_dir is None or not (audio_dir / MEDIA_PLAYLIST).exists():
        return variant
    playlist = parse_media_playlist((audio_dir / MEDIA_PLAYLIST).read_text(encoding="utf-8"))
    sizes = [(audio_dir / s.uri).stat().st_size for s in playlist.segments]
    total, avg = with_audio(peak, average, [s.duration for s in playlist.segments], sizes, target)
    return dataclasses.replace(variant, bandwidth=total, average_bandwidth=avg)


def _with_group_audio(piece: Piece, audio_dir: Path | None) -> Piece:
    """The copied top rung's numbers against the ladder's (final) audio group."""
    variant = dataclasses.replace(piece.variant, bandwidth=piece.video_peak,
                                  average_bandwidth=piece.video_average)
    variant = _add_audio(variant, piece.video_peak, piece.video_average, piece.target, audio_dir)
    return dataclasses.replace(piece, variant=variant)


_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def parse_master(text: str) -> tuple[list[Piece], str | None]:
    """The variants (and the audio group id) of a master ``render_master`` wrote, so the
    ladder's measured numbers are reused rather than measured twice."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    iframes: dict[str, dict[str, str]] = {}
    group = None
    for line in lines:
        if line.startswith("#EXT-X-I-FRAME-STREAM-INF:"):
            attrs = {k: v.strip('"') for k, v in _ATTR.findall(line.split(":", 1)[1])}
            iframes[attrs["URI"].split("/")[0]] = attrs
        elif line.startswith("#EXT-X-MEDIA:"):
            attrs = {k: v.strip('"') for k, v in _ATTR.findall(line.split(":", 1)[1])}
            if attrs.get("TYPE") == "AUDIO":
                group = attrs.get("GROUP-ID")
    pieces = []
    for i, line in enumerate(lines):
        if not line.startswith("#EXT-X-STREAM-INF:"):
            continue
        attrs = {k: v.strip('"') for k, v in _ATTR.findall(line.split(":", 1)[1])}
        uri = lines[i + 1]
        name = uri.split("/")[0]
        res = attrs.get("RESOLUTION")
        resolution = tuple(int(x) for x in res.split("x")) if res else None
        iframe = iframes.get(name, {})
        variant = Variant(uri, int(attrs["BANDWIDTH"]), int(attrs.get("AVERAGE-BANDWIDTH", 0)),
                          attrs.get("CODECS", ""), resolution,  # type: ignore[arg-type]
                          float(attrs["FRAME-RATE"]) if "FRAME-RATE" in attrs else None,
                          iframe.get("URI"), int(iframe.get("BANDWIDTH", 0)),
                          int(iframe.get("AVERAGE-BANDWIDTH", 0)), iframe.get("CODECS", ""))
        pieces.append(Piece(name, variant, variant.bandwidth, variant.average_bandwidth, 0))
    return pieces, group


def _fix_target_duration(path: Path) -> None:
    """ffmpeg rounds TARGETDURATION (``lrint``): a stream copy's 6.5 s GOP segment would be
    longer than the target it declares. RFC 8216: at least every EXTINF, rounded up."""
    text = path.read_text(encoding="utf-8")
    longest = max((float(m) for m in re.findall(r"#EXTINF:([0-9.]+)", text)), default=1.0)
    target = max(1, math.ceil(longest - 1e-3))
    path.write_text(re.sub(r"#EXT-X-TARGETDURATION:\d+", f"#EXT-X-TARGETDURATION:{target}",
                           text), encoding="utf-8")


# ---------------------------------------------------------------------------------- publishing
def _listing(folder: Path) -> tuple[MediaPlaylist, list[int], bytes]:
    """A written rendition's media playlist, its segments' sizes and its init segment."""
    playlist = parse_media_playlist((folder / MEDIA_PLAYLIST).read_text(encoding="utf-8"))
    sizes = [(folder / seg.uri).stat().st_size for seg in playlist.segments]
    init = (folder / playlist.map_uri).read_bytes() if playlist.map_uri else b""
    return playlist, sizes, init


def _packet_files(folder: Path, playlist: MediaPlaylist, segments: bool = True) -> list[Path]:
    """What the packet scan reads, in order: the init segment, then (``segments``) the rest."""
    files = [folder / playlist.map_uri] if playlist.map_uri else []
    return files + ([folder / seg.uri for seg in playlist.segments] if segments else [])


def _write_iframes(folder: Path, name: str, playlist: MediaPlaylist, sizes: list[int],
                   init_size: int, scan: PacketScan) -> tuple[str | None, int, int]:
    """The rendition's I-frame playlist from its packet list: its URI and bandwidths."""
    entries = iframe_entries(scan.packets, playlist.segments, sizes, init_size, "fmp4")
    if not entries:
        return None, 0, 0
    (folder / IFRAME_PLAYLIST).write_text(
        render_iframe_playlist(entries, playlist.map_uri, PLAYLIST_VERSION), encoding="utf-8")
    peak, average = iframe_bitrates(entries)
    return f"{name}/{IFRAME_PLAYLIST}", peak, average


def keep_for_iframes(folder: Path, keep: Path) -> Path:
    """Hard links to a stand-in's files, so its I-frame playlist can be made after the folder
    was published (renamed away, or uploaded) without holding up playable."""
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    for item in folder.iterdir():
        if item.is_file():
            try:
                os.link(item, keep / item.name)
            except OSError:  # another filesystem, or no hard links there
                shutil.copy2(item, keep / item.name)
    return keep


def with_iframes(piece: Piece, kept: Path, cfg: TranscodeConfig, out: Target,
                 deadline: float) -> Piece:
    """The published stand-in's I-frame playlist (see ``describe``), placed beside its media
    playlist; the piece gains it. Trick play is a nicety: a stand-in that cannot be listed
    keeps playing without one."""
    try:
        playlist, sizes, init = _listing(kept)
        if not playlist.map_uri:
            return piece
        scan = scan_video_packets(_packet_files(kept, playlist), "fmp4", cfg,
                                  max(1.0, deadline - time.monotonic()))
        uri, peak, average = _write_iframes(kept, piece.name, playlist, sizes, len(init), scan)
        if uri is None:
            return piece
        out.place(kept / IFRAME_PLAYLIST, uri)
    except (OSError, ValueError, FfmpegFailed):
        return piece
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    return dataclasses.replace(piece, variant=dataclasses.replace(
        piece.variant, iframe_uri=uri, iframe_bandwidth=peak, iframe_average_bandwidth=average))


def master_text(pieces: list[Piece], audio_group: str | None) -> str:
    """The master from what is published (or about to be, in the same order)."""
    audio = AudioRendition(f"{audio_group}/{MEDIA_PLAYLIST}", audio_group) if audio_group else None
    return render_master([p.variant for p in pieces], PLAYLIST_VERSION, audio)


def write_master(root: Path, pieces: list[Piece], audio_group: str | None) -> None:
    """The master written into a local folder, beside itself and renamed over the old one:
    readers get the old or the new file, never half of one."""
    mediastore.write_atomic(root / MASTER_PLAYLIST, master_text(pieces, audio_group))


def _fresh(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def _stage(stage: Path, names: list[str]) -> None:
    """An empty stage with one folder per output: ffmpeg's hls muxer creates files, not dirs."""
    _fresh(stage)
    for name in names:
        (stage / name).mkdir()
