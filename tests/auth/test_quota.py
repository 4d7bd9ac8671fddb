"""Quota math, from the rows the tus handler writes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine

from models.config import Settings
from models.db import init_db, make_engine, session_scope
from models.tables import Media, Upload
from tus_server.auth.errors import AuthError
from tus_server.auth.principal import Principal
from tus_server.auth.quota import Limits, Usage, check_quota, check_size, day_start, effective_max_size, usage_of

ALICE = Principal("alice")
NOW = datetime(2030, 5, 17, 15, 30, tzinfo=timezone.utc)
_n = iter(range(10**6))


@pytest.fixture
def engine(settings: Settings) -> Engine:
    engine = make_engine(settings)
    init_db(engine)
    return engine


def add(engine: Engine, owner: str = "alice", length: int | None = 100, offset: int = 0,
        created: datetime = NOW, complete: bool = False, concat: str | None = None, media: bool = False) -> str:
    upload_id = f"{next(_n):032x}"
    with session_scope(engine) as s:
        s.add(Upload(id=upload_id, owner=owner, length=length, offset=offset, concat=concat,
                     created_at=created, completed_at=created if complete else None))
        if media:
            s.add(Media(id=upload_id, owner=owner, size=length or 0))
    return upload_id


def usage(engine: Engine, user: str = "alice") -> Usage:
    with session_scope(engine) as s:
        return usage_of(s, user, NOW)


def test_usage_counts_today_and_total(engine: Engine) -> None:
    add(engine, length=100)                                        # unfinished, today
    add(engine, length=200, complete=True, media=True)             # published, today
    add(engine, length=400, created=NOW - timedelta(days=2), complete=True, media=True)  # earlier
    add(engine, length=None, offset=50)                            # deferred length: bytes so far
    add(engine, owner="bob", length=10_000)                        # someone else
    assert usage(engine) == Usage(today=350, total=750)
    assert usage(engine, "bob") == Usage(today=10_000, total=10_000)
    assert usage(engine, "nobody") == Usage(0, 0)


def test_deleted_media_frees_total_but_not_today(engine: Engine) -> None:
    add(engine, length=300, complete=True, media=False)  # finished, its media deleted since
    assert usage(engine) == Usage(today=300, total=0)


def test_day_starts_at_midnight_utc(engine: Engine) -> None:
    add(engine, length=10, created=day_start(NOW))
    add(engine, length=20, created=day_start(NOW) - timedelta(seconds=1))
    assert usage(engine).today == 10


def test_partials_count_once_and_finals_do_not_count_today(engine: Engine) -> None:
    add(engine, length=60, concat="partial", complete=True)
    add(engine, length=40, concat="partial")
    add(engine, length=100, concat="final;/files/a /files/b", complete=True, media=True)
    assert usage(engine) == Usage(today=100, total=200)  # partials on disk until they expire


def test_check_quota_refuses_with_numbers() -> None:
    limits = Limits(per_day=1000, total=5000)
    check_quota(ALICE, Usage(today=900, total=900), 100, limits)  # exactly at the limit: fine
    with pytest.raises(AuthError) as day:
        check_quota(ALICE, Usage(today=900, total=900), 101, limits)
    assert day.value.status == 413 and day.value.code == "ERR_QUOTA_DAILY_EXCEEDED"
    assert "900 B uploaded today" in day.value.message and "1000 B per day" in day.value.message
    with pytest.raises(AuthError) as total:
        check_quota(ALICE, Usage(today=0, total=4 * 1024**3), 2 * 1024**3, Limits(total=5 * 1024**3))
    assert total.value.code == "ERR_QUOTA_TOTAL_EXCEEDED"
    assert "4.0 GiB used" in total.value.message and "5.0 GiB allowed" in total.value.message


def test_zero_means_no_quota_and_admins_are_exempt() -> None:
    check_quota(ALICE, Usage(10**15, 10**15), 10**12, Limits())
    check_quota(Principal("root", "admin"), Usage(900, 900), 10**9, Limits(per_day=1000, total=1000))
    check_quota(Principal("ci", "service"), Usage(900, 900), 10**9, Limits(per_day=1000, total=1000))
    with pytest.raises(AuthError):
        check_quota(ALICE, Usage(900, 900), 10**9, Limits(per_day=1000, total=1000))


def test_max_size_claim_lowers_the_global_limit_only() -> None:
    small = Principal("alice", max_upload_size=1000)
    assert effective_max_size(small, 0) == 1000
    assert effective_max_size(small, 500) == 500
    assert effective_max_size(ALICE, 500) == 500
    assert effective_max_size(ALICE, 0) == 0
    check_size(small, 1000, 0)
    with pytest.raises(AuthError) as err:
        check_size(small, 1001, 10**9)
    assert err.value.status == 413 and "1000 B you may upload" in err.value.message
