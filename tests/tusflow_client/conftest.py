"""Fixtures for the `tusflow upload` tests: one `tusflow serve` shared by a test module, for
tests that need no special server config (starting a server costs seconds on a shared box)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.procs import Shared, TusflowServer, write_config


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    root = tmp_path_factory.mktemp("cli-server")
    data_dir = root / "var"
    data_dir.mkdir()
    config = write_config(root / "config.toml", {
        "storage": {"data_dir": str(data_dir), "fsync": False},
        "server": {"lock_timeout": 5.0, "body_idle_timeout": 5.0},
    })
    server = TusflowServer(config)
    try:
        yield Shared(server, data_dir)
    finally:
        server.stop()
