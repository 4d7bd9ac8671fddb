"""Pure parsing and rendering for "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload).

The draft's fields are RFC 8941 Structured Fields: ``Upload-Complete`` is an sf-boolean,
``Upload-Offset`` and ``Upload-Length`` sf-integers, ``Upload-Limit`` an sf-dictionary, and the
RFC 9530 digests (``Repr-Digest``, ``Content-Digest``) dictionaries of byte sequences. The
draft says an invalid Structured Field is *ignored* rather than refused, so the item parsers
here return ``None`` for anything malformed and the handler decides what a missing field means.

Errors are RFC 9457 problem details (``application/problem+json``) with the draft's problem
types, as ``DraftProblem`` values (a ``TusError`` with a problem type and extension members),
so the shared tus code can raise them and the draft handler render them.

No I/O here: every rule is unit-tested in tests/tus_server/tus/test_draft_headers.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Mapping, Union

from tus_server.tus.errors import TusError

INTEROP_HEADER = "upload-draft-interop-version"
# 5 = draft -03 (tus-js-client 'ietf-draft-03'), 6 = -04/-05 ('ietf-draft-05'), 7 = -06 to -08,
# 8 = -09 to -11 and the editor's copy. 3 and 4 used Upload-Incomplete and are not spoken.
INTEROP_VERSIONS = (5, 6, 7, 8)
PARTIAL_UPLOAD = "application/partial-upload"
# Interop 5 appended with the tus media type, or with none at all.
LEGACY_APPEND_TYPES = ("application/offset+octet-stream", "")
PROBLEM_TYPE = "application/problem+json"
PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"
DIGEST_ALGORITHMS = {"sha-256": "sha256", "sha-512": "sha512"}  # RFC 9530 name -> hashlib name
INT_MAX = 999_999_999_999_999  # the largest sf-integer (15 digits)

BareItem = Union[int, float, str, bytes, bool, "Token"]


class Token(str):
    """An sf-token (told apart from an sf-string only where that matters)."""


class FieldError(ValueError):
    """A Structured Field that does not parse; the draft says to ignore such a field."""


# ---------------------------------------------------------------------------- structured fields
_TOKEN_START = re.compile(r"[A-Za-z*]")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~:/0-9A-Za-z]*")
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_B64 = re.compile(r"[A-Za-z0-9+/=]*")


class _Parser:
    """RFC 8941 section 4.2, for the field types the draft and RFC 9530 use."""

    def __init__(self, text: str):
        if not text.isascii():
            raise FieldError("not ASCII")
        self.s = text
        self.i = 0

    def done(self) -> bool:
        return self.i >= len(self.s)

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.i += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.i += 1

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == "-" or c.isdigit():
            return self.number()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            return self.boolean()
        if c and _TOKEN_START.match(c):
            return self.token()
        raise FieldError(f"unexpected {c!r}")

    def number(self) -> int | float:
        m = _NUMBER.match(self.s, self.i)
        if not m:
            raise FieldError("bad number")
        text = m.group(0)
        whole = text.lstrip("-").split(".")[0]
        if (m.group(1) is None and len(whole) > 15) or (m.group(1) and (len(whole) > 12 or len(m.group(1)) > 4)):
            raise FieldError("number too long")
        self.i = m.end()
        return float(text) if m.group(1) else int(text)

    def string(self) -> str:
        self.i += 1
        out = []
        while not self.done():
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                nxt = self.peek()
                if nxt not in ('"', "\\"):
                    raise FieldError("bad escape")
                out.append(nxt)
                self.i += 1
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise FieldError("bad string character")
            else:
                out.append(c)
        raise FieldError("unterminated string")

    def token(self) -> Token:
        m = _TOKEN.match(self.s, self.i)
        assert m is not None
        self.i = m.end()
        return Token(m.group(0))

    def byte_sequence(self) -> bytes:
        end = self.s.find(":", self.i + 1)
        if end < 0:
            raise FieldError("unterminated byte sequence")
        encoded = self.s[self.i + 1:end]
        if not _B64.fullmatch(encoded):
            raise FieldError("bad base64")
        self.i = end + 1
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise FieldError("bad base64") from None

    def boolean(self) -> bool:
        value = self.s[self.i + 1:self.i + 2]
        if value not in ("0", "1"):
            raise FieldError("bad boolean")
        self.i += 2
        return value == "1"

    def key(self) -> str:
        m = _KEY.match(self.s, self.i)
        if not m:
            raise FieldError("bad key")
        self.i = m.end()
        return m.group(0)

    def parameters(self) -> dict[str, BareItem]:
        params: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.i += 1
            self.skip_sp()
            name = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.i += 1
                value = self.bare_item()
            params[name] = value
        return params

    def item_or_inner_list(self) -> BareItem | list[BareItem]:
        if self.peek() != "(":
            value = self.bare_item()
            self.parameters()
            return value
        self.i += 1
        items: list[BareItem] = []
        while not self.done():
            self.skip_sp()
            if self.peek() == ")":
                self.i += 1
                self.parameters()
                return items
            items.append(self.bare_item())
            self.parameters()
            if self.peek() not in (" ", ")"):
                raise FieldError("bad inner list")
        raise FieldError("unterminated inner list")


def _field(value: str) -> _Parser:
    return _Parser(value.strip(" \t"))


def parse_item(value: str | None) -> BareItem | None:
    """An sf-item's bare value (parameters dropped); ``None`` if absent or malformed."""
    if value is None:
        return None
    try:
        p = _field(value)
        item = p.bare_item()
        p.parameters()
        if not p.done():
            raise FieldError("trailing characters")
    except FieldError:
        return None
    return item


def parse_dictionary(value: str | None) -> dict[str, BareItem | list[BareItem]] | None:
    """An sf-dictionary (member parameters dropped); ``None`` if absent or malformed."""
    if value is None:
        return None
    out: dict[str, BareItem | list[BareItem]] = {}
    try:
        p = _field(value)
        while not p.done():
            name = p.key()
            if p.peek() == "=":
                p.i += 1
                out[name] = p.item_or_inner_list()
            else:
                out[name] = True
                p.parameters()
            p.skip_ows()
            if p.done():
                break
            if p.peek() != ",":
                raise FieldError("expected ','")
            p.i += 1
            p.skip_ows()
            if p.done():
                raise FieldError("trailing ','")
    except FieldError:
        return None
    return out


def parse_uint(value: str | None) -> int | None:
    """An sf-integer >= 0 (``Upload-Offset``, ``Upload-Length``); anything else is ignored."""
    item = parse_item(value)
    if isinstance(item, bool) or not isinstance(item, int) or item < 0:
        return None
    return item


def parse_boolean(value: str | None) -> bool | None:
    """``Upload-Complete``: ``?1`` / ``?0``; anything else is ignored."""
    item = parse_item(value)
    return item if isinstance(item, bool) else None


def render_boolean(value: bool) -> str:
    return "?1" if value else "?0"


# ---------------------------------------------------------------------------- request kind
def interop_version(headers: Mapping[str, str]) -> int | None:
    """The interop version a request asks for, or ``None`` when it sends none (or a malformed
    one). An unsupported number is returned as is: the handler refuses it."""
    return parse_uint(headers.get(INTEROP_HEADER))


def is_draft_request(headers: Mapping[str, str]) -> bool:
    """A request for the draft handler: it names an interop version and is not tus 1.0."""
    return INTEROP_HEADER in headers and "tus-resumable" not in headers


def append_type_ok(version: int, content_type: str | None) -> bool:
    """Since interop 6 an append is ``application/partial-upload`` (I5); 5 used the tus type
    or none."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == PARTIAL_UPLOAD:
        return True
    return version <= 5 and media in LEGACY_APPEND_TYPES


# ---------------------------------------------------------------------------- Upload-Limit
@dataclass(frozen=True)
class UploadLimit:
    """The server's limits (I7); ``None`` / 0 values are left out."""

    max_size: int | None = None
    min_size: int | None = None
    max_append_size: int | None = None
    min_append_size: int | None = None
    max_age: int | None = None

    def render(self) -> str:
        parts = []
        for key, value in (("max-size", self.max_size), ("min-size", self.min_size),
                           ("max-append-size", self.max_append_size),
                           ("min-append-size", self.min_append_size), ("max-age", self.max_age)):
            if value:
                parts.append(f"{key}={min(int(value), INT_MAX)}")
        # A resource that supports creation MUST answer the field; with no limit, min-size=0.
        return ", ".join(parts) or "min-size=0"


def parse_limit(value: str | None) -> UploadLimit | None:
    """What a client reads from ``Upload-Limit`` (tests use it): unknown keys are ignored, a
    known key of the wrong type makes the whole field ignored."""
    members = parse_dictionary(value)
    if members is None:
        return None
    known = {}
    for key in ("max-size", "min-size", "max-append-size", "min-append-size", "max-age"):
        if key in members:
            v = members[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                return None
            known[key.replace("-", "_")] = v
    return UploadLimit(**known)


# ---------------------------------------------------------------------------- RFC 9530 digests
def parse_digests(value: str | None) -> dict[str, bytes] | None:
    """``Repr-Digest`` / ``Content-Digest``: the supported algorithms' digests, keyed by the
    hashlib name. ``None`` when the field is absent; unknown algorithms are ignored (RFC 9530
    section 2); a malformed field, or a supported one with a digest of the wrong length, is a
    400, for a digest the client sent and we cannot check must not pass as verified."""
    if value is None:
        return None
    members = parse_dictionary(value)
    if members is None:
        raise ERR_INVALID_DIGEST()
    out: dict[str, bytes] = {}
    for name, digest in members.items():
        algorithm = DIGEST_ALGORITHMS.get(name)
        if algorithm is None:
            continue
        size = 32 if algorithm == "sha256" else 64
        if not isinstance(digest, bytes) or len(digest) != size:
            raise ERR_INVALID_DIGEST(f"{name} digest is not a {size}-byte sequence")
        out[algorithm] = digest
    return out


def render_digests(digests: Mapping[str, bytes]) -> str:
    """hashlib name -> digest, as an RFC 9530 field value."""
    names = {v: k for k, v in DIGEST_ALGORITHMS.items()}
    return ", ".join(f"{names[alg]}=:{base64.b64encode(d).decode()}:" for alg, d in digests.items())


def wanted_digests(value: str | None) -> list[str]:
    """``Want-Repr-Digest``: the supported algorithms asked for with a preference above 0."""
    members = parse_dictionary(value) or {}
    return [DIGEST_ALGORITHMS[name] for name, pref in members.items()
            if name in DIGEST_ALGORITHMS and isinstance(pref, int) and not isinstance(pref, bool) and pref > 0]


# ---------------------------------------------------------------------------- creation metadata
_SAFE_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_NOT_FILE_TYPES = (PARTIAL_UPLOAD, "application/offset+octet-stream")


def filetype_of(content_type: str | None) -> str | None:
    """The creation's ``Content-Type`` is the file's type (I15: validated before use); the
    append media types say nothing about the file."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media or media in _NOT_FILE_TYPES or not _SAFE_TYPE.fullmatch(media):
        return None
    return media


def filename_of(disposition: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` (RFC 6266): ``filename*`` (RFC 8187,
    UTF-8) wins over ``filename``; path parts and control characters are dropped."""
    if not disposition:
        return None
    plain = extended = None
    for part in _split_params(disposition)[1:]:
        name, _, value = part.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if name == "filename*":
            charset, _, rest = value.partition("'")
            _, _, encoded = rest.partition("'")
            if charset.lower() in ("utf-8", "iso-8859-1") and encoded:
                extended = urllib.parse.unquote(encoded, encoding=charset.lower(), errors="replace")
        elif name == "filename":
            plain = _unquote(value)
    name = extended or plain
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in name if ch.isprintable())[:255]
    return cleaned or None


def _split_params(value: str) -> list[str]:
    """Split on ';' outside quoted strings."""
    parts, current, quoted, escaped = [], [], False, False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


# ---------------------------------------------------------------------------- problems (RFC 9457)
class DraftProblem(TusError):
    """A refusal with an RFC 9457 problem type and extension members (e.g. the offsets of a
    ``mismatching-upload-offset``); ``problem_type`` None means ``about:blank``."""

    def __init__(self, status: int, code: str, message: str, problem_type: str | None = None,
                 headers: dict[str, str] | None = None, members: dict[str, object] | None = None):
        super().__init__(status, code, message, headers)
        self.problem_type = problem_type
        self.members = members or {}

    def __call__(self, message: str | None = None, **members: object) -> "DraftProblem":  # type: ignore[override]
        return DraftProblem(self.status, self.code, message or self.message, self.problem_type,
                            dict(self.headers), {**self.members, **members})


def problem_body(err: TusError) -> bytes:
    """The ``application/problem+json`` document for any refusal, draft-specific or shared."""
    problem_type = getattr(err, "problem_type", None)
    doc: dict[str, object] = {
        "type": PROBLEM_BASE + problem_type if problem_type else "about:blank",
        "title": err.message,
        "status": err.status,
        "code": err.code,
    }
    doc.update(getattr(err, "members", {}))
    return json.dumps(doc).encode()


def mismatching_offset(expected: int, provided: int) -> DraftProblem:
    """I9: 409 with the correct ``Upload-Offset`` and ``Upload-Complete: ?0``."""
    return ERR_MISMATCHING_OFFSET(f"Upload-Offset {provided} does not match the upload's offset {expected}",
                                  **{"expected-offset": expected, "provided-offset": provided})


ERR_MISMATCHING_OFFSET = DraftProblem(409, "ERR_MISMATCHED_OFFSET", "Upload-Offset does not match the upload's offset",
                                      "mismatching-upload-offset")
ERR_INCONSISTENT_LENGTH = DraftProblem(400, "ERR_INCONSISTENT_UPLOAD_LENGTH",
                                       "the upload's length indicators disagree", "inconsistent-upload-length")
ERR_COMPLETED = DraftProblem(400, "ERR_UPLOAD_COMPLETE", "upload is already complete", "completed-upload")
ERR_UNSUPPORTED_INTEROP = DraftProblem(
    400, "ERR_UNSUPPORTED_INTEROP_VERSION",
    "unsupported Upload-Draft-Interop-Version; this server speaks " + ", ".join(map(str, INTEROP_VERSIONS)))
ERR_COMPLETE_REQUIRED = DraftProblem(400, "ERR_UPLOAD_COMPLETE_REQUIRED", "Upload-Complete (?0 or ?1) is required")
ERR_OFFSET_REQUIRED = DraftProblem(400, "ERR_INVALID_OFFSET", "Upload-Offset (an integer >= 0) is required")
ERR_APPEND_TYPE = DraftProblem(415, "ERR_INVALID_CONTENT_TYPE", f"an append needs Content-Type: {PARTIAL_UPLOAD}")
ERR_INVALID_DIGEST = DraftProblem(400, "ERR_INVALID_DIGEST", "invalid Repr-Digest or Content-Digest field")
ERR_CONTENT_DIGEST = DraftProblem(400, "ERR_CONTENT_DIGEST_MISMATCH",
                                  "Content-Digest does not match the request content; nothing of it was kept")
ERR_REPR_DIGEST = DraftProblem(400, "ERR_REPR_DIGEST_MISMATCH",
                               "Repr-Digest does not match the uploaded file; the upload was discarded")
