"""Unit tests of the pure header parsing in tus_server.tus.headers."""

from __future__ import annotations

import base64

import pytest

from tus_server.tus import errors as E
from tus_server.tus import headers as H

META_SIZE, META_PAIRS = 4096, 32


def meta(header: str | None) -> H.Metadata:
    return H.parse_metadata(header, META_SIZE, META_PAIRS)


@pytest.mark.parametrize("value", ["0", "1", "007", "123456789", str(2**63 - 1)])
def test_uint_accepts_plain_decimal(value: str) -> None:
    assert H.parse_uint(value, E.ERR_INVALID_OFFSET) == int(value)


@pytest.mark.parametrize("value", [
    None, "", " ", "-1", "+0", "+5", "1.5", "1.0", "0x0", "0x10", "1e0", "1e3", "1_000", " 1", "1 ",
    "abc", "12a", "\u00b2", "\u0663", "\uff11", str(2**63), str(2**64), "9" * 40,
])
def test_uint_rejects_everything_else(value: str | None) -> None:
    with pytest.raises(E.TusError) as info:
        H.parse_uint(value, E.ERR_INVALID_OFFSET)
    assert info.value.status == 400
    assert info.value.code == "ERR_INVALID_OFFSET"


def test_uint_error_is_a_fresh_instance() -> None:
    with pytest.raises(E.TusError) as first:
        H.parse_uint("x", E.ERR_INVALID_LENGTH)
    assert first.value is not E.ERR_INVALID_LENGTH
    assert first.value.code == "ERR_INVALID_UPLOAD_LENGTH"


@pytest.mark.parametrize("header", [None, "", "   ", "\t"])
def test_empty_metadata_header_is_valid(header: str | None) -> None:
    m = meta(header)
    assert m.raw == "" and m.values == {}


def test_metadata_decodes_and_keeps_raw() -> None:
    header = f"filename {base64.b64encode('lecture 1.mp4'.encode()).decode()},filetype dmlkZW8vbXA0"
    m = meta(header)
    assert m.raw == header
    assert m.values == {"filename": b"lecture 1.mp4", "filetype": b"video/mp4"}
    assert m.text("filename") == "lecture 1.mp4"
    assert m.text("missing", "dflt") == "dflt"


def test_metadata_keys_without_value_and_with_empty_value() -> None:
    m = meta("is_confidential,empty ,name bmFtZQ==")
    assert m.values == {"is_confidential": b"", "empty": b"", "name": b"name"}
    assert "is_confidential" in m.values
    assert m.text("is_confidential", "x") == ""


def test_metadata_binary_values_round_trip() -> None:
    raw = bytes(range(256))
    header = H.encode_metadata({"blob": raw, "utf8": "é✓", "none": b""})
    m = meta(header)
    assert m.values["blob"] == raw
    assert m.values["utf8"] == "é✓".encode()
    assert m.values["none"] == b""
    assert H.encode_metadata(m.values) == header


@pytest.mark.parametrize("header", [
    "key %%%",                 # not base64
    "key YQ",                  # wrong length (no padding)
    "key YQ=",                 # wrong padding
    "key Y Q==",               # three tokens
    "key  YQ==",               # double space makes an empty token
    "key YQ==\x00",            # NUL
    "key ====",                # padding only
    "key YQ==,key Yg==",       # duplicate key
    "key YQ==,key",            # duplicate key, second without value
    "key\tYQ==",               # tab is not the separator
    ",key YQ==",               # empty pair
    "key YQ==,",               # trailing comma: empty pair
    "key YQ==,,k2 Yg==",       # empty pair in the middle
    "k\u00e9y YQ==",           # non-ASCII key
    "ke\x7fy YQ==",            # control character in key
    "key YQ==;other Yg==",     # wrong separator: ';' ends up in the value
])
def test_metadata_rejects_malformed(header: str) -> None:
    with pytest.raises(E.TusError) as info:
        meta(header)
    assert info.value.status == 400
    assert info.value.code == "ERR_INVALID_METADATA"


def test_metadata_rejects_too_many_pairs() -> None:
    ok = ",".join(f"k{i} YQ==" for i in range(META_PAIRS))
    assert len(meta(ok).values) == META_PAIRS
    with pytest.raises(E.TusError) as info:
        meta(ok + ",extra YQ==")
    assert info.value.status == 400 and "pairs" in info.value.message


def test_metadata_rejects_oversized_header() -> None:
    value = base64.b64encode(b"x" * 3000).decode()
    assert len(f"k {value}") <= META_SIZE
    meta(f"k {value}")
    big = base64.b64encode(b"x" * 3100).decode()
    with pytest.raises(E.TusError) as info:
        meta(f"k {big}")
    assert info.value.status == 400 and "longer" in info.value.message


@pytest.mark.parametrize("algo,digest", [("sha1", b"\x01" * 20), ("md5", b"\x02" * 16),
                                         ("sha256", b"\x03" * 32), ("sha512", b"\x04" * 64)])
def test_checksum_parses(algo: str, digest: bytes) -> None:
    c = H.parse_checksum(f"{algo} {base64.b64encode(digest).decode()}")
    assert c == H.Checksum(algo, digest)


def test_checksum_absent() -> None:
    assert H.parse_checksum(None) is None


@pytest.mark.parametrize("header,code", [
    ("crc32 AAAAAA==", "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM"),
    ("SHA1 AAAAAA==", "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM"),
    ("sha1", "ERR_INVALID_CHECKSUM_HEADER"),
    ("sha1 ", "ERR_INVALID_CHECKSUM_HEADER"),
    ("", "ERR_INVALID_CHECKSUM_HEADER"),
    ("sha1 !!!!", "ERR_INVALID_CHECKSUM_HEADER"),
    ("sha1 AAA", "ERR_INVALID_CHECKSUM_HEADER"),
    ("sha1 AAAA AAAA", "ERR_INVALID_CHECKSUM_HEADER"),
])
def test_checksum_rejects(header: str, code: str) -> None:
    with pytest.raises(E.TusError) as info:
        H.parse_checksum(header)
    assert info.value.status == 400 and info.value.code == code


def test_checksum_algorithm_names_are_lowercase_ascii() -> None:
    assert "sha1" in H.CHECKSUM_ALGORITHMS
    for name in H.CHECKSUM_ALGORITHMS:
        assert name.isascii() and name == name.lower()


def test_concat_partial_and_final() -> None:
    assert H.parse_concat(None) is None
    assert H.parse_concat("partial") == H.Concat("partial")
    final = H.parse_concat("final;/files/a http://h/files/b")
    assert final == H.Concat("final", ("/files/a", "http://h/files/b"))


@pytest.mark.parametrize("header", ["final;", "final; ", "final", "bogus", "partial;x", "Final;/files/a", ""])
def test_concat_rejects_malformed(header: str) -> None:
    with pytest.raises(E.TusError) as info:
        H.parse_concat(header)
    assert info.value.status == 400 and info.value.code == "ERR_INVALID_CONCAT"


def test_id_shape() -> None:
    good = "0123456789abcdef0123456789abcdef"
    assert H.is_valid_id(good)
    for bad in ["", "..", "%2e%2e", good.upper(), good + "0", good[:-1], good[:-1] + "/",
                good[:-1] + "\x00", "../" + good[3:], good + "\n"]:
        assert not H.is_valid_id(bad), bad


def test_id_from_url() -> None:
    good = "0123456789abcdef0123456789abcdef"
    assert H.id_from_url(f"/files/{good}", "/files/") == good
    assert H.id_from_url(f"http://x:1/files/{good}?q#f", "/files/") == good
    assert H.id_from_url(f"/other/{good}", "/files/") is None
    assert H.id_from_url(f"/files/x/../{good}", "/files/") is None
    assert H.id_from_url(f"/files/%2e%2e/{good}", "/files/") is None


def test_check_tus_resumable() -> None:
    H.check_tus_resumable("1.0.0")
    for bad in (None, "", "0.2.2", "1.0", "1.0.0 "):
        with pytest.raises(E.TusError) as info:
            H.check_tus_resumable(bad)
        assert info.value.status == 412


def test_media_type() -> None:
    assert H.media_type("Application/Offset+Octet-Stream; x=1") == H.OFFSET_CONTENT_TYPE
    assert H.media_type(None) == ""


def test_metadata_text_drops_control_characters_but_values_keep_bytes() -> None:
    raw = "\x00nul\r\nname\t\u200b\x7f.mp4 ü".encode()
    m = meta(H.encode_metadata({"filename": raw}))
    assert m.values["filename"] == raw
    assert m.text("filename") == "nulname.mp4 ü"


@pytest.mark.parametrize("method,override,expected", [
    ("POST", "PATCH", "PATCH"), ("POST", "delete", "DELETE"), ("POST", "HEAD", "HEAD"),
    ("POST", "GET", "POST"), ("POST", "OPTIONS", "POST"), ("POST", "PUT", "POST"),
    ("POST", None, "POST"), ("POST", "", "POST"),
    ("PATCH", "DELETE", "PATCH"), ("GET", "DELETE", "GET"), ("HEAD", "PATCH", "HEAD"),
])
def test_method_override_only_on_post_and_only_for_the_shared_set(method: str, override: str | None,
                                                                  expected: str) -> None:
    assert H.effective_method(method, override) == expected
    assert H.OVERRIDABLE == {"PATCH", "DELETE", "HEAD"}
