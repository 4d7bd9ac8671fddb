"""The IETF resumable-upload draft on the tus endpoint, through the real app in-process (httpx):
every I-requirement of the spec checklist section 13 that a client can see, for interop
versions 6, 7 and 8 (and what differs for 5). The wire-level parts (104, cut requests) are in
test_draft_wire.py, real clients in test_draft_clients.py."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import httpx
import pytest
from sqlmodel import Session, select

from models.metadata import stored_metadata
from models.tables import Media
from tests.support.tushelp import TUS, all_uploads, chunked, data_dir_of, engine_of, row, upload_bytes
from tus_server.tus import draft_headers as D

BASE = "/files/"
PARTIAL = {"Content-Type": "application/partial-upload"}
VERSIONS = [6, 7, 8]
MISMATCH = "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
INCONSISTENT = "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"


def v(version: int, **extra: str) -> dict[str, str]:
    return {"Upload-Draft-Interop-Version": str(version), **extra}


def problem(r: httpx.Response) -> dict:
    assert r.headers["content-type"] == "application/problem+json", r.text
    return json.loads(r.content)


def digest(name: str, data: bytes) -> str:
    raw = hashlib.new(name.replace("-", ""), data).digest()
    return f"{name}=:{base64.b64encode(raw).decode()}:"


async def create(client: httpx.AsyncClient, version: int, complete: bool, body: bytes | None = None,
                 **headers: str) -> httpx.Response:
    h = v(version, **{"Upload-Complete": "?1" if complete else "?0"})
    h.update({k.replace("_", "-"): val for k, val in headers.items()})
    return await client.post(BASE, headers=h, content=body)


async def append(client: httpx.AsyncClient, url: str, version: int, offset: int, data: bytes,
                 complete: bool, **headers: str) -> httpx.Response:
    h = v(version, **PARTIAL, **{"Upload-Offset": str(offset), "Upload-Complete": "?1" if complete else "?0"})
    h.update({k.replace("_", "-"): val for k, val in headers.items()})
    return await client.patch(url, headers=h, content=data)


def stored(client: httpx.AsyncClient, url: str) -> bytes:
    upload = row(client, url)
    assert upload is not None
    data = upload_bytes(client, upload.id)  # files or S3
    assert data is not None
    return data


@pytest.mark.parametrize("version", VERSIONS)
async def test_options_announces_upload_limit_with_size_and_age(make_client, version) -> None:
    client = await make_client(uploads={"max_size": 5000, "expiration": 600})
    r = await client.options(BASE, headers=v(version))
    assert r.status_code in (200, 204)
    assert D.parse_limit(r.headers["upload-limit"]) == D.UploadLimit(max_size=5000, max_age=600)
    assert r.headers["upload-draft-interop-version"] == str(version)
    assert "tus-resumable" not in r.headers


async def test_options_without_limits_says_min_size_zero(make_client) -> None:
    client = await make_client(uploads={"max_size": 0, "expiration": 0})
    r = await client.options(BASE, headers=v(8))
    assert r.headers["upload-limit"] == "min-size=0"


@pytest.mark.parametrize("version", VERSIONS)
async def test_creation_with_all_content_completes_and_publishes(client, version) -> None:
    data = os.urandom(70_000)
    r = await create(client, version, True, data, Content_Type="video/mp4",
                     Content_Disposition='attachment; filename="lecture 1.mp4"')
    assert r.status_code == 201, r.text
    assert r.headers["upload-complete"] == "?1"
    assert r.headers["upload-offset"] == str(len(data))
    assert r.headers["upload-draft-interop-version"] == str(version)
    assert "tus-resumable" not in r.headers
    upload = row(client, r.headers["location"])
    assert upload.is_complete and upload.length == len(data)
    meta = stored_metadata(upload.metadata_raw)
    assert meta.text("filetype") == "video/mp4" and meta.text("filename") == "lecture 1.mp4"
    assert hashlib.sha256(stored(client, r.headers["location"])).digest() == hashlib.sha256(data).digest()
    with Session(engine_of(client)) as s:  # published exactly like a tus upload
        media = s.get(Media, upload.id)
    assert media is not None and media.filename == "lecture 1.mp4" and media.title == "lecture 1"
    assert media.filetype == "video/mp4" and media.size == len(data)
    assert r.headers["link"] == f'</api/media/{upload.id}>; rel="media"'


@pytest.mark.parametrize("version", VERSIONS)
async def test_creation_without_content_then_appends_then_completion(client, version) -> None:
    data = os.urandom(50_000)
    r = await create(client, version, False, Upload_Length=str(len(data)))
    assert r.status_code == 201 and r.headers["upload-complete"] == "?0"
    url = r.headers["location"]
    assert D.parse_limit(r.headers["upload-limit"]) is not None
    h = await client.head(url, headers=v(version))
    assert h.status_code == 204
    assert (h.headers["upload-offset"], h.headers["upload-complete"], h.headers["upload-length"]) == ("0", "?0", str(len(data)))
    assert h.headers["cache-control"] == "no-store" and "upload-limit" in h.headers
    r = await append(client, url, version, 0, data[:20_000], False)
    assert r.status_code == 204 and r.headers["upload-offset"] == "20000" and r.headers["upload-complete"] == "?0"
    r = await append(client, url, version, 20_000, data[20_000:], True)
    assert r.status_code == 204, r.text
    assert r.headers["upload-complete"] == "?1" and r.headers["upload-offset"] == str(len(data))
    assert stored(client, url) == data
    h = await client.head(url, headers=v(version))
    assert h.headers["upload-complete"] == "?1" and h.headers["upload-offset"] == str(len(data))


@pytest.mark.parametrize("version", VERSIONS)
async def test_length_learned_from_the_completing_append(client, version) -> None:
    r = await create(client, version, False)
    url = r.headers["location"]
    h = await client.head(url, headers=v(version))
    assert "upload-length" not in h.headers  # not known yet
    await append(client, url, version, 0, b"a" * 1000, False)
    r = await append(client, url, version, 1000, b"b" * 500, True)
    assert r.headers["upload-complete"] == "?1" and r.headers["upload-length"] == "1500"
    assert row(client, url).length == 1500 and row(client, url).is_complete


async def test_chunked_completing_creation_takes_the_length_it_received(client) -> None:
    data = os.urandom(30_000)
    r = await client.post(BASE, headers=v(8, **{"Upload-Complete": "?1"}), content=chunked(data))
    assert r.status_code == 201 and r.headers["upload-complete"] == "?1"
    assert row(client, r.headers["location"]).length == len(data)
    assert stored(client, r.headers["location"]) == data


async def test_empty_completing_creation_is_a_zero_byte_upload(client) -> None:
    r = await create(client, 8, True, b"")
    assert r.status_code == 201 and r.headers["upload-complete"] == "?1" and r.headers["upload-offset"] == "0"
    assert row(client, r.headers["location"]).is_complete


@pytest.mark.parametrize("version", VERSIONS)
async def test_mismatching_offset_is_409_problem_with_offsets_and_state(client, version) -> None:
    url = (await create(client, version, False, b"x" * 100, Upload_Length="300")).headers["location"]
    r = await append(client, url, version, 50, b"y" * 10, False)
    assert r.status_code == 409
    assert r.headers["upload-offset"] == "100" and r.headers["upload-complete"] == "?0"
    doc = problem(r)
    assert doc["type"] == MISMATCH and doc["expected-offset"] == 100 and doc["provided-offset"] == 50
    assert row(client, url).offset == 100  # nothing appended


@pytest.mark.parametrize("version", VERSIONS)
async def test_inconsistent_lengths_are_refused_before_anything_is_stored(client, version) -> None:
    before = len(all_uploads(client))
    r = await create(client, version, True, b"z" * 10, Upload_Length="11")
    assert r.status_code == 400 and problem(r)["type"] == INCONSISTENT
    assert len(all_uploads(client)) == before  # no upload was created
    url = (await create(client, version, False, Upload_Length="100")).headers["location"]
    for offset, data, complete, extra in [(0, b"a" * 10, True, {}),             # ?1 + 10 bytes != 100
                                         (0, b"a" * 10, False, {"Upload_Length": "99"}),  # changed length
                                         (0, b"a" * 101, False, {})]:              # past the length
        r = await append(client, url, version, offset, data, complete, **extra)
        assert r.status_code == 400 and problem(r)["type"] == INCONSISTENT, (data[:3], complete, extra)
    assert row(client, url).offset == 0 and row(client, url).length == 100


@pytest.mark.parametrize("version", VERSIONS)
async def test_append_needs_partial_upload_media_type_offset_and_complete(client, version) -> None:
    url = (await create(client, version, False, Upload_Length="10")).headers["location"]
    base = v(version, **{"Upload-Offset": "0", "Upload-Complete": "?0"})
    r = await client.patch(url, headers={**base, "Content-Type": "application/offset+octet-stream"}, content=b"a")
    assert r.status_code == 415
    r = await client.patch(url, headers={**base, **PARTIAL, "Upload-Offset": "-1"}, content=b"a")
    assert r.status_code == 400 and problem(r)["status"] == 400
    r = await client.patch(url, headers={**base, **PARTIAL, "Upload-Complete": "yes"}, content=b"a")
    assert r.status_code == 400
    assert row(client, url).offset == 0


async def test_interop_5_appends_with_the_tus_media_type_or_none(client) -> None:
    url = (await create(client, 5, False, Upload_Length="4")).headers["location"]
    base = v(5, **{"Upload-Complete": "?0"})
    r = await client.patch(url, headers={**base, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, content=b"ab")
    assert r.status_code == 204 and r.headers["upload-offset"] == "2"
    r = await client.patch(url, headers={**v(5, **{"Upload-Complete": "?1"}), "Upload-Offset": "2"}, content=b"cd")
    assert r.status_code == 204 and r.headers["upload-complete"] == "?1"


async def test_unsupported_or_missing_interop_version(client) -> None:
    r = await client.post(BASE, headers={"Upload-Draft-Interop-Version": "4", "Upload-Complete": "?1"}, content=b"x")
    assert r.status_code == 400 and "interop" in problem(r)["title"].lower()
    assert "upload-draft-interop-version" not in r.headers
    assert all_uploads(client) == []
    # Without the draft header (and without Tus-Resumable) it is a tus request, refused by tus rules.
    r = await client.post(BASE, headers={"Upload-Complete": "?1"}, content=b"x")
    assert r.status_code == 412 and r.headers["tus-resumable"] == "1.0.0"


async def test_completed_upload_takes_no_more_data_but_replays_an_empty_completion(client) -> None:
    url = (await create(client, 8, True, b"done")).headers["location"]
    r = await append(client, url, 8, 4, b"more", True)
    assert r.status_code == 400 and problem(r)["type"].endswith("#completed-upload")
    r = await append(client, url, 8, 4, b"", True)
    assert r.status_code == 204 and r.headers["upload-complete"] == "?1" and r.headers["upload-offset"] == "4"
    assert stored(client, url) == b"done"


async def test_too_large_is_413_with_upload_limit(make_client) -> None:
    client = await make_client(uploads={"max_size": 100})
    r = await create(client, 8, False, Upload_Length="101")
    assert r.status_code == 413 and D.parse_limit(r.headers["upload-limit"]).max_size == 100
    r = await create(client, 8, True, b"x" * 101)
    assert r.status_code == 413 and all_uploads(client) == []


async def test_delete_cancels_and_the_upload_is_gone(client) -> None:
    url = (await create(client, 8, False, b"abc", Upload_Length="10")).headers["location"]
    r = await client.delete(url, headers=v(8))
    assert r.status_code == 204
    assert row(client, url) is None
    r = await client.head(url, headers=v(8))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_content_digest_mismatch_keeps_nothing_of_that_append(client) -> None:
    url = (await create(client, 8, False, b"12345", Upload_Length="10")).headers["location"]
    r = await append(client, url, 8, 5, b"67890", True, Content_Digest=digest("sha-256", b"wrong"))
    assert r.status_code == 400 and "digest" in problem(r)["title"].lower()
    assert row(client, url).offset == 5 and not row(client, url).is_complete
    r = await append(client, url, 8, 5, b"67890", True, Content_Digest=digest("sha-512", b"67890"))
    assert r.status_code == 204 and r.headers["upload-complete"] == "?1"
    assert stored(client, url) == b"1234567890"


async def test_repr_digest_verified_at_completion(client) -> None:
    data = os.urandom(10_000)
    r = await create(client, 8, False, data[:4000], Upload_Length=str(len(data)), Repr_Digest=digest("sha-256", data),
                     Upload_Metadata="")
    url = r.headers["location"]
    r = await append(client, url, 8, 4000, data[4000:], True, Want_Repr_Digest="sha-512=1")
    assert r.status_code == 204 and r.headers["upload-complete"] == "?1"
    assert D.parse_digests(r.headers["repr-digest"]) == {"sha512": hashlib.sha512(data).digest()}
    # A wrong one: the upload is discarded and never published.
    r = await create(client, 8, False, data[:4000], Upload_Length=str(len(data)), Repr_Digest=digest("sha-256", b"other"))
    bad = r.headers["location"]
    r = await append(client, bad, 8, 4000, data[4000:], True)
    assert r.status_code == 400 and "repr-digest" in problem(r)["title"].lower()
    assert row(client, bad) is None
    assert upload_bytes(client, bad.rsplit("/", 1)[-1]) is None  # nothing of it stays stored
    with Session(engine_of(client)) as s:
        assert s.get(Media, bad.rsplit("/", 1)[-1]) is None
        assert len(list(s.exec(select(Media)))) == 1


async def test_tus_and_draft_requests_see_the_same_upload(client) -> None:
    """Same endpoint, same storage: a draft upload is resumable through tus HEAD, and a tus
    client would see exactly the offset the draft client does."""
    url = (await create(client, 8, False, b"a" * 10, Upload_Length="20")).headers["location"]
    r = await client.head(url, headers=TUS)
    assert r.headers["upload-offset"] == "10" and r.headers["upload-length"] == "20"
    r = await client.patch(url, headers={**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "10"},
                           content=b"b" * 10)
    assert r.status_code == 204
    h = await client.head(url, headers=v(7))
    assert h.headers["upload-complete"] == "?1"


async def test_cors_exposes_the_draft_headers(make_client) -> None:
    client = await make_client(cors={"allow_origins": ["https://app.example"]})
    r = await client.options(BASE, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "upload-complete, upload-draft-interop-version, repr-digest, content-disposition"})
    assert r.status_code == 200
    r = await create(client, 8, True, b"x", Origin="https://app.example")
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"upload-complete", "upload-limit", "upload-offset", "location", "upload-draft-interop-version"} <= exposed
