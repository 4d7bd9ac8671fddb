"""The throwaway PostgreSQL the tests use, and tusflow on a real PostgreSQL: ``tusflow up``
migrating an empty database by itself, ``tusflow serve`` storing uploads there."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import psycopg
import pytest

from models import migrations
from tests.support import postgres as pgsupport
from tests.support.postgres import PostgresServer
from tests.support.procs import TUSFLOW, Proc, TusflowServer, write_config

TUS = {"Tus-Resumable": "1.0.0"}


def proc_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """Direct children (postgres renames its helpers, so their command lines say nothing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_cluster_takes_another_port_runs_unprivileged_and_stops_by_pid(
        monkeypatch: pytest.MonkeyPatch, held_port: int) -> None:
    if os.environ.get("TUSFLOW_TEST_POSTGRES", "1") == "0":
        pytest.skip("PostgreSQL tests disabled (TUSFLOW_TEST_POSTGRES=0)")
    offered = [held_port]
    real_free_port = pgsupport.free_port
    monkeypatch.setattr(pgsupport, "free_port", lambda: offered.pop() if offered else real_free_port())

    server = PostgresServer()
    try:
        assert server.port != held_port, "a taken port must lead to another try"
        assert server.popen is not None
        pid = server.popen.pid
        if os.geteuid() == 0:
            assert proc_uid(pid) != 0, "postgres must not run as root"
        assert server.sockets.is_relative_to(server.base)
        with psycopg.connect(server.dsn("postgres")) as conn:
            listen = conn.execute("SHOW listen_addresses").fetchone()
        assert listen == ("127.0.0.1",)
        family = [pid, *children(pid)]
        assert len(family) > 2  # postmaster, checkpointer, writer, ...
    finally:
        server.stop()
    assert not any(alive(p) for p in family), "postgres processes left behind"
    assert not server.base.exists()


def test_databases_are_emptied_and_handed_out_again(postgres_server: PostgresServer,
                                                    postgres_template: str) -> None:
    name = postgres_server.acquire(postgres_template, "reuse")
    with psycopg.connect(postgres_server.dsn(name), autocommit=True) as conn:
        conn.execute("INSERT INTO upload (id, \"offset\", metadata_raw, storage_path, created_at, updated_at) "
                     "VALUES ('x', 0, '', '', now(), now())")
        holder = psycopg.connect(postgres_server.dsn(name))  # a server process that never closed
        holder.execute("SELECT 1 FROM upload")  # and sits in a transaction
    postgres_server.release(name, postgres_template)
    holder.close()
    again = postgres_server.acquire(postgres_template, "reuse")
    assert again == name
    with psycopg.connect(postgres_server.dsn(again), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM upload").fetchone() == (0,)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (migrations.head_revision(),)
        conn.execute("UPDATE alembic_version SET version_num = '0001'")  # a test that migrated
    postgres_server.release(again, postgres_template)
    fresh = postgres_server.acquire(postgres_template, "reuse")
    assert fresh != again, "a database whose schema moved must not be reused"
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (again,)).fetchone() is None
    postgres_server.release(fresh, postgres_template)


def test_up_migrates_an_empty_database(postgres_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    config = write_config(tmp_path / "config.toml", {
        "storage": {"data_dir": str(data_dir), "fsync": False}, "database": {"url": postgres_url},
        "worker": {"count": 1}})
    up = Proc([TUSFLOW, "up", "--config", str(config), "--port", "0", "--host", "127.0.0.1"], name="tusflow-up")
    try:
        url = up.wait_for(r"tusflow listening on (http://\S+)", timeout=60).group(1)
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (migrations.head_revision(),)
        created = httpx.post(url, headers={**TUS, "Upload-Length": "5"})
        assert created.status_code == 201
        assert not (data_dir / "tusflow.db").exists(), "up used SQLite instead of the URL"
        up.kill(signal.SIGTERM)
        assert up.popen.wait(60) == 0
    finally:
        up.stop()


def test_serve_keeps_uploads_in_postgres(start_server: Callable[..., TusflowServer], postgres_url: str,
                                         data_dir: Path) -> None:
    server = start_server(database={"url": postgres_url})
    body = os.urandom(3 * 1024 * 1024 + 5)
    created = httpx.post(server.url, headers={**TUS, "Upload-Length": str(len(body)),
                                              "Upload-Metadata": "filename bGVjdHVyZS5tcDQ="})
    assert created.status_code == 201
    location = created.headers["location"]
    upload_id = location.rstrip("/").rsplit("/", 1)[1]
    half = len(body) // 2
    for start, end in ((0, half), (half, len(body))):
        patched = httpx.patch(location, content=body[start:end], headers={
            **TUS, "Upload-Offset": str(start), "Content-Type": "application/offset+octet-stream"})
        assert patched.status_code == 204, patched.text
    with psycopg.connect(postgres_url.replace("+psycopg", "")) as conn:
        row = conn.execute('SELECT "offset", length, completed_at FROM upload WHERE id = %s', (upload_id,)).fetchone()
        media = conn.execute("SELECT filename, size FROM media WHERE id = %s", (upload_id,)).fetchone()
    assert row is not None and row[0] == row[1] == len(body) and row[2] is not None
    assert row[2].utcoffset() is not None, "timestamptz"
    assert media == ("lecture.mp4", len(body))
    assert not (data_dir / "tusflow.db").exists(), "the server used SQLite instead of the URL"
    deadline = time.monotonic() + 5
    head = httpx.head(location, headers=TUS)
    while head.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        head = httpx.head(location, headers=TUS)
    assert int(head.headers["upload-offset"]) == len(body)
