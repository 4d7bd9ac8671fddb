"""Fixtures shared by every test folder: settings on a temporary data_dir, a real redis-server,
real ``tusflow serve`` processes on port 0."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from models.config import Settings, load_settings
from tests.support.procs import RedisServer, TusflowServer, write_config

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "var"
    path.mkdir()
    return path


@pytest.fixture
def make_config(tmp_path: Path, data_dir: Path) -> Callable[..., Path]:
    """Write a config.toml for a test; sections override the test defaults."""
    def _make(**sections: dict[str, Any]) -> Path:
        merged: dict[str, dict[str, Any]] = {
            "storage": {"data_dir": str(data_dir), "fsync": False},
            "server": {"lock_timeout": 5.0, "body_idle_timeout": 5.0},
        }
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
