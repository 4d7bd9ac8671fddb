"""What the pages tell their script about auth, and who may frame them: the platform's explicit
origins from ``[cors] allow_origins``, never "any origin", and never a secret in the page."""

from __future__ import annotations

import json
import re

import httpx

from tests.support.apphelp import MakeClient, make_client  # noqa: F401
from tests.support.credentials import HS_SECRET, SIGNING_KEY


def page_data(r: httpx.Response) -> dict:
    match = re.search(r'<script type="application/json" id="tusflow-data">(.*?)</script>', r.text, re.S)
    assert match, r.text[:500]
    return json.loads(match.group(1))


def frame_ancestors(r: httpx.Response) -> str:
    return re.search(r"frame-ancestors ([^;]+);", r.headers["content-security-policy"]).group(1)  # type: ignore[union-attr]


async def test_default_cors_lets_only_this_origin_frame_the_pages(make_client: MakeClient) -> None:
    client = await make_client(auth={"signed_playback": True})
    r = await client.get("/")
    assert r.status_code == 200
    assert frame_ancestors(r) == "'self'"
    auth = page_data(r)["config"]["auth"]
    assert auth == {"enabled": True, "queryToken": True, "cookieName": "tusflow_token", "hostOrigins": []}
    assert HS_SECRET not in r.text and SIGNING_KEY not in r.text


async def test_explicit_platform_origins_may_frame_and_push_tokens(make_client: MakeClient) -> None:
    client = await make_client(cors={"allow_origins": ["https://lms.example", "http://127.0.0.1:8080/", "*",
                                                       "javascript:alert(1)"]})
    r = await client.get("/media")
    assert frame_ancestors(r) == "'self' https://lms.example http://127.0.0.1:8080"
    assert page_data(r)["config"]["auth"]["hostOrigins"] == ["https://lms.example", "http://127.0.0.1:8080"]


async def test_auth_off_tells_the_page_so(make_client: MakeClient) -> None:
    client = await make_client(auth={"enabled": False})
    assert page_data(await client.get("/"))["config"]["auth"]["enabled"] is False
