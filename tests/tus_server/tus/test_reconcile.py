"""The row follows the bytes: after a process died between writing and recording, HEAD reports
what the file holds, and a final whose completion was never recorded completes on first look."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session

from models.tables import Upload
from tests.support.tushelp import (BASE, TUS, all_media, data_dir_of, engine_of, head, new_upload, patch, row,
                               upload_id)


def _set(client, url: str, **values) -> None:  # type: ignore[no-untyped-def]
    with Session(engine_of(client)) as s:
        upload = s.get(Upload, upload_id(url))
        for key, value in values.items():
            setattr(upload, key, value)
        s.add(upload)
        s.commit()


@pytest.mark.file_only  # damages the upload's file
async def test_head_adopts_bytes_written_but_not_recorded(client) -> None:
    url = await new_upload(client, 10)
    await patch(client, url, 0, b"abc")
    path = data_dir_of(client) / "uploads" / upload_id(url)
    with open(path, "ab") as f:
        f.write(b"defg")  # a killed process wrote these after its last row update
    r = await head(client, url)
    assert r.headers["upload-offset"] == "7" and row(client, url).offset == 7
    assert (await patch(client, url, 7, b"hij")).status_code == 204
    assert (data_dir_of(client) / "originals" / upload_id(url)).read_bytes() == b"abcdefghij"


@pytest.mark.file_only  # damages the upload's file
async def test_head_never_claims_more_than_the_file_holds(client) -> None:
    url = await new_upload(client, 10)
    await patch(client, url, 0, b"abcdef")
    path = data_dir_of(client) / "uploads" / upload_id(url)
    path.write_bytes(b"abcd")  # e.g. a power loss without fsync
    assert (await head(client, url)).headers["upload-offset"] == "4"
    assert (await patch(client, url, 6, b"x")).status_code == 409
    assert (await patch(client, url, 4, b"efghij")).status_code == 204


@pytest.mark.file_only  # damages the upload's file
async def test_bytes_past_length_are_cut_and_upload_completes(client) -> None:
    url = await new_upload(client, 4)
    (data_dir_of(client) / "uploads" / upload_id(url)).write_bytes(b"abcdXYZ")
    r = await head(client, url)
    assert r.headers["upload-offset"] == "4"
    assert row(client, url).is_complete and len(all_media(client)) == 1


@pytest.mark.file_only  # moves the original back by hand
async def test_final_left_unrecorded_completes_on_head(client) -> None:
    a = await new_upload(client, 3, headers={"Upload-Concat": "partial"})
    await patch(client, a, 0, b"abc")
    r = await client.post(BASE, headers={**TUS, "Upload-Concat": f"final;{a}"})
    final = r.headers["location"]
    # as if the process died after inserting the final's row but before recording completion
    _set(client, final, completed_at=None, storage_path=f"uploads/{upload_id(final)}")
    from models.tables import Media
    with Session(engine_of(client)) as s:
        s.delete(s.get(Media, upload_id(final)))
        s.commit()
    (data_dir_of(client) / "originals" / upload_id(final)).rename(data_dir_of(client) / "uploads" / upload_id(final))
    h = (await head(client, final)).headers
    assert h["upload-offset"] == h["upload-length"] == "3" and 'rel="media"' in h["link"]
    assert row(client, final).is_complete
    assert [m.id for m in all_media(client)] == [upload_id(final)]
    assert json.loads(row(client, final).concat_parts) == [upload_id(a)]


@pytest.mark.file_only  # undoes the file store's rename
async def test_get_repairs_a_rename_that_never_happened(client) -> None:
    url = await new_upload(client, 3)
    await patch(client, url, 0, b"abc")
    root = data_dir_of(client)
    (root / "originals" / upload_id(url)).rename(root / "uploads" / upload_id(url))
    r = await client.get(url)
    assert r.status_code == 200 and r.content == b"abc"
    assert (root / "originals" / upload_id(url)).exists() and not (root / "uploads" / upload_id(url)).exists()
