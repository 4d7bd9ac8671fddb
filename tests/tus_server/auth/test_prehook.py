"""The pre-create hook against a real HTTP server: accept, reject with a message, override
metadata, and the outages that must never let an upload through unchecked."""

from __future__ import annotations

import socket
from typing import Any, Iterator

import pytest

from tus_server.auth.errors import AuthError
from tus_server.auth.prehook import PreCreateHook
from tus_server.auth.principal import Principal

from tests.support.hookserver import HookServer

ALICE = Principal("alice")


@pytest.fixture
def hook_server() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


async def admit(url: str, timeout: float = 2.0, **kw: Any) -> dict[str, str] | None:
    return await PreCreateHook(url, timeout).admit(ALICE, kw.get("length", 1234),
                                                   kw.get("metadata", {"filename": "a.mp4", "title": "T"}),
                                                   kw.get("concat"))


async def test_accept_sends_user_length_and_metadata(hook_server: HookServer) -> None:
    assert await admit(hook_server.url) is None
    assert hook_server.received == [{"type": "pre-create", "user": "alice", "role": "user", "upload_length": 1234,
                                     "concat": None, "metadata": {"filename": "a.mp4", "title": "T"}}]


async def test_accept_with_metadata_override(hook_server: HookServer) -> None:
    hook_server.respond = lambda body: (200, {"metadata": {"course": "42", "title": None, "filename": "b.mp4"}})
    assert await admit(hook_server.url) == {"filename": "b.mp4", "course": "42"}


async def test_reject_gives_403_with_the_platform_message(hook_server: HookServer) -> None:
    hook_server.respond = lambda body: (422, {"message": "Course is archived;\r\nno uploads"})
    with pytest.raises(AuthError) as err:
        await admit(hook_server.url)
    assert (err.value.status, err.value.message) == (403, "Course is archived; no uploads")
    hook_server.respond = lambda body: (403, None)
    with pytest.raises(AuthError) as bare:
        await admit(hook_server.url)
    assert bare.value.status == 403 and bare.value.message == "upload rejected by the platform"


@pytest.mark.parametrize("answer", [(500, {"message": "boom"}), (302, None), (200, {"metadata": ["x"]}),
                                    (200, {"metadata": {"k": 1}})])
async def test_broken_platform_answers_are_503(hook_server: HookServer, answer: tuple[int, Any]) -> None:
    hook_server.respond = lambda body: answer
    with pytest.raises(AuthError) as err:
        await admit(hook_server.url)
    assert err.value.status == 503


async def test_timeout_is_503_with_reason(hook_server: HookServer) -> None:
    hook_server.delay = 1.0
    with pytest.raises(AuthError) as err:
        await admit(hook_server.url, timeout=0.2)
    assert err.value.status == 503 and "timed out after 0.2 s" in err.value.message


async def test_hook_down_is_503() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with pytest.raises(AuthError) as err:
        await admit(f"http://127.0.0.1:{port}/hook")
    assert err.value.status == 503 and "unreachable" in err.value.message
