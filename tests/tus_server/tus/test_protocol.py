"""Core protocol through httpx against the app: discovery, versioning, HEAD, PATCH, bad input."""

from __future__ import annotations

import pytest

from tests.support.tushelp import (BASE, OCTET, TUS, all_uploads, b64, chunked, create, head, new_upload,
                               patch, row, upload_bytes)

EXTENSIONS = {"creation", "creation-with-upload", "creation-defer-length", "expiration", "checksum",
              "termination", "concatenation"}


async def test_options_discovery(client) -> None:
    r = await client.options(BASE)
    assert r.status_code in (200, 204)
    assert r.headers["tus-version"] == "1.0.0"
    assert set(r.headers["tus-extension"].split(",")) == EXTENSIONS  # no checksum-trailer/unfinished
    assert r.headers["tus-max-size"] == str(client.settings.uploads.max_size)
    algos = r.headers["tus-checksum-algorithm"].split(",")
    assert {"sha1", "md5", "sha256"} <= set(algos)
    assert all(a == a.lower() and a.isascii() for a in algos)


async def test_options_ignores_tus_resumable(client) -> None:
    for value in ("0.2.2", "garbage", "1.0.0"):
        r = await client.options(BASE, headers={"Tus-Resumable": value})
        assert r.status_code in (200, 204)
        assert r.headers["tus-version"] == "1.0.0"


@pytest.mark.file_only  # S3 always has a limit: 10,000 parts
async def test_options_without_limit_has_no_max_size(make_client) -> None:
    c = await make_client(uploads={"max_size": 0})
    r = await c.options(BASE)
    assert "tus-max-size" not in r.headers


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0", "2.0.0"])
async def test_unsupported_version_is_412_and_changes_nothing(client, version) -> None:
    url = await new_upload(client, 10)
    before = len(all_uploads(client))
    extra = {} if version is None else {"Tus-Resumable": version}
    cases = [
        client.post(BASE, headers={"Upload-Length": "5", **extra}),
        client.patch(url, headers={**OCTET, "Upload-Offset": "0", **extra}, content=b"12345"),
        client.delete(url, headers=extra),
        client.head(url, headers=extra),
    ]
    for request in cases:
        r = await request
        assert r.status_code == 412
        assert r.headers["tus-version"] == "1.0.0"
        assert r.headers["tus-resumable"] == "1.0.0"
    assert len(all_uploads(client)) == before
    assert row(client, url).offset == 0
    assert upload_bytes(client, url) == b""


async def test_tus_resumable_on_every_response(client) -> None:
    url = await new_upload(client, 4)
    responses = [
        await create(client, 4),
        await head(client, url),
        await head(client, BASE + "0" * 32),
        await patch(client, url, 3, b"x"),
        await patch(client, url, 0, b"x", {"Content-Type": "text/plain"}),
        await client.post(BASE, headers={**TUS, "Upload-Length": "-1"}),
        await client.get(BASE, headers=TUS),
    ]
    for r in responses:
        assert r.headers.get("tus-resumable") == "1.0.0", (r.status_code, r.headers)


async def test_head_reports_offset_length_and_no_store(client) -> None:
    url = await new_upload(client, 10)
    r = await head(client, url)
    assert r.status_code == 200
    assert r.headers["upload-offset"] == "0"
    assert r.headers["upload-length"] == "10"
    assert r.headers["cache-control"] == "no-store"
    await patch(client, url, 0, b"abcd")
    r = await head(client, url)
    assert r.headers["upload-offset"] == "4"
    await patch(client, url, 4, b"efghij")
    r = await head(client, url)  # complete: still has the offset
    assert r.headers["upload-offset"] == "10" and r.headers["upload-length"] == "10"


async def test_head_unknown_upload(client) -> None:
    r = await head(client, BASE + "f" * 32)
    assert r.status_code == 404
    assert "upload-offset" not in r.headers
    assert r.headers["cache-control"] == "no-store"


async def test_patch_sequence_and_chunked_bodies(client) -> None:
    data = bytes(range(256)) * 1000
    url = await new_upload(client, len(data))
    r = await patch(client, url, 0, data[:1000])
    assert r.status_code == 204 and r.headers["upload-offset"] == "1000"
    r = await patch(client, url, 1000, chunked(data[1000:100_000], 777))  # Transfer-Encoding: chunked
    assert r.status_code == 204 and r.headers["upload-offset"] == "100000"
    r = await patch(client, url, 100_000, b"")  # empty PATCH at the current offset
    assert r.status_code == 204 and r.headers["upload-offset"] == "100000"
    r = await patch(client, url, 100_000, data[100_000:])
    assert r.status_code == 204 and r.headers["upload-offset"] == str(len(data))
    assert upload_bytes(client, url) == data


async def test_method_override(client) -> None:
    url = await new_upload(client, 6)
    r = await client.post(url, headers={**TUS, **OCTET, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"},
                          content=b"abc")
    assert r.status_code == 204 and r.headers["upload-offset"] == "3"
    r = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert r.status_code == 200 and r.headers["upload-offset"] == "3"
    r = await client.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert r.status_code == 204
    assert row(client, url) is None
    r = await head(client, url)
    assert r.status_code == 404


@pytest.mark.parametrize("override", ["GET", "OPTIONS"])
async def test_method_override_outside_the_set_leaves_a_creation(client, override: str) -> None:
    """GET and OPTIONS are never overridable (headers.OVERRIDABLE): the POST creates."""
    r = await client.post(BASE, headers={**TUS, "Upload-Length": "4", "X-HTTP-Method-Override": override})
    assert r.status_code == 201 and row(client, r.headers["Location"]) is not None


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream",
                                          "application/offset+octet-streamX"])
async def test_patch_wrong_content_type_is_415(client, content_type) -> None:
    url = await new_upload(client, 10)
    headers = {**TUS, "Upload-Offset": "0"}
    if content_type:
        headers["Content-Type"] = content_type
    r = await client.patch(url, headers=headers, content=b"12345")
    assert r.status_code == 415
    assert row(client, url).offset == 0 and upload_bytes(client, url) == b""


@pytest.mark.parametrize("value", [None, "", "-1", "+0", "1.5", "0x0", "1e0", "abc",
                                   "9223372036854775808", "99999999999999999999999"])
async def test_patch_bad_offset_is_400(client, value) -> None:
    url = await new_upload(client, 10)
    headers = {**TUS, **OCTET}
    if value is not None:
        headers["Upload-Offset"] = value
    r = await client.patch(url, headers=headers, content=b"12345")
    assert r.status_code == 400, r.text
    assert r.text.strip() and "\n" not in r.text.strip()  # a one-line reason
    assert row(client, url).offset == 0 and upload_bytes(client, url) == b""


async def test_patch_non_ascii_digit_offset_is_400(client) -> None:
    url = await new_upload(client, 10)
    headers = [(b"tus-resumable", b"1.0.0"), (b"content-type", b"application/offset+octet-stream"),
               (b"upload-offset", "\u00b2".encode("latin-1"))]
    r = await client.patch(url, headers=headers, content=b"1")
    assert r.status_code == 400
    assert upload_bytes(client, url) == b""


async def test_offset_mismatch_is_409_and_changes_nothing(client) -> None:
    url = await new_upload(client, 10)
    await patch(client, url, 0, b"abc")
    for wrong in (0, 2, 4, 10):
        r = await patch(client, url, wrong, b"zzz")
        assert r.status_code == 409
    assert row(client, url).offset == 3 and upload_bytes(client, url) == b"abc"
    r = await patch(client, url, 3, b"d")  # the offset HEAD reports is accepted (T94)
    assert r.status_code == 204


async def test_patch_unknown_upload_is_404(client) -> None:
    r = await patch(client, BASE + "a" * 32, 0, b"x")
    assert r.status_code == 404


async def test_body_past_length_with_content_length_is_refused_before_reading(client) -> None:
    url = await new_upload(client, 5)
    r = await patch(client, url, 0, b"123456")
    assert r.status_code == 413
    assert r.headers.get("connection") == "close"
    assert row(client, url).offset == 0 and upload_bytes(client, url) == b""


async def test_body_past_length_chunked_stops_at_length(client) -> None:
    url = await new_upload(client, 5)
    r = await patch(client, url, 0, chunked(b"1234567890", 3))
    assert r.status_code == 413
    assert r.headers["upload-offset"] == "5"
    assert upload_bytes(client, url) == b"12345"
    assert (await head(client, url)).headers["upload-offset"] == "5"


async def test_length_over_max_is_413_and_inclusive(make_client) -> None:
    c = await make_client(uploads={"max_size": 100})
    r = await create(c, 101)
    assert r.status_code == 413
    assert all_uploads(c) == []
    r = await create(c, 100)
    assert r.status_code == 201


@pytest.mark.parametrize("value", ["-1", "+1", "1.5", "", "abc", "1e3", "9223372036854775808",
                                   "123456789012345678901234567890"])
async def test_bad_upload_length_is_400(client, value) -> None:
    r = await client.post(BASE, headers={**TUS, "Upload-Length": value})
    assert r.status_code in (400, 413)
    assert r.status_code < 500
    assert all_uploads(client) == []


async def test_patch_on_complete_upload(client) -> None:
    url = await new_upload(client, 3)
    await patch(client, url, 0, b"abc")
    r = await patch(client, url, 3, b"")
    assert r.status_code == 204 and r.headers["upload-offset"] == "3"
    r = await patch(client, url, 3, b"more")
    assert r.status_code == 413
    r = await patch(client, url, 3, chunked(b"more"))
    assert r.status_code == 413
    r = await patch(client, url, 3, chunked(b""))
    assert r.status_code == 204
    assert upload_bytes(client, url) == b"abc"
    assert (await head(client, url)).headers["upload-offset"] == "3"


async def test_metadata_round_trips_byte_exact(client) -> None:
    binary = bytes(range(256))
    header = f"filename {b64('Vorlesung ü 1.mp4')},blob {b64(binary)},is_confidential,empty "
    url = await new_upload(client, 1, headers={"Upload-Metadata": header})
    got = (await head(client, url)).headers["upload-metadata"]
    pairs = {p.split(" ")[0]: (p.split(" ") + [""])[1] for p in got.split(",")}
    assert pairs["blob"] == b64(binary)
    assert pairs["filename"] == b64("Vorlesung ü 1.mp4")
    assert pairs["is_confidential"] == "" and pairs["empty"] == ""


async def test_empty_metadata_header_is_valid(client) -> None:
    r = await create(client, 1, headers={"Upload-Metadata": ""})  # what tuspy sends
    assert r.status_code == 201
    assert "upload-metadata" not in (await head(client, r.headers["location"])).headers


@pytest.mark.parametrize("header", ["key %%%", "k YQ==,k Yg==", ",k YQ==", "k a b", "k\u00e9 YQ==",
                                    ",".join(f"k{i}" for i in range(40)), "k " + "QUFB" * 2000])
async def test_malformed_metadata_is_400_nothing_created(client, header) -> None:
    r = await client.post(BASE, headers={**TUS, "Upload-Length": "1", "Upload-Metadata": header.encode("utf-8")})
    assert r.status_code == 400
    assert all_uploads(client) == []


async def test_unknown_method_and_collection_methods(client) -> None:
    assert (await client.get(BASE)).status_code == 405
    assert (await client.delete(BASE, headers=TUS)).status_code == 405
    url = await new_upload(client, 1)
    assert (await client.put(url, headers=TUS)).status_code == 405
