"""Chunk staging through the media store: the chunked ladder on workers that share nothing but
the S3 store, PostgreSQL/SQLite and Redis (each its own data_dir), and the staging calls of
both stores (a part is visible whole or not at all; a later run replaces an earlier one)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable

import pytest

from models.config import load_settings
from models.layout import Layout
from models.lifecycle import MediaState
from models.mediastore import FileMediaStore, S3MediaStore
from tests.support.media import make_clip
from tests.support.procs import write_config
from tests.support.s3 import BUCKET, S3Server
from tests.support.stack import Stack, upload
from tests.support.waiting import wait_until
from tests.support.chunked import CHUNKED, check_joined_ladder, part_lines

# Two hosts share one SQLite file on purpose (S3 is what is under test): not run on PostgreSQL.
pytestmark = pytest.mark.media_only

GENERATION = "transcode-m1"


@pytest.fixture(scope="module")
def ten_s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s at 25 fps with a tone: three 4 s chunks, the last one short."""
    return make_clip(tmp_path_factory.mktemp("chunked-store") / "ten.mp4", 640, 360, seconds=10)


def _s3_section(s3_servers: Callable[[str], S3Server], name: str) -> tuple[S3Server, dict]:
    server = s3_servers("seaweedfs")
    prefix = server.new_prefix(name)
    return server, server.storage_section(prefix, part_size=5 * 1024**2)


def _config_with(base: Path, path: Path, data_dir: Path) -> Path:
    """``base`` with another data_dir: what a worker on another machine would load."""
    sections: dict[str, Any] = tomllib.loads(base.read_text())
    sections["storage"]["data_dir"] = str(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return write_config(path, sections)


def _download(server: S3Server, prefix: str, dest: Path) -> Path:
    client = server.client()
    for key in server.keys(prefix):
        target = dest / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, key, str(target))
    return dest


def test_chunked_ladder_on_two_workers_sharing_only_the_s3_store(
        jobs_config: Callable[..., Path], start_server: Callable, s3_servers: Callable,
        ten_s: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s3, section = _s3_section(s3_servers, request.node.name)
    prefix = section["prefix"]
    base = jobs_config(transcode=CHUNKED, storage={"backend": "s3", "s3": section},
                       locks={"backend": "file"},
                       database={"url": f"sqlite:///{tmp_path / 'shared.db'}"})
    web = Stack(base)
    server = start_server(config=base)
    stacks = [Stack(_config_with(base, tmp_path / f"{n}.toml", tmp_path / f"host-{n}"))
              for n in ("a", "b")]
    try:
        workers = [st.start_worker(n) for st, n in zip(stacks, ("a", "b"))]
        media_id = upload(server.url, ten_s)
        done = web.wait_state(media_id, (MediaState.READY, MediaState.FAILED), timeout=240)
        assert done.state == MediaState.READY, done.error + "\n" + "\n".join(
            w.output[-3000:] for w in workers)
        for part in ("chunk-0", "chunk-1", "chunk-2", "audio", "join"):
            assert part_lines(workers, media_id, f"part={part}"), part
        ran = [w for w in workers if part_lines([w], media_id, "event=part.start")]
        assert len(ran) == 2, "both hosts should have run parts"
        out = _download(s3, f"{prefix}media/{media_id}/", tmp_path / "published")
        check_joined_ladder(out, ten_s, tmp_path)
        assert (out / "poster.jpg").stat().st_size > 0
        # staging in the store is gone; nothing of it was ever on the web host's data_dir
        wait_until(lambda: not s3.keys(f"{prefix}staging/"), 20, what="S3 staging removed")
        assert not list(Layout(web.settings.data_dir).scratch.glob(f"{media_id}*"))
        for st in stacks:  # each host's own scratch: no work folder, no cached original left
            scratch = Layout(st.settings.data_dir).scratch
            wait_until(lambda: not [p for p in scratch.rglob("*") if media_id in str(p)], 30,
                       what=f"{scratch} cleaned")
    finally:
        for st in stacks:
            st.close()
        web.close()


# ------------------------------------------------------------------------------ store calls
@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, s3_servers: Callable) -> Any:
    if request.param == "file":
        return FileMediaStore(Layout(tmp_path / "var"))
    _, section = _s3_section(s3_servers, request.node.name)
    settings = load_settings(write_config(tmp_path / "c.toml", {
        "storage": {"data_dir": str(tmp_path / "var"), "backend": "s3", "s3": section}}), env={})
    return S3MediaStore(settings.storage.s3)


def _part(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_a_part_is_visible_whole_and_a_later_run_replaces_it(store: Any, tmp_path: Path) -> None:
    store.put_staged("m1", GENERATION, "plan.json", {"chunks": [[0, 4]]})
    assert store.get_staged("m1", GENERATION, "plan.json") == {"chunks": [[0, 4]]}
    assert store.part_facts("m1", GENERATION, "c00000") is None
    assert store.fetch_part("m1", GENERATION, "c00000", tmp_path / "got0") is None
    first = _part(tmp_path / "run1", {"240p/index.m3u8": b"one", "240p/seg_0.m4s": b"a",
                                      "240p/seg_1.m4s": b"b"})
    store.commit_part("m1", GENERATION, "c00000", first, {"run": 1})
    second = _part(tmp_path / "run2", {"240p/index.m3u8": b"two", "240p/seg_0.m4s": b"A"})
    store.commit_part("m1", GENERATION, "c00000", second, {"run": 2})
    assert store.part_facts("m1", GENERATION, "c00000") == {"run": 2}
    got = store.fetch_part("m1", GENERATION, "c00000", tmp_path / "got")
    assert got is not None
    files = {p.relative_to(got).as_posix(): p.read_bytes() for p in got.rglob("*")
             if p.is_file() and p.name != "done.json"}
    assert files == {"240p/index.m3u8": b"two", "240p/seg_0.m4s": b"A"}  # nothing of run 1
    assert store.staged_parts("m1", GENERATION) == ["c00000"]
    store.put_staged("m1", GENERATION + "-2", "plan.json", {"newer": True})
    store.delete_staging("m1", keep=GENERATION + "-2")
    assert store.get_staged("m1", GENERATION, "plan.json") is None
    assert store.part_facts("m1", GENERATION, "c00000") is None
    assert store.get_staged("m1", GENERATION + "-2", "plan.json") == {"newer": True}
    store.delete_media("m1", [])
    assert store.get_staged("m1", GENERATION + "-2", "plan.json") is None
