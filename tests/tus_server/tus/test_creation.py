"""creation, creation-with-upload, creation-defer-length and expiration, through httpx."""

from __future__ import annotations

import re
import urllib.parse
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest
from sqlmodel import Session

from models.tables import Upload
from tests.support.tushelp import (BASE, OCTET, TUS, all_media, all_uploads, chunked, create, engine_of,
                               head, new_upload, patch, row, upload_bytes, upload_id)

IMF_FIXDATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                         r" \d{4} \d\d:\d\d:\d\d GMT")


async def test_creation_201_location_and_offset_zero(client) -> None:
    r = await create(client, 100)
    assert r.status_code == 201
    location = r.headers["location"]
    assert re.fullmatch(r"http://testserver/files/[0-9a-f]{32}", location)
    assert (await head(client, location)).headers["upload-offset"] == "0"
    urls = {await new_upload(client, 1) for _ in range(20)}
    assert len(urls) == 20  # unique, 128-bit ids (T95)


async def test_location_follows_host_header_not_forwarded_by_default(client) -> None:
    r = await create(client, 1, headers={"Host": "proxy.example:8443", "X-Forwarded-Host": "evil.example",
                                         "X-Forwarded-Proto": "https"})
    assert r.headers["location"].startswith("http://proxy.example:8443/files/")


async def test_location_trusts_forwarded_when_enabled(make_client) -> None:
    c = await make_client(server={"trust_forwarded_headers": True})
    r = await create(c, 1, headers={"X-Forwarded-Host": "cdn.example", "X-Forwarded-Proto": "https"})
    assert r.headers["location"].startswith("https://cdn.example/files/")


async def test_bad_host_header_falls_back(client) -> None:
    r = await create(client, 1, headers={"Host": "bad host\\x"})
    assert r.status_code == 201
    # the authority, not the whole URL: a random hex id may well contain "bad"
    assert urllib.parse.urlsplit(r.headers["location"]).netloc == "testserver"


@pytest.mark.parametrize("headers,code", [
    ({}, "ERR_UPLOAD_LENGTH_REQUIRED"),
    ({"Upload-Length": "5", "Upload-Defer-Length": "1"}, "ERR_AMBIGUOUS_UPLOAD_LENGTH"),
    ({"Upload-Defer-Length": "2"}, "ERR_INVALID_UPLOAD_DEFER_LENGTH"),
    ({"Upload-Defer-Length": "0"}, "ERR_INVALID_UPLOAD_DEFER_LENGTH"),
    ({"Upload-Defer-Length": "yes"}, "ERR_INVALID_UPLOAD_DEFER_LENGTH"),
])
async def test_creation_length_rules(client, headers, code) -> None:
    r = await client.post(BASE, headers={**TUS, **headers})
    assert r.status_code == 400
    assert all_uploads(client) == []


async def test_zero_length_upload_completes_on_creation(client) -> None:
    r = await create(client, 0)
    assert r.status_code == 201
    assert 'rel="media"' in r.headers["link"]
    assert row(client, r.headers["location"]).is_complete
    assert [m.id for m in all_media(client)] == [upload_id(r.headers["location"])]


async def test_creation_with_upload_partial_body(client) -> None:
    r = await create(client, 10, body=b"abcd")
    assert r.status_code == 201
    assert r.headers["upload-offset"] == "4"
    url = r.headers["location"]
    assert (await head(client, url)).headers["upload-offset"] == "4"
    r = await patch(client, url, 4, b"efghij")
    assert r.status_code == 204 and 'rel="media"' in r.headers["link"]
    assert upload_bytes(client, url) == b"abcdefghij"


async def test_creation_with_upload_whole_body_completes(client) -> None:
    r = await create(client, 5, body=b"hello")
    assert r.status_code == 201 and r.headers["upload-offset"] == "5"
    assert 'rel="media"' in r.headers["link"]
    assert len(all_media(client)) == 1
    assert upload_bytes(client, r.headers["location"]) == b"hello"


async def test_creation_with_upload_chunked_body(client) -> None:
    r = await client.post(BASE, headers={**TUS, **OCTET, "Upload-Length": "3000"}, content=chunked(b"x" * 2000, 100))
    assert r.status_code == 201 and r.headers["upload-offset"] == "2000"


async def test_creation_body_larger_than_length_is_413(client) -> None:
    r = await create(client, 3, body=b"toolong")
    assert r.status_code == 413
    assert all_uploads(client) == []


async def test_creation_with_foreign_content_type_ignores_body(client) -> None:
    r = await client.post(BASE, headers={**TUS, "Upload-Length": "10",
                                         "Content-Type": "application/x-www-form-urlencoded"}, content=b"a=b")
    assert r.status_code == 201
    assert "upload-offset" not in r.headers or r.headers["upload-offset"] == "0"
    assert (await head(client, r.headers["location"])).headers["upload-offset"] == "0"


async def test_creation_with_upload_expect_100_continue_header(client) -> None:
    r = await create(client, 4, body=b"abcd", headers={"Expect": "100-continue"})
    assert r.status_code == 201 and r.headers["upload-offset"] == "4"


# --------------------------------------------------------------------------- defer length
async def test_deferred_length_head_until_declared(client) -> None:
    url = await new_upload(client, defer=True)
    r = await head(client, url)
    assert r.headers["upload-defer-length"] == "1" and "upload-length" not in r.headers
    await patch(client, url, 0, b"abc")
    r = await head(client, url)
    assert r.headers["upload-defer-length"] == "1" and "upload-length" not in r.headers
    assert r.headers["upload-offset"] == "3"


async def test_deferred_tus_js_client_shape(client) -> None:
    """Data PATCHes, then an empty PATCH with Upload-Length == Upload-Offset completes."""
    url = await new_upload(client, defer=True)
    await patch(client, url, 0, b"abc")
    await patch(client, url, 3, b"def")
    assert not row(client, url).is_complete
    r = await patch(client, url, 6, b"", {"Upload-Length": "6"})
    assert r.status_code == 204 and r.headers["upload-offset"] == "6"
    assert 'rel="media"' in r.headers["link"]
    h = (await head(client, url)).headers
    assert h["upload-length"] == "6" and "upload-defer-length" not in h
    assert len(all_media(client)) == 1 and upload_bytes(client, url) == b"abcdef"


async def test_deferred_tuspy_shape(client) -> None:
    """The last data PATCH carries Upload-Length = offset + chunk."""
    url = await new_upload(client, defer=True)
    await patch(client, url, 0, b"abc")
    r = await patch(client, url, 3, b"def", {"Upload-Length": "6"})
    assert r.status_code == 204 and r.headers["upload-offset"] == "6"
    assert row(client, url).is_complete and upload_bytes(client, url) == b"abcdef"


async def test_declared_length_cannot_change(client) -> None:
    url = await new_upload(client, 10)
    r = await patch(client, url, 0, b"abc", {"Upload-Length": "11"})
    assert r.status_code == 400
    assert row(client, url).offset == 0 and upload_bytes(client, url) == b""
    r = await patch(client, url, 0, b"abc", {"Upload-Length": "10"})  # same value: a retry, fine
    assert r.status_code == 204


async def test_declared_length_below_offset_or_over_max(make_client) -> None:
    c = await make_client(uploads={"max_size": 100})
    url = await new_upload(c, defer=True)
    await patch(c, url, 0, b"abcd")
    r = await patch(c, url, 4, b"", {"Upload-Length": "3"})
    assert r.status_code == 400
    r = await patch(c, url, 4, b"", {"Upload-Length": "101"})
    assert r.status_code == 413
    h = (await head(c, url)).headers
    assert h["upload-defer-length"] == "1" and h["upload-offset"] == "4"


async def test_declared_length_not_applied_on_offset_mismatch(client) -> None:
    url = await new_upload(client, defer=True)
    await patch(client, url, 0, b"abcd")
    r = await patch(client, url, 2, b"", {"Upload-Length": "4"})
    assert r.status_code == 409
    assert row(client, url).length is None


async def test_declared_length_not_applied_when_body_too_big(client) -> None:
    url = await new_upload(client, defer=True)
    r = await patch(client, url, 0, b"abcdef", {"Upload-Length": "4"})
    assert r.status_code == 413
    assert row(client, url).length is None and upload_bytes(client, url) == b""


async def test_deferred_upload_cannot_pass_max_size(make_client) -> None:
    c = await make_client(uploads={"max_size": 10})
    url = await new_upload(c, defer=True)
    r = await patch(c, url, 0, b"x" * 11)
    assert r.status_code == 413 and upload_bytes(c, url) == b""
    r = await patch(c, url, 0, chunked(b"y" * 15, 4))
    assert r.status_code == 413
    assert upload_bytes(c, url) == b"y" * 10
    assert (await head(c, url)).headers["upload-offset"] == "10"


async def test_defer_length_for_partial_is_refused(client) -> None:
    r = await client.post(BASE, headers={**TUS, "Upload-Defer-Length": "1", "Upload-Concat": "partial"})
    assert r.status_code == 400 and all_uploads(client) == []


# --------------------------------------------------------------------------- expiration
def _parse_expires(value: str) -> datetime:
    assert IMF_FIXDATE.fullmatch(value), value
    return parsedate_to_datetime(value)


async def test_upload_expires_on_creation_patch_and_head(make_client) -> None:
    c = await make_client(uploads={"expiration": 3600})
    now = datetime.now(timezone.utc)
    r = await create(c, 10)
    created = _parse_expires(r.headers["upload-expires"])
    assert now + timedelta(seconds=3590) <= created <= now + timedelta(seconds=3610)
    url = r.headers["location"]
    r = await patch(c, url, 0, b"abc")
    assert _parse_expires(r.headers["upload-expires"]) >= created
    assert _parse_expires((await head(c, url)).headers["upload-expires"]) >= created
    r = await patch(c, url, 3, b"defghij")  # complete: nothing expires any more
    assert "upload-expires" not in r.headers
    assert "upload-expires" not in (await head(c, url)).headers


async def test_no_upload_expires_when_disabled(make_client) -> None:
    c = await make_client(uploads={"expiration": 0})
    r = await create(c, 10)
    assert "upload-expires" not in r.headers
    assert "upload-expires" not in (await patch(c, r.headers["location"], 0, b"a")).headers


def _expire(client, url: str) -> None:
    with Session(engine_of(client)) as s:
        upload = s.get(Upload, upload_id(url))
        upload.expires_at = datetime.now(timezone.utc) - timedelta(seconds=5)
        s.add(upload)
        s.commit()


async def test_expired_upload_is_410_everywhere(client) -> None:
    url = await new_upload(client, 10)
    await patch(client, url, 0, b"abc")
    _expire(client, url)
    assert (await head(client, url)).status_code == 410
    assert "upload-offset" not in (await head(client, url)).headers
    r = await patch(client, url, 3, b"def")
    assert r.status_code == 410
    assert upload_bytes(client, url) == b"abc"
    assert (await client.delete(url, headers=TUS)).status_code == 410


async def test_expired_upload_is_410_when_cleanup_has_not_run(client) -> None:
    url = await new_upload(client, 10)
    _expire(client, url)
    assert (await head(client, url)).status_code == 410
    assert row(client, url) is not None  # only `tusflow cleanup` deletes
