"""``tusflow cleanup`` removes expired unfinished uploads, expired partials and orphan files,
and nothing else."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session

from models.tables import Upload
from tests.support.procs import TUSFLOW
from tests.support.tushelp import (TUS, all_media, data_dir_of, engine_of, head, new_upload, patch, row,
                               upload_id)


def _age(client, url: str, seconds: float) -> None:
    with Session(engine_of(client)) as s:
        upload = s.get(Upload, upload_id(url))
        upload.expires_at = datetime.now(timezone.utc) - timedelta(seconds=seconds)
        s.add(upload)
        s.commit()


def _cleanup(client, *args: str) -> str:
    """In-process (fast); the command line itself is run once, in the first test."""
    from tus_server.commands.cleanup import cleanup
    dry_run = "--dry-run" in args
    return cleanup(client.settings, dry_run=dry_run).line(dry_run)


def _cleanup_cli(client, *args: str) -> str:
    config = client.settings.config_path
    out = subprocess.run([TUSFLOW, "cleanup", "--config", str(config), *args], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


@pytest.mark.file_only  # plants orphan files; S3 strays: test_s3_store.py
async def test_cleanup_removes_expired_and_orphans_only(client) -> None:
    root = data_dir_of(client)
    expired = await new_upload(client, 10)
    await patch(client, expired, 0, b"abc")
    fresh = await new_upload(client, 10)
    await patch(client, fresh, 0, b"abc")
    partial = await new_upload(client, 2, headers={"Upload-Concat": "partial"})
    await patch(client, partial, 0, b"ab")
    partial_fresh = await new_upload(client, 2, headers={"Upload-Concat": "partial"})
    await patch(client, partial_fresh, 0, b"cd")
    done = await new_upload(client, 3)
    await patch(client, done, 0, b"xyz")
    _age(client, expired, 10)
    _age(client, partial, 10)
    (root / "uploads" / f"{upload_id(fresh)}.stage").write_bytes(b"stale stage")
    orphan = root / "uploads" / ("e" * 32)
    orphan.write_bytes(b"left by a killed process")
    young_orphan = root / "uploads" / ("f" * 32)
    young_orphan.write_bytes(b"a final being assembled right now")
    stray_lock = root / "locks" / ("d" * 32 + ".lock")
    stray_lock.write_bytes(b"")
    done_lock = root / "locks" / f"{upload_id(done)}.lock"
    fresh_lock = root / "locks" / f"{upload_id(fresh)}.lock"
    assert done_lock.exists() and fresh_lock.exists()
    old = time.time() - 7200
    for path in (orphan, stray_lock, root / "uploads" / f"{upload_id(fresh)}.stage", done_lock, fresh_lock):
        os.utime(path, (old, old))

    dry = _cleanup_cli(client, "--dry-run")
    assert "would remove 1 expired uploads, 1 expired partials, 4 orphan files" in dry
    assert row(client, expired) is not None and orphan.exists()

    out = _cleanup(client)
    assert "removed 1 expired uploads, 1 expired partials, 4 orphan files" in out
    assert row(client, expired) is None and not (root / "uploads" / upload_id(expired)).exists()
    assert row(client, partial) is None and not (root / "uploads" / upload_id(partial)).exists()
    assert not orphan.exists() and not stray_lock.exists()
    assert not (root / "uploads" / f"{upload_id(fresh)}.stage").exists()
    assert young_orphan.exists()
    assert not done_lock.exists() and fresh_lock.exists()  # an unfinished upload keeps its lock file
    assert (await head(client, fresh)).headers["upload-offset"] == "3"
    assert row(client, partial_fresh) is not None
    assert row(client, done) is not None and (root / "originals" / upload_id(done)).read_bytes() == b"xyz"
    assert [m.id for m in all_media(client)] == [upload_id(done)]
    assert (await head(client, expired)).status_code == 404

    again = _cleanup(client)
    assert "removed 0 expired uploads, 0 expired partials, 0 orphan files" in again


async def test_cleanup_skips_busy_upload(client) -> None:
    url = await new_upload(client, 10)
    _age(client, url, 10)
    from tus_server.tus.locks import UploadLocks
    locks = UploadLocks(data_dir_of(client) / "locks", 1.0)
    async with locks.hold(upload_id(url)):
        out = _cleanup(client)
    assert "removed 0 expired uploads" in out and "skipped 1 busy" in out
    assert row(client, url) is not None
    assert "removed 1 expired uploads" in _cleanup(client)
    assert (await client.head(url, headers=TUS)).status_code == 404
