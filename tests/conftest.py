"""Fixtures shared by every test folder: settings on a temporary data_dir, a real redis-server,
real ``tusflow serve`` processes on port 0, and a real PostgreSQL.

Which database the ``make_config``/``settings`` fixtures configure is chosen by
``TUSFLOW_TEST_DATABASE``: ``sqlite`` (default, the file in data_dir) or ``postgres`` (a fresh
database per test on one PostgreSQL cluster started for the session). ``scripts/test`` runs the
suites that touch the database a second time with ``postgres``. ``TUSFLOW_TEST_POSTGRES=0``
skips everything that needs PostgreSQL. Mark a test ``@pytest.mark.sqlite_only`` when it checks
something only SQLite has.

Where uploads are stored is chosen by ``TUSFLOW_TEST_STORAGE``: ``file`` (default, data_dir) or
``s3`` (``[storage] backend = "s3"`` on one SeaweedFS ``weed mini`` started for the session, a
fresh key prefix per test). ``scripts/test`` runs tests/tus_server/tus a second time with ``s3``; only the
tests that get their config through these fixtures run then. Mark a test
``@pytest.mark.file_only`` when it looks at or damages the upload files themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pytest

from models.config import Settings, load_settings
from tests.support.postgres import PostgresServer
from tests.support.asgi import AppClients
from tests.support.procs import RedisServer, TusflowServer, write_config
from tests.support.s3 import S3Server, start_server as start_s3_server

TEST_DATABASE_ENV = "TUSFLOW_TEST_DATABASE"
TEST_POSTGRES_ENV = "TUSFLOW_TEST_POSTGRES"
TEST_STORAGE_ENV = "TUSFLOW_TEST_STORAGE"
S3_TEST_PART_SIZE = 5 * 1024**2  # S3's minimum: the tests' bodies of a few MiB cross parts


def selected_database() -> str:
    """The database the shared fixtures configure: "sqlite" or "postgres"."""
    kind = os.environ.get(TEST_DATABASE_ENV, "sqlite").strip().lower() or "sqlite"
    if kind not in ("sqlite", "postgres"):
        raise pytest.UsageError(f"{TEST_DATABASE_ENV}={kind!r}: expected sqlite or postgres")
    return kind


def selected_storage() -> str:
    """The upload store the shared fixtures configure: "file" or "s3"."""
    kind = os.environ.get(TEST_STORAGE_ENV, "file").strip().lower() or "file"
    if kind not in ("file", "s3"):
        raise pytest.UsageError(f"{TEST_STORAGE_ENV}={kind!r}: expected file or s3")
    return kind


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: checks SQLite specifics; skipped when the "
                                       "suite runs on PostgreSQL")
    config.addinivalue_line("markers", "file_only: looks at the file store's files; skipped when "
                                       "the suite runs on the S3 store")
    config.addinivalue_line("markers", "media_only: checks what ffmpeg made, which no database "
                                       "changes; the PostgreSQL pass leaves it out")
    selected_database()
    selected_storage()


def pytest_report_header(config: pytest.Config) -> str:
    return f"tusflow test database: {selected_database()}; upload storage: {selected_storage()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass, run only what reaches the database through these fixtures: any
    other test would repeat its SQLite run exactly. The same on the S3 pass for the storage."""
    if selected_storage() == "s3":
        _keep_only(config, items, "storage_settings", "file_only", TEST_STORAGE_ENV, "file")
    if selected_database() != "postgres":
        return
    skip = pytest.mark.skip(reason=f"SQLite only ({TEST_DATABASE_ENV}=postgres)")
    kept, dropped = [], []
    for item in items:
        if "database_url" not in getattr(item, "fixturenames", ()) or item.get_closest_marker("media_only"):
            dropped.append(item)
            continue
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _keep_only(config: pytest.Config, items: list[pytest.Item], fixture: str, marker: str,
               env: str, kind: str) -> None:
    skip = pytest.mark.skip(reason=f"{kind} only ({env} is not {kind})")
    kept, dropped = [], []
    for item in items:
        if fixture not in getattr(item, "fixturenames", ()):
            dropped.append(item)
            continue
        if item.get_closest_marker(marker):
            item.add_marker(skip)
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "var"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session, started on first use."""
    if os.environ.get(TEST_POSTGRES_ENV, "1") == "0":
        pytest.skip(f"PostgreSQL tests disabled ({TEST_POSTGRES_ENV}=0)")
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test (dropped afterwards); its SQLAlchemy URL."""
    name = postgres_server.new_database_name(request.node.name[:24])
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A database migrated to head that the PostgreSQL pass copies its databases from: a copy
    is cheaper than migrating from scratch in every test (tests/e2e/deploy covers that path)."""
    from models.db import migrate
    name = postgres_server.new_database_name("template")
    url = postgres_server.create_database(name)
    migrate(Settings().replace(database={"url": url}))  # disposes its engine: the copy needs no session open
    return name


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ``[database] url`` the shared fixtures write: "" = SQLite in data_dir; on the
    PostgreSQL pass, an empty database at the newest migration, emptied again afterwards."""
    if selected_database() != "postgres":
        yield ""
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template: str = request.getfixturevalue("postgres_template")
    name = server.acquire(template, request.node.name[:24])
    yield server.url(name)
    server.release(name, template)


@pytest.fixture(scope="session")
def s3_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], S3Server]]:
    """``s3_servers("seaweedfs" | "moto")``: that S3 server, started on first use and shared by
    the session (tests take a fresh prefix each); stopped by PID at the end."""
    started: dict[str, S3Server] = {}

    def _get(kind: str) -> S3Server:
        if kind not in started:
            started[kind] = start_s3_server(kind, tmp_path_factory.mktemp(f"s3-{kind}"))
        return started[kind]
    yield _get
    for server in started.values():
        server.stop()


@pytest.fixture
def storage_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``[storage]`` keys for the selected upload store: none for the file store; on the
    S3 pass ``backend = "s3"`` and a ``[storage.s3]`` table on a prefix of this test's own."""
    if selected_storage() != "s3":
        return {}
    server: S3Server = request.getfixturevalue("s3_servers")("seaweedfs")
    prefix = server.new_prefix(request.node.name)
    return {"backend": "s3", "s3": server.storage_section(prefix, part_size=S3_TEST_PART_SIZE)}


@pytest.fixture
def make_config(tmp_path: Path, data_dir: Path, database_url: str,
                storage_settings: dict[str, Any]) -> Callable[..., Path]:
    """Write a config.toml for a test; sections override the test defaults."""
    def _make(**sections: dict[str, Any]) -> Path:
        merged: dict[str, dict[str, Any]] = {
            "storage": {"data_dir": str(data_dir), "fsync": False, **storage_settings},
            "server": {"lock_timeout": 5.0, "body_idle_timeout": 5.0},
        }
        if database_url:
            merged["database"] = {"url": database_url}
        if storage_settings:  # one instance per test: its locks stay files ("auto" means Redis on S3)
            merged["locks"] = {"backend": "file"}
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        return write_config(tmp_path / "config.toml", merged)
    return _make


@pytest.fixture
def settings(make_config: Callable[..., Path]) -> Settings:
    return load_settings(make_config(), env={})


@pytest.fixture
def start_server(make_config: Callable[..., Path]) -> Iterator[Callable[..., TusflowServer]]:
    servers: list[TusflowServer] = []

    def _start(config: Path | None = None, env: dict[str, str] | None = None, workers: int = 1,
               **sections: dict[str, Any]) -> TusflowServer:
        server = TusflowServer(config or make_config(**sections), env=env, workers=workers)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
async def asgi_clients() -> AsyncIterator[AppClients]:
    clients = AppClients()
    yield clients
    await clients.aclose()
