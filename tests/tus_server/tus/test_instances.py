"""Two ``tusflow serve`` instances that share nothing but PostgreSQL, Redis and S3.

Each instance has its own data_dir; a round-robin proxy (no stickiness: every connection goes
to the next instance) stands where a load balancer would. What one machine did with flock
files and a shared disk must now work across machines: resuming an upload on the other
instance, a HEAD on one instance releasing a stalled PATCH on the other, and the change feed
of one instance carrying what the other did. A worker on a third data_dir turns an upload into
a video that either instance plays back, from the bucket.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.media import make_clip
from tests.support.procs import TUSFLOW, Proc, RedisServer, TusflowServer, write_config
from tests.support.proxy import LoopbackProxy
from tests.support.s3 import S3Server
from tests.support.stack import TINY_LADDER

PART = 5 * 1024**2
TUS = {"Tus-Resumable": "1.0.0"}


class RoundRobinProxy(LoopbackProxy):
    """Each new connection goes to the next target in turn, like a load balancer without
    sticky sessions."""

    def __init__(self, targets: list[str]):
        self.targets = [(urlsplit(t).hostname or "127.0.0.1", urlsplit(t).port or 80) for t in targets]
        self._next = itertools.cycle(range(len(self.targets)))
        self.chosen: list[int] = []
        super().__init__(targets[0])

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        index = next(self._next)
        self.chosen.append(index)
        try:
            up_r, up_w = await asyncio.open_connection(*self.targets[index])
        except OSError:
            client_w.close()
            return

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                writer.write_eof()
            except (ConnectionError, OSError, RuntimeError):
                pass

        await asyncio.gather(pump(client_r, up_w), pump(up_r, client_w))
        for w in (client_w, up_w):
            w.close()


class Cluster:
    def __init__(self, a: TusflowServer, b: TusflowServer, proxy: RoundRobinProxy,
                 config: Callable[..., Path], s3: S3Server, prefix: str):
        self.a, self.b, self.proxy = a, b, proxy
        self.base = proxy.url_for(a.url)  # the endpoint as clients see it
        self.config = config  # config(name, **sections): another machine's config
        self.s3, self.prefix = s3, prefix

    def client(self) -> httpx.Client:
        """No keep-alive: every request is a new connection, so requests alternate instances."""
        return httpx.Client(headers={**TUS, "Connection": "close"}, timeout=30,
                            limits=httpx.Limits(max_keepalive_connections=0))


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, redis_server: RedisServer,
            s3_servers: Callable[[str], S3Server],
            start_server: Callable[..., TusflowServer]) -> Iterator[Cluster]:
    s3 = s3_servers("seaweedfs")
    prefix = s3.new_prefix("instances")

    def config(name: str, **sections: dict[str, Any]) -> Path:
        """A machine of its own: its data_dir, and PostgreSQL, Redis and S3 shared."""
        return write_config(tmp_path / f"{name}.toml", {
            "storage": {"data_dir": str(tmp_path / f"data-{name}"), "fsync": False, "backend": "s3",
                        "s3": s3.storage_section(prefix, part_size=PART)},
            "database": {"url": postgres_url},
            "redis": {"url": redis_server.url},
            # [locks] backend stays "auto": with S3 storage that is Redis.
            "server": {"lock_timeout": 5.0, "body_idle_timeout": 60.0},
            **sections,
        })
    servers = [start_server(config=config(name)) for name in ("a", "b")]
    proxy = RoundRobinProxy([servers[0].origin, servers[1].origin])
    yield Cluster(servers[0], servers[1], proxy, config, s3, prefix)
    proxy.close()


def create(http: httpx.Client, base: str, length: int, **meta: str) -> str:
    import base64
    metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
    r = http.post(base, headers={"Upload-Length": str(length), **({"Upload-Metadata": metadata} if metadata else {})})
    assert r.status_code == 201, r.text
    return urlsplit(r.headers["location"]).path


def offset_of(http: httpx.Client, origin: str, path: str) -> int:
    r = http.head(origin + path)
    assert r.status_code == 200, (r.status_code, r.headers)
    return int(r.headers["upload-offset"])


def patch(http: httpx.Client, origin: str, path: str, offset: int, body: bytes) -> httpx.Response:
    return http.patch(origin + path, content=body, headers={
        "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})


def cut_patch(origin: str, path: str, offset: int, declared: int, body: bytes) -> None:
    """A PATCH whose connection is lost after ``body`` of the ``declared`` bytes."""
    parts = urlsplit(origin)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
                      f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
                      f"Content-Length: {declared}\r\n\r\n").encode() + body)
        sock.shutdown(socket.SHUT_RDWR)


def offset_after_cut(http: httpx.Client, origin: str, path: str, before: int) -> int:
    """The offset once the cut PATCH has been stored. The proxy may still be forwarding its
    body when the next HEAD reaches the other instance, and that HEAD rightly answers the old
    offset; a client that went on from there would get 409 when the cut PATCH lands."""
    deadline = time.monotonic() + 20
    for _ in range(400):
        offset = offset_of(http, origin, path)
        if offset != before or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert offset > before, "the cut PATCH kept none of the bytes that arrived"
    return offset


def test_upload_cut_and_resumed_across_instances_arrives_identical(cluster: Cluster) -> None:
    data = os.urandom(3 * PART + 12345)
    origin = cluster.proxy.origin
    with cluster.client() as http:
        path = create(http, cluster.base, len(data), filename="lecture.bin")
        chunk = PART + PART // 2  # chunks that straddle S3 part boundaries
        cuts = 0
        while True:
            offset = offset_of(http, origin, path)  # whichever instance answers, it knows
            if offset == len(data):
                break
            piece = data[offset:offset + chunk]
            if cuts < 2:  # the network drops half way through this PATCH
                cuts += 1
                cut_patch(origin, path, offset, len(piece), piece[: len(piece) // 2])
                offset_after_cut(http, origin, path, offset)
                continue
            r = patch(http, origin, path, offset, piece)
            assert r.status_code == 204, (r.status_code, r.text)
        assert cuts == 2
        assert len(set(cluster.proxy.chosen)) == 2  # both instances served this upload
        for server in (cluster.a, cluster.b):  # either instance hands the same bytes back
            got = httpx.get(server.origin + path, headers=TUS, timeout=60)
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()


def test_stalled_patch_on_one_instance_is_released_by_a_head_on_the_other(cluster: Cluster) -> None:
    """A's PATCH keeps its connection but sends nothing more (a dead mobile link): B's HEAD
    makes A save and let go within moments, instead of 423 until A's read timeout (60 s)."""
    data = os.urandom(2 * PART + 777)
    with cluster.client() as http:
        path = create(http, cluster.a.url, len(data))
        parts = urlsplit(cluster.a.origin)
        sent = PART + 1000
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as stale:
            stale.sendall((f"PATCH {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
                           f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                           f"Content-Length: {len(data)}\r\n\r\n").encode() + data[:sent])
            # Wait until A holds the lock and has the bytes: its offset moves only under it.
            offset = 0
            for _ in range(200):
                offset = offset_of(http, cluster.b.origin, path)  # B's HEAD: asks A to let go
                if offset == sent:
                    break
            assert offset == sent
            answer = stale.recv(4096).decode("latin-1")
        assert answer.startswith("HTTP/1.1 400") and "a newer request took over" in answer  # ERR_UPLOAD_INTERRUPTED
        r = patch(http, cluster.b.origin, path, sent, data[sent:])
        assert r.status_code == 204, r.text
        got = httpx.get(cluster.a.origin + path, headers=TUS, timeout=60)
        assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()


def test_change_feed_on_one_instance_sees_uploads_on_the_other(cluster: Cluster) -> None:
    data = os.urandom(1000)
    seen: list[dict[str, Any]] = []
    with httpx.Client(timeout=httpx.Timeout(30, read=20)) as feed_http, cluster.client() as http:
        with feed_http.stream("GET", cluster.b.origin + "/api/events") as feed:
            lines = feed.iter_lines()
            assert next(lines).startswith("retry:")
            path = create(http, cluster.a.url, len(data), filename="from-a.mp4", filetype="video/mp4")
            upload_id = path.rstrip("/").rsplit("/", 1)[-1]
            r = patch(http, cluster.a.origin, path, 0, data)
            assert r.status_code == 204
            event = ""
            for line in lines:  # bounded by the read timeout and the count below
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: ") and event == "media":
                    item = json.loads(line[len("data: "):])
                    if item.get("id") == upload_id:
                        seen.append(item)
                        if item.get("state") not in (None, "uploading"):
                            break
                if len(seen) > 50:
                    break
    assert seen, "instance B's feed never mentioned the upload made on A"
    assert seen[-1]["state"] in ("queued", "processing", "ready", "failed")


def test_jobs_carry_ids_only(cluster: Cluster, redis_server: RedisServer) -> None:
    """The transcoding job that completion enqueues names the media, nothing of the instance."""
    import redis
    from rq import Queue
    data = os.urandom(100)
    with cluster.client() as http:
        path = create(http, cluster.a.url, len(data), filename="clip.mp4", filetype="video/mp4")
        assert patch(http, cluster.a.origin, path, 0, data).status_code == 204
    media_id = path.rstrip("/").rsplit("/", 1)[-1]
    conn = redis.Redis.from_url(redis_server.url)
    try:
        jobs = [job for job in Queue("tusflow-transcode", connection=conn).get_jobs()
                if job.args and job.args[0] == media_id]
        assert len(jobs) == 1 and jobs[0].args == (media_id,) and not jobs[0].kwargs
    finally:
        conn.close()


@pytest.fixture
def remote_worker(cluster: Cluster, tmp_path: Path) -> Iterator[Proc]:
    """``tusflow worker`` on a third machine: its own data_dir, nothing shared but PostgreSQL,
    Redis and S3 (and its config is its own: the job names the media only)."""
    config = cluster.config("c", transcode={"ladder": TINY_LADDER, "preset": "ultrafast", "timeout_min": 120,
                                            "storyboard_interval": 1.0})
    worker = Proc([TUSFLOW, "worker", "--config", str(config), "--name", f"c-{os.getpid()}"],
                  cwd=tmp_path, name="worker-c")
    worker.wait_for(r"event=worker\.start", timeout=30)
    yield worker
    worker.stop()


def wait_ready(http: httpx.Client, origin: str, media_id: str, worker: Proc, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    item: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = http.get(f"{origin}/api/media/{media_id}")
        if r.status_code == 200:
            item = r.json()
            if item["state"] in ("ready", "failed"):
                break
        time.sleep(0.3)
    assert item.get("state") == "ready", (item, worker.output[-3000:])
    return item


def uris(playlist: str) -> list[str]:
    """The URI lines and URI="..." attributes of a playlist, in order."""
    found = []
    for line in playlist.splitlines():
        if line.startswith("#"):
            found += re.findall(r'URI="([^"]*)"', line)
        elif line.strip():
            found.append(line.strip())
    return found


def test_a_worker_on_a_third_machine_makes_the_video_and_either_instance_plays_it(
        cluster: Cluster, remote_worker: Proc, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "lecture.mp4", 320, 240, seconds=3)
    data = clip.read_bytes()
    origin = cluster.proxy.origin
    with cluster.client() as http:
        path = create(http, cluster.base, len(data), filename="lecture.mp4", filetype="video/mp4")
        assert patch(http, origin, path, 0, data).status_code == 204
        media_id = path.rstrip("/").rsplit("/", 1)[-1]
        item = wait_ready(http, origin, media_id, remote_worker)
    assert item["playlist"] == f"/media/{media_id}/master.m3u8" and item["poster"]
    media_prefix = f"{cluster.prefix}media/{media_id}/"
    stored = cluster.s3.keys(media_prefix)
    assert f"{media_prefix}master.m3u8" in stored and f"{media_prefix}poster.jpg" in stored
    for machine in ("a", "b", "c"):  # nothing was written to any machine's own media folder
        assert not (tmp_path / f"data-{machine}" / "media" / media_id).exists()
    scratch = tmp_path / "data-c" / "scratch"
    assert not scratch.exists() or not any(p.name.startswith(media_id) for p in scratch.iterdir())

    for server in (cluster.a, cluster.b):  # playback through either instance, from the bucket
        with httpx.Client(base_url=server.origin, timeout=30) as player:
            master = player.get(item["playlist"])
            assert master.status_code == 200, master.text
            assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
            variant = next(u for u in uris(master.text) if u.endswith("index.m3u8"))
            media_playlist = player.get(f"/media/{media_id}/{variant}")
            assert media_playlist.status_code == 200
            folder = variant.rsplit("/", 1)[0]
            segment = [u for u in uris(media_playlist.text) if u.endswith(".m4s")][0]
            body = cluster.s3.read(f"{media_prefix}{folder}/{segment}")
            assert body is not None and len(body) > 200
            got = player.get(f"/media/{media_id}/{folder}/{segment}")
            assert got.status_code == 200 and got.headers["content-type"] == "video/iso.segment"
            assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(body).hexdigest()
            assert got.headers["etag"] and got.headers["last-modified"]
            ranged = player.get(f"/media/{media_id}/{folder}/{segment}", headers={"Range": "bytes=100-199"})
            assert ranged.status_code == 206 and ranged.content == body[100:200]
            assert ranged.headers["content-range"] == f"bytes 100-199/{len(body)}"
            again = player.get(f"/media/{media_id}/{folder}/{segment}",
                               headers={"If-None-Match": got.headers["etag"]})
            assert again.status_code == 304
            poster = player.get(item["poster"])
            assert poster.status_code == 200 and poster.content == cluster.s3.read(f"{media_prefix}poster.jpg")

    with cluster.client() as http:  # delete on either instance takes the objects down
        assert http.delete(f"{origin}/api/media/{media_id}").status_code == 204
    assert cluster.s3.keys(media_prefix) == {}
    assert cluster.s3.read(f"{cluster.prefix}originals/{media_id}") is None
