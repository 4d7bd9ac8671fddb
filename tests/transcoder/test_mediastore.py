"""The media store (models/mediastore.py) on the file store and on two S3 servers (SeaweedFS
``weed mini`` and moto), so neither the worker nor delivery depends on one implementation:
what is published reads back byte for byte, in order (every object of a rendition before its
playlist, the master last), a republish leaves nothing stale, delete removes everything of the
media and nothing else, and scratch left by a killed worker is swept."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from models.config import S3Config
from models.layout import Layout
from models.mediastore import FileMediaStore, MediaStore, S3MediaStore, Scratch
from tests.support.s3 import S3Server

STORES = ["file", "seaweedfs", "moto"]
ID = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


class Recording:
    """The real client, with the order of the keys it wrote kept (a spy, not a fake)."""

    def __init__(self, client: Any):
        self._client = client
        self.written: list[str] = []

    def put_object(self, **kwargs: Any) -> Any:
        self.written.append(kwargs["Key"])
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class Subject:
    def __init__(self, kind: str, store: MediaStore, root: Path, s3: S3Server | None = None,
                 prefix: str = "", spy: Recording | None = None):
        self.kind, self.store, self.root, self.s3, self.prefix, self.spy = kind, store, root, s3, prefix, spy

    def put_original(self, media_id: str, data: bytes) -> None:
        if self.s3 is None:
            Layout(self.root).original_file(media_id).write_bytes(data)
        else:
            self.s3.client().put_object(Bucket="tusflow-test", Key=f"{self.prefix}originals/{media_id}", Body=data)

    def names(self, media_id: str) -> set[str]:
        """Every published path of the media."""
        if self.s3 is None:
            folder = Layout(self.root).media_dir(media_id)
            return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        base = f"{self.prefix}media/{media_id}/"
        return {k[len(base):] for k in self.s3.keys(base)}


@pytest.fixture(params=STORES)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    root = tmp_path / "var"
    layout = Layout(root)
    layout.ensure()
    if request.param == "file":
        yield Subject("file", FileMediaStore(layout), root)
        return
    s3: S3Server = request.getfixturevalue("s3_servers")(request.param)
    prefix = s3.new_prefix("media")
    cfg = S3Config(**s3.storage_section(prefix))
    store = S3MediaStore(cfg)
    spy = Recording(store.client)
    store.client = spy
    yield Subject(request.param, store, root, s3, prefix, spy)


def rendition(folder: Path, segments: int, size: int = 70_000) -> dict[str, str]:
    """A rendition folder like ffmpeg's: init, segments, media playlist; name → sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"init.mp4": os.urandom(900)}
    lines = ["#EXTM3U", '#EXT-X-MAP:URI="init.mp4"']
    for n in range(segments):
        files[f"seg_{n:05d}.m4s"] = os.urandom(size + n)
        lines += ["#EXTINF:4.0,", f"seg_{n:05d}.m4s"]
    files["index.m3u8"] = ("\n".join(lines + ["#EXT-X-ENDLIST"]) + "\n").encode()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def digest_of(store: MediaStore, media_id: str, path: str) -> str:
    stored = store.stat(media_id, path)
    assert stored is not None, path
    data = b"".join(store.chunks(media_id, path, 0, stored.size))
    assert len(data) == stored.size
    return hashlib.sha256(data).hexdigest()


def test_a_published_rendition_reads_back_identical_with_ranges(subject: Subject, tmp_path: Path) -> None:
    store = subject.store
    sums = rendition(tmp_path / "work" / "360p", 3)
    store.publish_rendition(ID, tmp_path / "work" / "360p", "360p")
    assert subject.names(ID) == {f"360p/{name}" for name in sums}
    for name, digest in sums.items():
        assert digest_of(store, ID, f"360p/{name}") == digest
    whole = b"".join(store.chunks(ID, "360p/seg_00001.m4s", 0, 70_001))
    part = b"".join(store.chunks(ID, "360p/seg_00001.m4s", 100, 1100))
    assert part == whole[100:1100]
    stat = store.stat(ID, "360p/seg_00001.m4s")
    assert stat is not None and stat.size == 70_001 and stat.etag.startswith('"') and stat.modified > 0
    assert (stat.path is not None) == (subject.kind == "file")  # only the file store is local
    assert store.stat(ID, "360p/seg_00009.m4s") is None and store.read(ID, "nope.m3u8") is None
    assert store.stat(OTHER, "360p/index.m3u8") is None


def test_s3_writes_every_object_before_its_playlist_and_the_master_last(subject: Subject, tmp_path: Path) -> None:
    if subject.spy is None:
        pytest.skip("the file store publishes a folder with one rename")
    store, spy = subject.store, subject.spy
    rendition(tmp_path / "a" / "360p", 4)
    store.publish_rendition(ID, tmp_path / "a" / "360p", "360p")
    names = [k.rsplit("/", 1)[-1] for k in spy.written]
    assert names[-1] == "index.m3u8" and names.count("index.m3u8") == 1
    store.write_master(ID, "#EXTM3U\n360p/index.m3u8\n")
    assert spy.written[-1].endswith(f"media/{ID}/master.m3u8")
    # a whole ladder: renditions' objects, then their playlists, the master last
    spy.written.clear()
    ladder = tmp_path / "ladder"
    rendition(ladder / "240p", 2)
    rendition(ladder / "480p", 2)
    (ladder / "poster.jpg").write_bytes(os.urandom(300))
    (ladder / "master.m3u8").write_text("#EXTM3U\n240p/index.m3u8\n480p/index.m3u8\n")
    store.publish_ladder(OTHER, ladder)
    tails = [k.split(f"media/{OTHER}/", 1)[1] for k in spy.written]
    assert tails[-1] == "master.m3u8"
    first_playlist = min(i for i, t in enumerate(tails) if t.endswith(".m3u8"))
    assert all(not t.endswith(".m3u8") for t in tails[:first_playlist])
    assert set(tails[first_playlist:]) == {"240p/index.m3u8", "480p/index.m3u8", "master.m3u8"}
    head = subject.s3.client().head_object(Bucket="tusflow-test", Key=f"{subject.prefix}media/{OTHER}/master.m3u8")
    assert head["ContentType"] == "application/vnd.apple.mpegurl"


def test_republishing_replaces_the_rendition_and_leaves_nothing_stale(subject: Subject, tmp_path: Path) -> None:
    store = subject.store
    rendition(tmp_path / "one" / "360p", 4)
    store.publish_rendition(ID, tmp_path / "one" / "360p", "360p")
    store.write_master(ID, "#EXTM3U\nfirst\n")
    sums = rendition(tmp_path / "two" / "360p", 2)
    store.publish_rendition(ID, tmp_path / "two" / "360p", "360p")
    store.write_master(ID, "#EXTM3U\nsecond\n")
    assert subject.names(ID) == {f"360p/{n}" for n in sums} | {"master.m3u8"}
    assert digest_of(store, ID, "360p/seg_00001.m4s") == sums["seg_00001.m4s"]
    assert store.read(ID, "master.m3u8") == b"#EXTM3U\nsecond\n"
    # a whole ladder over it: the old rendition goes
    ladder = tmp_path / "ladder"
    new = rendition(ladder / "240p", 1)
    (ladder / "master.m3u8").write_text("#EXTM3U\n240p/index.m3u8\n")
    store.publish_ladder(ID, ladder)
    assert subject.names(ID) == {f"240p/{n}" for n in new} | {"master.m3u8"}
    assert store.read(ID, "master.m3u8") == b"#EXTM3U\n240p/index.m3u8\n"


def test_files_and_storyboards_are_published_as_named(subject: Subject, tmp_path: Path) -> None:
    store = subject.store
    poster = tmp_path / "poster.jpg"
    poster.write_bytes(os.urandom(2000))
    digest = hashlib.sha256(poster.read_bytes()).hexdigest()
    store.publish_file(ID, poster, "poster.jpg")
    sprites = tmp_path / "storyboard"
    sprites.mkdir()
    (sprites / "0.jpg").write_bytes(b"sprite")
    store.publish_file(ID, sprites, "storyboard")
    assert subject.names(ID) == {"poster.jpg", "storyboard/0.jpg"}
    assert digest_of(store, ID, "poster.jpg") == digest


def test_fetch_original_gives_a_local_copy_or_file_not_found(subject: Subject, tmp_path: Path) -> None:
    data = os.urandom(9 * 1024**2 + 17)  # more than one ranged part of the download
    subject.put_original(ID, data)
    dest = tmp_path / "scratch" / "original"
    got = subject.store.fetch_original(ID, dest, f"originals/{ID}")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert (got == dest) == (subject.kind != "file")  # the file store reads in place
    with pytest.raises(FileNotFoundError):
        subject.store.fetch_original(OTHER, tmp_path / "scratch" / "other")
    assert not (tmp_path / "scratch" / "other").exists()


def test_delete_media_removes_its_original_and_output_only(subject: Subject, tmp_path: Path) -> None:
    store = subject.store
    for media_id in (ID, OTHER):
        subject.put_original(media_id, b"original bytes")
        rendition(tmp_path / media_id / "360p", 2)
        store.publish_rendition(media_id, tmp_path / media_id / "360p", "360p")
        store.write_master(media_id, "#EXTM3U\n")
    store.delete_media(ID, [f"originals/{ID}"])
    assert subject.names(ID) == set() and store.stat(ID, "master.m3u8") is None
    with pytest.raises(FileNotFoundError):
        store.fetch_original(ID, tmp_path / "gone")
    assert "master.m3u8" in subject.names(OTHER)
    assert store.fetch_original(OTHER, tmp_path / "kept").read_bytes() == b"original bytes"
    store.delete_output(OTHER)
    assert subject.names(OTHER) == set()


# ---------------------------------------------------------------------------------- scratch
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_scratch_of_a_killed_worker_is_swept_and_live_or_foreign_ones_stay(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "scratch")
    mine = scratch.start(ID, 1)
    (mine / "original").write_bytes(b"x" * 100)
    dead = scratch.attempt(OTHER, 2)
    dead.mkdir()
    (dead / Scratch.OWNER).write_text(f"{socket.gethostname()} {_dead_pid()}")
    (dead / "original").write_bytes(b"y" * 100)
    foreign = scratch.attempt(OTHER, 3)
    foreign.mkdir()
    (foreign / Scratch.OWNER).write_text("another-host 1 1")
    assert scratch.sweep() == [dead.name]
    assert mine.is_dir() and foreign.is_dir() and not dead.exists()
    scratch.clear(OTHER)
    assert not foreign.exists() and mine.is_dir()
    scratch.remove(mine)
    assert list((tmp_path / "scratch").iterdir()) == []


def test_scratch_owned_by_a_reused_pid_is_swept(tmp_path: Path) -> None:
    """The same pid with another start time is another process: its folder is stale."""
    scratch = Scratch(tmp_path / "scratch")
    folder = scratch.attempt(ID, 1)
    folder.mkdir(parents=True)
    (folder / Scratch.OWNER).write_text(f"{socket.gethostname()} {os.getpid()} 1")
    assert scratch.sweep() == [folder.name]

