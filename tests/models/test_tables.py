"""``from_row`` must give the same upload as the constructor and the ORM: every handler reads
its upload through it, then changes attributes and hands it on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlmodel import select

from models.config import Settings
from models.db import init_db, make_engine, session_scope
from models.tables import Upload, from_row
from tus_server.tus.repo import UploadRepo


def _stored(settings: Settings) -> tuple[UploadRepo, dict]:
    engine = make_engine(settings)
    init_db(engine)
    when = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
    with session_scope(engine) as s:
        s.add(Upload(id="f1", length=4 << 30, offset=123, metadata_raw="filename YS5tcDQ=",
                     concat="final;/files/p1 /files/p2", concat_parts='["p1", "p2"]', owner="alice",
                     storage_path="originals/f1", created_at=when, updated_at=when,
                     expires_at=when + timedelta(hours=1), completed_at=when, lock_token=7))
    with session_scope(engine) as s:
        loaded = s.exec(select(Upload).where(Upload.id == "f1")).one()
        return UploadRepo(engine, 3600), loaded.model_dump()


def test_a_row_read_equals_what_the_orm_loads_and_changes_like_one(settings: Settings) -> None:
    repo, expected = _stored(settings)
    upload = asyncio.run(repo.get("f1"))
    assert upload is not None and type(upload) is Upload
    assert upload.model_dump() == expected
    assert upload.__pydantic_fields_set__ == set(expected)
    assert upload.is_complete and upload.parts == ["p1", "p2"] and upload.length == 4 << 30

    upload.offset += 5  # handlers update their copy as they go
    upload.lock_token = 8
    assert (upload.offset, upload.lock_token) == (128, 8)
    assert asyncio.run(repo.get("f1")).offset == 123  # a copy: the row is unchanged

    with session_scope(repo.engine) as s:  # and it is still an ORM instance
        s.merge(upload)
    assert asyncio.run(repo.get("f1")).offset == 128
    assert asyncio.run(repo.get_many(["f1", "nope"]))["f1"].model_dump() == {**expected, "offset": 128,
                                                                            "lock_token": 8}


def test_from_row_matches_the_constructor() -> None:
    values = {"id": "u2", "length": None, "offset": 0, "metadata_raw": "", "concat": None,
              "concat_parts": None, "owner": None, "storage_path": "uploads/u2",
              "created_at": datetime(2026, 1, 1), "updated_at": datetime(2026, 1, 2),
              "expires_at": None, "completed_at": None, "lock_token": 0}
    made, built = from_row(Upload, values), Upload(**values)
    assert made.model_dump() == built.model_dump() == values
    assert not made.is_complete and made.parts == []


def test_from_row_works_as_the_first_orm_use_of_a_fresh_process() -> None:
    """A server's first HEAD after start reads its row before any query or constructor has
    configured the mappers; the attributes must still read the values."""
    code = ("from datetime import datetime; from models.tables import Upload, from_row; "
            "u = from_row(Upload, {'id': 'u3', 'offset': 9, 'expires_at': datetime(2026, 1, 1), "
            "'completed_at': None}); u.offset += 1; print(u.offset, u.expires_at.year, u.is_complete)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["10", "2026", "False"]
