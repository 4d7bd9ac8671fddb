"""The row read every PATCH and HEAD makes first runs on the event loop only where it cannot
wait for a writer (a SQLite file in WAL mode); these check that premise on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlmodel import create_engine

from models.config import Settings
from models.db import init_db, make_engine, never_waits, session_scope
from models.tables import Upload
from tus_server.tus.repo import UploadRepo

pytestmark = pytest.mark.sqlite_only


def test_a_wal_file_is_read_inline_and_sees_the_last_commit_while_a_writer_works(settings: Settings) -> None:
    engine = make_engine(settings)
    init_db(engine)
    with session_scope(engine) as s:
        s.add(Upload(id="u1", length=100, offset=10))
    repo = UploadRepo(engine, 3600)
    assert repo.inline_reads

    writer = sqlite3.connect(engine.url.database, timeout=0.1, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a PATCH's UPDATE does
        writer.execute("UPDATE upload SET \"offset\" = 60 WHERE id = 'u1'")
        # A reader that waited for the writer would sit out busy_timeout (30 s): wait_for fails first.
        seen = asyncio.run(asyncio.wait_for(repo.get("u1"), 5))
        assert seen is not None and seen.offset == 10
        writer.execute("COMMIT")
    finally:
        writer.close()
    after = asyncio.run(repo.get("u1"))
    assert after is not None and after.offset == 60
    assert asyncio.run(repo.get("nope")) is None


def test_reads_that_could_wait_stay_on_a_thread(tmp_path: Path) -> None:
    rollback_journal = create_engine(f"sqlite:///{tmp_path / 'plain.db'}")  # journal_mode=delete
    with rollback_journal.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
    assert not never_waits(rollback_journal)
    assert not never_waits(create_engine("sqlite://"))
    assert not UploadRepo(rollback_journal, 3600).inline_reads
