"""checksum, termination and concatenation through httpx."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.support.tushelp import (BASE, OCTET, TUS, all_media, all_uploads, create, data_dir_of, head,
                               new_upload, patch, row, upload_bytes, upload_id)


def checksum(algo: str, data: bytes) -> str:
    return f"{algo} {base64.b64encode(hashlib.new(algo, data).digest()).decode()}"


# --------------------------------------------------------------------------- checksum
@pytest.mark.parametrize("algo", ["sha1", "md5", "sha256", "sha512"])
async def test_checksum_match(client, algo) -> None:
    url = await new_upload(client, 8)
    r = await patch(client, url, 0, b"abcd", {"Upload-Checksum": checksum(algo, b"abcd")})
    assert r.status_code == 204 and r.headers["upload-offset"] == "4"
    r = await patch(client, url, 4, b"efgh", {"Upload-Checksum": checksum(algo, b"efgh")})
    assert r.status_code == 204 and r.headers["upload-offset"] == "8"
    assert upload_bytes(client, url) == b"abcdefgh"


async def test_checksum_mismatch_is_460_discards_chunk_and_retry_works(client) -> None:
    url = await new_upload(client, 8)
    await patch(client, url, 0, b"abcd")
    r = await patch(client, url, 4, b"efgX", {"Upload-Checksum": checksum("sha1", b"efgh")})
    assert r.status_code == 460
    assert row(client, url).offset == 4 and upload_bytes(client, url) == b"abcd"
    assert (await head(client, url)).headers["upload-offset"] == "4"
    assert not list((data_dir_of(client) / "uploads").glob("*.stage"))
    r = await patch(client, url, 4, b"efgh", {"Upload-Checksum": checksum("sha1", b"efgh")})
    assert r.status_code == 204 and upload_bytes(client, url) == b"abcdefgh"


@pytest.mark.parametrize("header", ["crc32 AAAAAA==", "SHA1 " + base64.b64encode(b"x" * 20).decode(),
                                    "sha1", "sha1 !!!", "sha1 a b"])
async def test_checksum_bad_header_is_400(client, header) -> None:
    url = await new_upload(client, 4)
    r = await patch(client, url, 0, b"abcd", {"Upload-Checksum": header})
    assert r.status_code == 400
    assert row(client, url).offset == 0 and upload_bytes(client, url) == b""


async def test_checksum_on_creation_with_upload(client) -> None:
    r = await create(client, 4, body=b"abcd", headers={"Upload-Checksum": checksum("sha256", b"abcd")})
    assert r.status_code == 201 and r.headers["upload-offset"] == "4"
    r = await create(client, 4, body=b"abcd", headers={"Upload-Checksum": checksum("sha256", b"abcX")})
    assert r.status_code == 460
    url = r.headers["location"]  # the upload exists; the client may resume it
    assert (await head(client, url)).headers["upload-offset"] == "0"


# --------------------------------------------------------------------------- termination
async def test_delete_unfinished_upload(client) -> None:
    url = await new_upload(client, 10)
    await patch(client, url, 0, b"abc")
    r = await client.delete(url, headers=TUS)
    assert r.status_code == 204
    assert row(client, url) is None and upload_bytes(client, url) is None
    assert not (data_dir_of(client) / "locks" / f"{upload_id(url)}.lock").exists()
    assert (await head(client, url)).status_code == 404
    assert (await patch(client, url, 3, b"d")).status_code == 404
    assert (await client.delete(url, headers=TUS)).status_code == 404


async def test_delete_finished_upload(client) -> None:
    url = await new_upload(client, 3)
    await patch(client, url, 0, b"abc")
    assert (await client.delete(url, headers=TUS)).status_code == 204
    assert (await head(client, url)).status_code == 404
    # the original now belongs to its media item, which termination does not touch
    assert [m.id for m in all_media(client)] == [upload_id(url)]


async def test_delete_unknown_is_404(client) -> None:
    assert (await client.delete(BASE + "b" * 32, headers=TUS)).status_code == 404


# --------------------------------------------------------------------------- concatenation
async def _partial(client, data: bytes, complete: bool = True) -> str:
    url = await new_upload(client, len(data), headers={"Upload-Concat": "partial"})
    if complete:
        r = await patch(client, url, 0, data)
        assert r.status_code == 204
    return url


async def test_partials_and_final_in_order(client) -> None:
    parts = [b"first-", b"second-", b"third"]
    urls = [await _partial(client, p) for p in parts]
    h = (await head(client, urls[0])).headers
    assert h["upload-concat"] == "partial" and h["upload-offset"] == str(len(parts[0]))
    assert "link" not in h
    assert all_media(client) == []  # partials never complete as media
    concat = "final;" + " ".join([urls[2], urls[0].replace("http://testserver", ""), urls[1]])
    meta = "filename " + base64.b64encode(b"final.mp4").decode()
    r = await client.post(BASE, headers={**TUS, "Upload-Concat": concat, "Upload-Metadata": meta})
    assert r.status_code == 201
    assert 'rel="media"' in r.headers["link"]
    final = r.headers["location"]
    assert upload_bytes(client, final) == parts[2] + parts[0] + parts[1]
    h = (await head(client, final)).headers
    total = str(sum(map(len, parts)))
    assert h["upload-offset"] == total and h["upload-length"] == total
    # the partials as this server's paths, however the client wrote them (bounded size)
    assert h["upload-concat"] == "final;" + " ".join(BASE + upload_id(u) for u in (urls[2], urls[0], urls[1]))
    assert h["upload-metadata"] == meta  # its own, not the partials'
    assert [m.id for m in all_media(client)] == [upload_id(final)]
    for url in urls:  # partials stay usable
        assert (await head(client, url)).status_code == 200


async def test_partial_listed_twice_is_400(client) -> None:
    a = await _partial(client, b"ab")
    r = await client.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a} {a}"})
    assert r.status_code == 400 and r.text == f"partial upload {upload_id(a)} is listed more than once\n"
    assert len(all_uploads(client)) == 1


async def test_patch_on_final_is_403(client) -> None:
    a = await _partial(client, b"abc")
    final = (await client.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a}"})).headers["location"]
    for offset in (0, 3):
        r = await patch(client, final, offset, b"x")
        assert r.status_code == 403
    assert upload_bytes(client, final) == b"abc" and upload_bytes(client, a) == b"abc"


async def test_final_with_unfinished_partial_is_400(client) -> None:
    a = await _partial(client, b"abc")
    b = await _partial(client, b"def", complete=False)
    before = len(all_uploads(client))
    r = await client.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a} {b}"})
    assert r.status_code == 400 and len(all_uploads(client)) == before


async def test_final_with_non_partial_is_400(client) -> None:
    a = await _partial(client, b"abc")
    plain = await new_upload(client, 1)
    await patch(client, plain, 0, b"z")
    r = await client.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a} {plain}"})
    assert r.status_code == 400


async def test_final_with_unknown_or_foreign_partial_is_404(client) -> None:
    a = await _partial(client, b"abc")
    for other in (BASE + "c" * 32, "http://x/other/" + upload_id(a), "/files/../files/" + upload_id(a)):
        r = await client.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a} {other}"})
        assert r.status_code == 404


@pytest.mark.parametrize("header", ["final;", "final", "bogus", "final; "])
async def test_malformed_concat_is_400(client, header) -> None:
    r = await client.post(BASE, headers={**TUS, "Upload-Length": "1", "Upload-Concat": header})
    assert r.status_code == 400 and all_uploads(client) == []


async def test_final_larger_than_max_is_413(make_client) -> None:
    c = await make_client(uploads={"max_size": 10})
    a, b = await _partial(c, b"x" * 6), await _partial(c, b"y" * 6)
    r = await c.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a} {b}"})
    assert r.status_code == 413
    assert len(all_uploads(c)) == 2


async def test_final_with_body_is_403(client) -> None:
    a = await _partial(client, b"abc")
    r = await client.post(BASE, headers={**TUS, **OCTET, "Upload-Concat": f"final;{a}"}, content=b"zz")
    assert r.status_code == 403 and len(all_uploads(client)) == 1


async def test_final_with_disagreeing_length_is_400(client) -> None:
    a = await _partial(client, b"abc")
    r = await client.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a}", "Upload-Length": "4"})
    assert r.status_code == 400
    r = await client.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a}", "Upload-Length": "3"})
    assert r.status_code == 201
