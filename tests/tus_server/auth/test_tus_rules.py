"""Who may do what on the tus endpoint, through the real app: owners, others (404), admins,
missing/wrong/expired credentials (401), size claims, quotas (413) and the pre-create hook."""

from __future__ import annotations

import base64
from typing import Any, Iterator

import httpx
import pytest

from tests.support.apphelp import TUS, MakeClient, bearer, count_rows, create, make_client, new_upload, patch, row  # noqa: F401
from tests.support.credentials import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, SERVICE_TOKEN, hs_token
from tests.support.hookserver import HookServer


@pytest.fixture
async def client(make_client: MakeClient) -> httpx.AsyncClient:
    return await make_client()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_creation_needs_a_credential(client: httpx.AsyncClient) -> None:
    r = await client.post("/files/", headers={**TUS, "Upload-Length": "10", "Origin": "https://lms.example"})
    assert r.status_code == 401 and r.headers["tus-resumable"] == "1.0.0"
    assert r.headers["www-authenticate"] == 'Bearer realm="tusflow"'
    assert r.headers["access-control-allow-origin"] == "*"
    assert "www-authenticate" in r.headers["access-control-expose-headers"].lower()
    assert (await create(client, "wrong-token-0123456789")).status_code == 401
    assert (await create(client, hs_token("alice", ttl=-120))).text == "token expired\n"
    assert count_rows(client) == 0
    upload_id = await new_upload(client, hs_token("alice"))
    assert row(client, upload_id).owner == "alice"  # type: ignore[union-attr]


async def test_options_never_needs_auth(client: httpx.AsyncClient) -> None:
    r = await client.options("/files/")
    assert r.status_code == 204 and r.headers["tus-version"] == "1.0.0"
    pre = await client.options("/files/abc", headers={"Origin": "https://lms.example",
                                                      "Access-Control-Request-Method": "PATCH"})
    assert pre.status_code == 200


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE", "GET"])
async def test_upload_url_is_404_for_others_and_open_to_owner_and_admin(client: httpx.AsyncClient, method: str) -> None:
    upload_id = await new_upload(client, ALICE_TOKEN, 4)
    if method == "GET":  # downloads exist only for finished uploads
        assert (await patch(client, ALICE_TOKEN, upload_id, 0, b"data")).status_code == 204

    async def call(token: str | None) -> httpx.Response:
        headers = {**TUS, **(bearer(token) if token else {})}
        if method == "PATCH":
            headers.update({"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
            return await client.request(method, f"/files/{upload_id}", headers=headers, content=b"da")
        return await client.request(method, f"/files/{upload_id}", headers=headers)

    other = await call(BOB_TOKEN)
    assert other.status_code == 404 and other.headers["tus-resumable"] == "1.0.0"
    assert (await call(hs_token("bob"))).status_code == 404
    assert (await call(None)).status_code == 401
    assert (await call(hs_token("alice", ttl=-120))).status_code == 401
    assert row(client, upload_id).offset == (4 if method == "GET" else 0)  # type: ignore[union-attr]
    owner = await call(hs_token("alice"))  # the same user by JWT as by static token
    assert owner.status_code in (200, 204), owner.text
    if method == "GET":
        assert owner.content == b"data"
    if method != "DELETE":
        admin = await call(ADMIN_TOKEN if method != "PATCH" else SERVICE_TOKEN)
        assert admin.status_code in (200, 204, 409), admin.text


async def test_404_for_others_even_when_the_upload_expired(make_client: MakeClient) -> None:
    client = await make_client(uploads={"expiration": 1})
    upload_id = await new_upload(client, ALICE_TOKEN)
    import asyncio
    await asyncio.sleep(1.2)
    head = {**TUS}
    assert (await client.head(f"/files/{upload_id}", headers={**head, **bearer(BOB_TOKEN)})).status_code == 404
    assert (await client.head(f"/files/{upload_id}", headers={**head, **bearer(ALICE_TOKEN)})).status_code == 410


async def test_final_upload_cannot_take_another_users_partials(client: httpx.AsyncClient) -> None:
    part = await new_upload(client, ALICE_TOKEN, 3, Upload_Concat="partial")
    assert (await patch(client, ALICE_TOKEN, part, 0, b"abc")).status_code == 204
    final = {"Upload-Concat": f"final;/files/{part}"}
    r = await client.post("/files/", headers={**TUS, **bearer(BOB_TOKEN), **final})
    assert r.status_code == 404
    r = await client.post("/files/", headers={**TUS, **bearer(ALICE_TOKEN), **final})
    assert r.status_code == 201, r.text


async def test_expired_token_on_patch_keeps_the_offset_and_resumes(client: httpx.AsyncClient) -> None:
    upload_id = await new_upload(client, hs_token("alice"), 8)
    assert (await patch(client, hs_token("alice"), upload_id, 0, b"abcd")).status_code == 204
    refused = await patch(client, hs_token("alice", ttl=-120), upload_id, 4, b"efgh")
    assert refused.status_code == 401 and refused.text == "token expired\n"
    assert row(client, upload_id).offset == 4  # type: ignore[union-attr]
    head = await client.head(f"/files/{upload_id}", headers={**TUS, **bearer(hs_token("alice"))})
    assert head.headers["upload-offset"] == "4"
    done = await patch(client, hs_token("alice"), upload_id, 4, b"efgh")
    assert done.status_code == 204 and done.headers["upload-offset"] == "8"


async def test_max_size_claim_is_enforced_at_creation_and_declared_length(client: httpx.AsyncClient) -> None:
    small = hs_token("alice", tusflow_max_size=100)
    assert (await create(client, small, 100)).status_code == 201
    r = await create(client, small, 101)
    assert r.status_code == 413 and "100 B you may upload" in r.text and r.headers["tus-resumable"] == "1.0.0"
    deferred = (await client.post("/files/", headers={**TUS, **bearer(small), "Upload-Defer-Length": "1"}))
    upload_id = deferred.headers["location"].rsplit("/", 1)[1]
    r = await patch(client, small, upload_id, 0, b"", Upload_Length="500")
    assert r.status_code == 413
    assert row(client, upload_id).length is None  # type: ignore[union-attr]
    assert (await patch(client, small, upload_id, 0, b"", **{"Upload-Length": "50"})).status_code == 204
    assert (await create(client, hs_token("alice"), 10_000)).status_code == 201  # no claim: global limit only


async def test_quota_per_day_and_total(make_client: MakeClient) -> None:
    client = await make_client(auth={"quota_bytes_per_day": 1000, "quota_bytes_total": 1500})
    await new_upload(client, ALICE_TOKEN, 600)
    before = count_rows(client)
    r = await create(client, ALICE_TOKEN, 401)
    assert r.status_code == 413 and "daily upload quota exceeded" in r.text and "600 B uploaded today" in r.text
    assert count_rows(client) == before  # refused up front: no row, no file
    assert (await create(client, ALICE_TOKEN, 400)).status_code == 201
    assert (await create(client, BOB_TOKEN, 1000)).status_code == 201  # quotas are per user
    assert (await create(client, ADMIN_TOKEN, 5000)).status_code == 201  # admins are exempt


async def test_total_quota(make_client: MakeClient) -> None:
    client = await make_client(auth={"quota_bytes_total": 1000})
    first = await new_upload(client, ALICE_TOKEN, 900)
    r = await create(client, ALICE_TOKEN, 200)
    assert r.status_code == 413 and "storage quota exceeded" in r.text
    assert (await client.delete(f"/files/{first}", headers={**TUS, **bearer(ALICE_TOKEN)})).status_code == 204
    assert (await create(client, ALICE_TOKEN, 200)).status_code == 201  # terminating frees the space


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


async def test_precreate_hook_reject_accept_and_override(make_client: MakeClient, hook: HookServer) -> None:
    client = await make_client(auth={"precreate_hook_url": hook.url, "precreate_hook_timeout": 2.0})
    meta = f"filename {b64('lecture.mp4')},title {b64('Week 1')}"

    def platform(body: dict[str, Any]) -> tuple[int, Any]:
        if body["user"] == "bob":
            return 403, {"message": "Bob is not enrolled as a teacher"}
        return 200, {"metadata": {"course": "algebra-101", "title": None}}
    hook.respond = platform

    r = await create(client, BOB_TOKEN, 10, Upload_Metadata=meta)
    assert r.status_code == 403 and r.text == "Bob is not enrolled as a teacher\n"
    assert count_rows(client) == 0
    upload_id = await new_upload(client, ALICE_TOKEN, 10, Upload_Metadata=meta)
    assert hook.received[-1] == {"type": "pre-create", "user": "alice", "role": "user", "upload_length": 10,
                                 "concat": None, "metadata": {"filename": "lecture.mp4", "title": "Week 1"}}
    head = await client.head(f"/files/{upload_id}", headers={**TUS, **bearer(ALICE_TOKEN)})
    assert head.headers["upload-metadata"] == f"filename {b64('lecture.mp4')},course {b64('algebra-101')}"

    hook.respond = lambda body: (200, None)  # plain accept keeps the client's metadata byte for byte
    upload_id = await new_upload(client, ALICE_TOKEN, 10, Upload_Metadata=meta)
    assert row(client, upload_id).metadata_raw == meta  # type: ignore[union-attr]


async def test_precreate_hook_down_is_503(make_client: MakeClient, hook: HookServer) -> None:
    url = hook.url
    hook.close()
    client = await make_client(auth={"precreate_hook_url": url, "precreate_hook_timeout": 1.0})
    r = await create(client, ALICE_TOKEN, 10)
    assert r.status_code == 503 and "unreachable" in r.text and r.headers["tus-resumable"] == "1.0.0"
    assert count_rows(client) == 0


async def test_auth_disabled_uploads_belong_to_anonymous(make_client: MakeClient) -> None:
    client = await make_client(auth={"enabled": False})
    r = await client.post("/files/", headers={**TUS, "Upload-Length": "3"})
    assert r.status_code == 201
    upload_id = r.headers["location"].rsplit("/", 1)[1]
    assert row(client, upload_id).owner == "anonymous"  # type: ignore[union-attr]
    assert (await client.head(f"/files/{upload_id}", headers=TUS)).status_code == 200
