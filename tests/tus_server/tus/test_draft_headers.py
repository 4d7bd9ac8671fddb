"""The draft's pure header rules (tus_server/tus/draft_headers.py) and the 1xx rendering of
tus_server/informational.py: Structured Fields, Upload-Limit, RFC 9530 digests, creation
metadata, problem documents."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from tus_server import informational as I
from tus_server.tus import draft_headers as D
from tus_server.tus.errors import TusError


@pytest.mark.parametrize("value,expected", [
    ("?1", True), ("?0", False), (" ?1 ", True), ("?1;a=1", True),
    ("1", None), ("true", None), ("?2", None), ("?1 x", None), ("", None), (None, None), ("?", None),
])
def test_upload_complete_is_an_sf_boolean(value, expected) -> None:
    assert D.parse_boolean(value) is expected


@pytest.mark.parametrize("value,expected", [
    ("0", 0), ("42", 42), ("999999999999999", 999999999999999),
    ("-1", None), ("1.0", None), ("1e3", None), ("0x10", None), ("", None), ("12 13", None),
    ("1000000000000000", None), ("?1", None), ('"5"', None), ("٣", None),
])
def test_offsets_and_lengths_are_sf_integers_not_below_zero(value, expected) -> None:
    assert D.parse_uint(value) == expected


def test_dictionary_parses_members_parameters_and_inner_lists() -> None:
    parsed = D.parse_dictionary('a=1, b=?0;p=1, c, d=(1 "x" tok), e="s\\"q", f=:AQID:')
    assert parsed == {"a": 1, "b": False, "c": True, "d": [1, "x", "tok"], "e": 's"q', "f": b"\x01\x02\x03"}
    for broken in ("a=1,", "A=1", "a=1 b=2", "a=(1", 'a="x', "a=:@@:"):
        assert D.parse_dictionary(broken) is None, broken


def test_upload_limit_renders_only_set_limits_and_min_size_zero_without_any() -> None:
    assert D.UploadLimit(max_size=100, max_age=60).render() == "max-size=100, max-age=60"
    assert D.UploadLimit().render() == "min-size=0"
    assert D.UploadLimit(max_size=10, max_append_size=4).render() == "max-size=10, max-append-size=4"


def test_upload_limit_parsing_ignores_unknown_keys_and_the_whole_field_on_a_wrong_type() -> None:
    assert D.parse_limit("max-size=10, future=?1") == D.UploadLimit(max_size=10)
    assert D.parse_limit('max-size="10", max-age=5') is None
    assert D.parse_limit("max-size=-1") is None


def test_interop_version_selection() -> None:
    assert D.interop_version({"upload-draft-interop-version": "8"}) == 8
    assert D.interop_version({"upload-draft-interop-version": "x"}) is None
    assert D.interop_version({}) is None
    assert D.is_draft_request({"upload-draft-interop-version": "6"})
    assert not D.is_draft_request({"upload-draft-interop-version": "6", "tus-resumable": "1.0.0"})
    assert not D.is_draft_request({"tus-resumable": "1.0.0"})


@pytest.mark.parametrize("version,content_type,ok", [
    (8, "application/partial-upload", True), (6, "application/partial-upload; x=1", True),
    (7, "application/offset+octet-stream", False), (6, None, False),
    (5, "application/offset+octet-stream", True), (5, None, True), (5, "application/partial-upload", True),
    (5, "video/mp4", False),
])
def test_append_media_type_per_interop_version(version, content_type, ok) -> None:
    assert D.append_type_ok(version, content_type) is ok


def test_digests_keep_supported_algorithms_and_refuse_malformed_ones() -> None:
    body = b"hello"
    s256, s512 = hashlib.sha256(body).digest(), hashlib.sha512(body).digest()
    field = f"sha-256=:{base64.b64encode(s256).decode()}:, md5=:AAAA:, sha-512=:{base64.b64encode(s512).decode()}:"
    assert D.parse_digests(field) == {"sha256": s256, "sha512": s512}
    assert D.parse_digests("unixsum=1") == {}
    assert D.parse_digests(None) is None
    for broken in ("sha-256=:AAAA:", "sha-256=1", "sha-256=:###:", "sha-256"):
        with pytest.raises(TusError) as err:
            D.parse_digests(broken)
        assert err.value.status == 400
    assert D.parse_digests(D.render_digests({"sha256": s256})) == {"sha256": s256}


def test_want_repr_digest_takes_supported_algorithms_with_positive_preference() -> None:
    assert D.wanted_digests("sha-256=1, sha-512=0, md5=10") == ["sha256"]
    assert D.wanted_digests("sha-512=3") == ["sha512"]
    assert D.wanted_digests(None) == []


def test_creation_metadata_from_content_type_and_disposition() -> None:
    assert D.filetype_of("video/mp4; codecs=avc1") == "video/mp4"
    assert D.filetype_of("application/partial-upload") is None
    assert D.filetype_of("text/html\r\nX: y") is None
    assert D.filename_of('attachment; filename="lec ture.mp4"') == "lec ture.mp4"
    assert D.filename_of("attachment; filename*=UTF-8''%C3%A9t%C3%A9.mov; filename=ete.mov") == "été.mov"
    assert D.filename_of('attachment; filename="../../etc/passwd"') == "passwd"
    assert D.filename_of('attachment; filename="a;b.mp4"') == "a;b.mp4"
    assert D.filename_of("inline") is None


def test_problem_documents_carry_the_draft_problem_types_and_members() -> None:
    err = D.mismatching_offset(100, 50)
    doc = json.loads(D.problem_body(err))
    assert err.status == 409
    assert doc["type"] == "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
    assert doc["expected-offset"] == 100 and doc["provided-offset"] == 50 and doc["status"] == 409
    doc = json.loads(D.problem_body(D.ERR_INCONSISTENT_LENGTH()))
    assert doc["type"].endswith("#inconsistent-upload-length") and doc["status"] == 400
    doc = json.loads(D.problem_body(TusError(404, "ERR_X", "gone")))
    assert doc == {"type": "about:blank", "title": "gone", "status": 404, "code": "ERR_X"}


def test_informational_messages_render_and_refuse_what_could_split_a_response() -> None:
    head = I.render(104, [(b"location", b"http://h/files/1"), (b"upload-limit", b"min-size=0")])
    assert head == (b"HTTP/1.1 104 Upload Resumption Supported\r\nlocation: http://h/files/1\r\n"
                    b"upload-limit: min-size=0\r\n\r\n")
    assert I.check({"type": I.EXTENSION, "status": 103, "headers": []}) == (103, [])
    for bad in ({"status": 101}, {"status": 200}, {"status": 104, "headers": [(b"x", b"a\r\nb")]},
                {"status": 104, "headers": [(b"bad name", b"v")]}):
        with pytest.raises(ValueError):
            I.check({"type": I.EXTENSION, "headers": [], **bad})
