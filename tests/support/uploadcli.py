"""Running `tusflow upload` as a real child process and checking what reached the server."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.files import sha256_file
from tests.support.procs import TUSFLOW

UPLOAD_TIMEOUT = 90.0


@dataclass
class UploadRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str, file: Path | str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind and (file is None or e.get("file") == str(file))]

    def one(self, kind: str, file: Path | str | None = None) -> dict[str, Any]:
        found = self.of(kind, file)
        assert len(found) == 1, f"expected one {kind} event for {file}, got {found}\n{self}"
        return found[0]

    @property
    def summary(self) -> dict[str, Any]:
        return self.one("summary")

    def __str__(self) -> str:
        return (f"$ {' '.join(self.argv)}\nexit {self.returncode}\n--- stdout\n{self.stdout[-6000:]}"
                f"\n--- stderr\n{self.stderr[-3000:]}")


def upload_argv(paths: list[Path | str], endpoint: str, state_file: Path, *extra: str) -> list[str]:
    return [TUSFLOW, "upload", *map(str, paths), "--endpoint", endpoint, "--state-file", str(state_file), *extra]


def run_upload(paths: list[Path | str], endpoint: str, state_file: Path, *extra: str,
               env: dict[str, str] | None = None, timeout: float = UPLOAD_TIMEOUT) -> UploadRun:
    """Run to completion with stdout and stderr apart, so --json stdout can be parsed whole:
    every stdout line must be a JSON object in --json mode, or the parse fails the test."""
    argv = upload_argv(paths, endpoint, state_file, *extra)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full_env.pop("TUSFLOW_TOKEN", None)  # only what the test passes
    full_env.update(env or {})
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                          stdin=subprocess.DEVNULL)
    run = UploadRun(argv, proc.returncode, proc.stdout, proc.stderr)
    if "--json" in extra:
        for line in proc.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                raise AssertionError(f"--json printed a line that is not JSON: {line!r}\n{run}") from None
            assert isinstance(event, dict) and "event" in event, line
            run.events.append(event)
    return run


def make_files(root: Path, sizes: list[int], prefix: str = "clip", ext: str = "mp4") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        path = root / f"{prefix}_{i:02d}.{ext}"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def original(data_dir: Path, url: str) -> Path:
    return data_dir / "originals" / upload_id(url)


def assert_on_server(data_dir: Path, local: Path, url: str) -> None:
    stored = original(data_dir, url)
    assert stored.is_file(), f"{local.name}: no completed upload at {stored}"
    assert sha256_file(stored) == sha256_file(local), f"{local.name}: bytes on the server differ"


def server_offset(url: str, token: str | None = None) -> int:
    headers = {"Tus-Resumable": "1.0.0"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = httpx.head(url, headers=headers, timeout=10)
    assert response.status_code == 200, response
    return int(response.headers["Upload-Offset"])
