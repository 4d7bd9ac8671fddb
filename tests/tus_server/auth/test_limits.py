"""The creation rate (issue 14): per user and per client address, answered 429 + Retry-After."""

from __future__ import annotations

import pytest

from tests.support.credentials import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, hs_token
from tus_server.auth.ratelimit import RateLimiter, retry_after
from tests.support.apphelp import TUS, MakeClient, bearer, count_rows, create, make_client, new_upload  # noqa: F401


# --------------------------------------------------------------------------- creation rate
def test_bucket_holds_a_minute_and_refills_continuously() -> None:
    now = [1000.0]
    limiter = RateLimiter(6, clock=lambda: now[0])  # one token per 10 s, six at most
    assert [limiter.take("a") for _ in range(6)] == [0.0] * 6
    assert limiter.take("a") == pytest.approx(10.0)
    assert limiter.take("b") == 0.0  # keys are counted apart
    now[0] += 4
    assert limiter.take("a") == pytest.approx(6.0)  # refused takes spend nothing
    now[0] += 6
    assert limiter.take("a") == 0.0
    assert RateLimiter(0).take("a") == 0.0  # 0 = no limit
    assert retry_after(0.2) == "1" and retry_after(6.01) == "7"


async def test_creations_per_user_are_limited_with_429_and_retry_after(make_client: MakeClient) -> None:
    client = await make_client(auth={"creations_per_minute_per_user": 2, "creations_per_minute_per_address": 0})
    await new_upload(client, ALICE_TOKEN)
    await new_upload(client, ALICE_TOKEN)
    before = count_rows(client)
    r = await create(client, ALICE_TOKEN)
    assert r.status_code == 429 and r.headers["tus-resumable"] == "1.0.0"
    assert int(r.headers["retry-after"]) in range(1, 31)  # a token every 30 s
    assert r.text == f"too many uploads started; retry in {r.headers['retry-after']} s\n"
    assert count_rows(client) == before
    assert (await create(client, BOB_TOKEN)).status_code == 201  # per user
    assert (await create(client, ADMIN_TOKEN)).status_code == 201  # admins are exempt


async def test_creations_per_address_are_limited(make_client: MakeClient) -> None:
    client = await make_client(auth={"creations_per_minute_per_user": 0, "creations_per_minute_per_address": 2})
    await new_upload(client, ALICE_TOKEN)
    await new_upload(client, BOB_TOKEN)
    r = await create(client, hs_token("carol"))
    assert r.status_code == 429 and "retry-after" in r.headers
