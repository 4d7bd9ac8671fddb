"""The optional pre-create hook: ask the platform whether this user may start this upload.

Like tusd's pre-create hook, but one plain HTTP POST. The platform sees who is uploading, how
many bytes and the metadata before any byte is accepted, and can refuse with a message the
teacher reads, or accept and set metadata (e.g. the course id it knows and the browser does
not).

Request body: ``{"type": "pre-create", "user": ..., "role": ..., "upload_length": <int or
null when deferred>, "concat": null | "partial" | "final", "metadata": {key: text}}``.
Answers:
- 2xx, optionally ``{"metadata": {key: text | null}}``: accepted; named keys are set (null
  removes the key), the rest of the client's metadata is kept.
- 4xx, optionally ``{"message": "..."}``: refused; the client gets 403 with that message.
- anything else, a timeout or no connection: the client gets 503 and may retry; nothing is
  created, so a platform outage never lets an upload through unchecked.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import httpx

from tus_server.auth.errors import ERR_HOOK_REJECTED, ERR_HOOK_UNAVAILABLE
from tus_server.auth.principal import Principal

_MAX_MESSAGE = 300


class PreCreateHook:
    def __init__(self, url: str, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None):
        self.url = url
        self.timeout = timeout
        self._transport = transport

    async def admit(self, principal: Principal, length: int | None, metadata: Mapping[str, str],
                    concat: str | None = None) -> dict[str, str] | None:
        """None to keep the client's metadata, or the metadata to store instead."""
        payload = {"type": "pre-create", "user": principal.user, "role": principal.role,
                   "upload_length": length, "concat": concat, "metadata": dict(metadata)}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport,
                                         follow_redirects=False) as client:
                response = await client.post(self.url, json=payload)
        except httpx.TimeoutException:
            raise ERR_HOOK_UNAVAILABLE(f"upload admission check timed out after {self.timeout:g} s; retry later") from None
        except httpx.HTTPError as exc:
            raise ERR_HOOK_UNAVAILABLE(f"upload admission check unreachable ({type(exc).__name__}); retry later") from None
        status = response.status_code
        if 400 <= status < 500:
            raise ERR_HOOK_REJECTED(_message(response) or ERR_HOOK_REJECTED.message)
        if not 200 <= status < 300:
            raise ERR_HOOK_UNAVAILABLE(f"upload admission check failed (platform answered {status}); retry later")
        return _merged(metadata, _json(response))


def _json(response: httpx.Response) -> Any:
    if not response.content.strip():
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ERR_HOOK_UNAVAILABLE("upload admission check answered something that is not JSON") from None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        text = body.get("message") if isinstance(body, dict) else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = None
    if not isinstance(text, str):
        text = response.text if response.headers.get("content-type", "").startswith("text/plain") else ""
    line = " ".join(text.split())  # one line: no header or log injection through the message
    return line[:_MAX_MESSAGE]


def _merged(metadata: Mapping[str, str], body: Any) -> dict[str, str] | None:
    if not isinstance(body, dict) or body.get("metadata") is None:
        return None
    override = body["metadata"]
    if not isinstance(override, dict) or not all(
            isinstance(k, str) and k and (v is None or isinstance(v, str)) for k, v in override.items()):
        raise ERR_HOOK_UNAVAILABLE("upload admission check answered metadata that is not {key: text}")
    merged = dict(metadata)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
