"""Two ``tusflow serve`` instances that share nothing but PostgreSQL, Redis and S3.

Each instance has its own data_dir; a round-robin proxy (no stickiness: every connection goes
to the next instance) stands where a load balancer would. What one machine did with flock
files and a shared disk must now work across machines: resuming an upload on the other
instance, a HEAD on one instance releasing a stalled PATCH on the other, and the change feed
of one instance carrying what the other did.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.procs import RedisServer, TusflowServer, write_config
from tests.support.proxy import LoopbackProxy
from tests.support.s3 import S3Server

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
    def __init__(self, a: TusflowServer, b: TusflowServer, proxy: RoundRobinProxy):
        self.a, self.b, self.proxy = a, b, proxy
        self.base = proxy.url_for(a.url)  # the endpoint as clients see it

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
    servers = []
    for name in ("a", "b"):
        config = write_config(tmp_path / f"{name}.toml", {
            "storage": {"data_dir": str(tmp_path / f"data-{name}"), "fsync": False, "backend": "s3",
                        "s3": s3.storage_section(prefix, part_size=PART)},
            "database": {"url": postgres_url},
            "redis": {"url": redis_server.url},
            # [locks] backend stays "auto": with S3 storage that is Redis.
            "server": {"lock_timeout": 5.0, "body_idle_timeout": 60.0},
        })
        servers.append(start_server(config=config))
    proxy = RoundRobinProxy([servers[0].origin, servers[1].origin])
    yield Cluster(servers[0], servers[1], proxy)
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
