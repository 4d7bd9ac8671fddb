"""Answers of the API that hold after the credential changes (issue 14): nosniff on every JSON
answer, and event streams that end when the token they opened with expires."""

from __future__ import annotations

from typing import Callable

import httpx

from tests.support.credentials import ALICE_TOKEN, HS_SECRET, TOKENS, hs_token
from tests.support.procs import TusflowServer
from tests.support.apphelp import MakeClient, bearer, make_client, new_upload  # noqa: F401


# --------------------------------------------------------------------------- nosniff
async def test_every_json_answer_of_the_api_carries_nosniff(make_client: MakeClient) -> None:
    client = await make_client()
    upload_id = await new_upload(client, ALICE_TOKEN)
    answers = {
        "list": await client.get("/api/media", headers=bearer(ALICE_TOKEN)),
        "bad id": await client.get("/api/media/nope", headers=bearer(ALICE_TOKEN)),
        "missing": await client.get("/api/media/" + "a" * 32, headers=bearer(ALICE_TOKEN)),
        "no credential": await client.get("/api/media"),
        "expired": await client.get("/api/media", headers=bearer(hs_token("alice", ttl=-120))),
        "mine": await client.get("/api/uploads/mine", headers=bearer(ALICE_TOKEN)),
        "still uploading": await client.delete(f"/api/media/{upload_id}", headers=bearer(ALICE_TOKEN)),
    }
    assert [r.status_code for r in answers.values()] == [200, 400, 404, 401, 401, 200, 409]
    for name, r in answers.items():
        assert r.headers["content-type"].startswith("application/json"), name
        assert r.headers.get("x-content-type-options") == "nosniff", name


# --------------------------------------------------------------------------- event streams
def test_event_stream_ends_when_its_token_expires(start_server: Callable[..., TusflowServer]) -> None:
    server = start_server(auth={"enabled": True, "tokens": TOKENS, "jwt_hs256_secret": HS_SECRET,
                                "jwt_leeway": 0})
    events = f"{server.origin}/api/events"
    token = hs_token("alice", ttl=2)
    lines: list[str] = []
    # Heartbeats come every 15 s: a stream that stayed open would time out the 8 s read.
    with httpx.stream("GET", events, headers=bearer(token), timeout=httpx.Timeout(10, read=8)) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            lines.append(line)
    assert lines[0].startswith("retry:")
    assert httpx.get(events, headers=bearer(token), timeout=5).status_code == 401  # reconnect: refused
    with httpx.stream("GET", events, headers=bearer(ALICE_TOKEN), timeout=10) as stream:  # static token
        assert stream.status_code == 200
        assert next(stream.iter_lines()).startswith("retry:")
