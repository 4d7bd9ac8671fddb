"""Quota math, from the rows the tus handler writes; then the quota through the real app:
finals, concatenation limits and creations racing each other."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy.engine import Engine

from models.config import Settings
from models.db import init_db, make_engine, session_scope
from models.tables import Media, Upload
from tus_server.auth.errors import AuthError
from tus_server.auth.principal import Principal
from tus_server.auth.quota import Limits, Usage, check_quota, check_size, day_start, effective_max_size, usage_of
from tests.support.credentials import ALICE_TOKEN, BOB_TOKEN
from tests.support.apphelp import TUS, MakeClient, bearer, count_rows, create, make_client, new_upload, patch  # noqa: F401
from tests.support.hookserver import HookServer

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


def test_finals_count_today_and_in_total_like_their_partials(engine: Engine) -> None:
    add(engine, length=60, concat="partial", complete=True)
    add(engine, length=40, concat="partial")
    add(engine, length=100, concat="final;/files/a /files/b", complete=True, media=True)
    # the final is a second copy the server wrote and keeps; partials stay until they expire
    assert usage(engine) == Usage(today=200, total=200)


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


# --------------------------------------------------------------------------- through the real app
# Concatenation and concurrent creations, as a client does them (issue 14, items 2 and 3).

async def partial(client: httpx.AsyncClient, data: bytes, token: str = ALICE_TOKEN) -> str:
    part = await new_upload(client, token, len(data), Upload_Concat="partial")
    assert (await patch(client, token, part, 0, data)).status_code == 204
    return part


async def final(client: httpx.AsyncClient, parts: list[str], token: str = ALICE_TOKEN) -> httpx.Response:
    concat = "final;" + " ".join(f"/files/{p}" for p in parts)
    return await client.post("/files/", headers={**TUS, **bearer(token), "Upload-Concat": concat})


async def test_finals_count_against_the_daily_quota(make_client: MakeClient) -> None:
    client = await make_client(auth={"quota_bytes_per_day": 1000})
    part = await partial(client, b"p" * 400)
    assert (await final(client, [part])).status_code == 201  # 800 of 1000
    before = count_rows(client)
    r = await final(client, [part])  # the same partial again: 400 more bytes stored
    assert r.status_code == 413 and r.headers["tus-resumable"] == "1.0.0"
    assert "daily upload quota exceeded: 800 B uploaded today" in r.text
    assert count_rows(client) == before
    assert (await final(client, [part], BOB_TOKEN)).status_code == 404  # not bob's to copy


async def test_finals_count_against_the_total_quota(make_client: MakeClient) -> None:
    client = await make_client(auth={"quota_bytes_total": 1000})
    part = await partial(client, b"p" * 300)
    assert (await final(client, [part])).status_code == 201
    assert (await final(client, [part])).status_code == 201  # 900 of 1000 stored
    r = await final(client, [part])
    assert r.status_code == 413 and "storage quota exceeded: 900 B used" in r.text


async def test_a_partial_listed_many_times_is_refused_before_a_byte_is_copied(make_client: MakeClient) -> None:
    """The review's amplification: one 1 KiB partial listed 10,000 times (a 390 KiB header)."""
    client = await make_client(auth={"quota_bytes_per_day": 1 << 20})
    part = await partial(client, b"k" * 1024)
    before = count_rows(client)
    r = await final(client, [part] * 10_000)
    assert r.status_code == 400 and "Upload-Concat is longer than" in r.text
    r = await final(client, [part] * 12)  # a short header, the same partial twelve times
    assert r.status_code == 400 and r.text == f"partial upload {part} is listed more than once\n"
    assert count_rows(client) == before


async def test_number_of_parts_is_capped_and_head_of_a_final_stays_short(make_client: MakeClient) -> None:
    client = await make_client(uploads={"max_concat_parts": 3})
    parts = [await partial(client, bytes([65 + i]) * 2) for i in range(4)]
    r = await final(client, parts)
    assert r.status_code == 400
    assert r.text == "Upload-Concat final lists 4 partial uploads; at most 3 are allowed\n"
    # absolute URLs with a long query each: HEAD answers this server's short paths
    long = "final;" + " ".join(f"http://testserver/files/{p}?{'q' * 900}" for p in parts[:3])
    r = await client.post("/files/", headers={**TUS, **bearer(ALICE_TOKEN), "Upload-Concat": long})
    assert r.status_code == 201, r.text
    head = await client.head(r.headers["location"], headers={**TUS, **bearer(ALICE_TOKEN)})
    assert head.headers["upload-concat"] == "final;" + " ".join(f"/files/{p}" for p in parts[:3])
    assert head.headers["upload-length"] == "6"


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


async def test_two_creations_at_the_same_instant_cannot_both_pass_the_quota(make_client: MakeClient,
                                                                          hook: HookServer) -> None:
    """The platform's pre-create hook answers neither request until both have asked, so both
    have passed the up-front quota check before either row exists: only the atomic check at
    insertion can refuse one. Runs on SQLite and, with TUSFLOW_TEST_DATABASE=postgres, on
    PostgreSQL."""
    both_asked = threading.Barrier(2, timeout=10)

    def platform(body: dict[str, Any]) -> tuple[int, Any]:
        both_asked.wait()
        return 200, None
    hook.respond = platform
    client = await make_client(auth={"quota_bytes_total": 1000, "precreate_hook_url": hook.url,
                                     "precreate_hook_timeout": 15.0})
    first, second = await asyncio.gather(create(client, ALICE_TOKEN, 600), create(client, ALICE_TOKEN, 600))
    assert sorted([first.status_code, second.status_code]) == [201, 413], (first.text, second.text)
    refused = first if first.status_code == 413 else second
    assert "storage quota exceeded: 600 B used, 600 B more would pass the 1000 B allowed" in refused.text
    assert count_rows(client) == 1
    uploads = client.app.state.ctx.layout.uploads  # type: ignore[attr-defined]
    assert len([p for p in uploads.iterdir() if len(p.name) == 32]) == 1  # no file left behind


async def test_concurrent_finals_cannot_all_pass_the_quota(make_client: MakeClient, hook: HookServer) -> None:
    client = await make_client(auth={"quota_bytes_per_day": 1000, "precreate_hook_url": hook.url,
                                     "precreate_hook_timeout": 15.0})
    part = await partial(client, b"f" * 300)  # 300 today; each final adds 300: room for two
    all_asked = threading.Barrier(3, timeout=10)

    def platform(body: dict[str, Any]) -> tuple[int, Any]:
        all_asked.wait()
        return 200, None
    hook.respond = platform
    answers = await asyncio.gather(*(final(client, [part]) for _ in range(3)))
    assert sorted(r.status_code for r in answers) == [201, 201, 413], [r.text for r in answers]
