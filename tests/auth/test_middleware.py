"""The middleware in a small Starlette app (CORS outside it, like create_app), through httpx's
ASGI transport: which credential is taken where, what a refusal looks like, signed playback."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from tus_server.auth.authenticator import Authenticator
from tus_server.auth.jwt import JwtVerifier
from tus_server.auth.middleware import AuthMiddleware, AuthOptions
from tus_server.auth.signing import PlaybackSigner
from tus_server.auth.tokens import StaticTokens, TokenEntry

from .conftest import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, HS_SECRET, SERVICE_TOKEN, SIGNING_KEY, TOKENS, hs_token

MEDIA = "c" * 32
OTHER_MEDIA = "d" * 32
OWNERS = {MEDIA: "alice", OTHER_MEDIA: "bob"}
MASTER = '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/index.m3u8\n#EXT-X-I-FRAME-STREAM-INF:URI="720p/i.m3u8"\n' * 20


def whoami(request: Request) -> Response:
    state = request.state
    principal = getattr(state, "principal", None)
    return JSONResponse({"user": getattr(state, "user", None), "role": getattr(state, "role", None),
                         "via": principal.via if principal else None})


async def tus_app(scope: Any, receive: Any, send: Any) -> None:
    response = PlainTextResponse(f"tus {scope['state']['user']}", headers={"Tus-Resumable": "1.0.0"})
    await response(scope, receive, send)


def delivery(request: Request) -> Response:
    if request.url.path.endswith(".m3u8"):
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status_code=304, headers={"ETag": '"v1"'})
        headers = {"ETag": '"v1"', "Cache-Control": "public, max-age=60"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(gzip.compress(MASTER.encode()), media_type="application/vnd.apple.mpegurl",
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(MASTER, media_type="application/vnd.apple.mpegurl", headers=headers)
    return Response(b"\x00segment", media_type="video/iso.segment")


async def lookup(media_id: str) -> tuple[bool, str | None]:
    return (media_id in OWNERS, OWNERS.get(media_id))


def make_app(**options: Any) -> Starlette:
    tokens = StaticTokens(TokenEntry(**t) for t in TOKENS)
    defaults: dict[str, Any] = dict(enabled=True, authenticator=Authenticator(tokens, JwtVerifier(hs256_secret=HS_SECRET)),
                                    signer=PlaybackSigner(SIGNING_KEY, 600), media_owner=lookup)
    defaults.update(options)
    routes = [Mount("/files", app=tus_app), Route("/api/whoami", whoami), Route("/", whoami),
              Route("/healthz", lambda r: PlainTextResponse("ok")), Route("/metrics", lambda r: PlainTextResponse("m 1")),
              Route("/static/app.js", lambda r: PlainTextResponse("js")),
              Route("/media/{media_id}/{path:path}", delivery, methods=["GET", "HEAD"])]
    middleware = [Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"]),
                  Middleware(AuthMiddleware, options=AuthOptions(**defaults))]
    return Starlette(routes=routes, middleware=middleware)


def client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(**options)), base_url="http://t")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_static_token_and_jwt_set_state() -> None:
    async with client() as c:
        r = await c.get("/api/whoami", headers=bearer(ADMIN_TOKEN))
        assert r.json() == {"user": "root", "role": "admin", "via": "token"}
        r = await c.get("/api/whoami", headers=bearer(hs_token("alice", role="service")))
        assert r.json() == {"user": "alice", "role": "service", "via": "jwt"}


@pytest.mark.parametrize("headers,reason,error", [
    ({}, "authentication required", None),
    (bearer("wrong-token-0123456789"), "invalid token", "invalid_token"),
    (bearer(hs_token("alice", ttl=-120)), "token expired", "invalid_token"),
    ({"Authorization": f"Basic {ALICE_TOKEN}"}, "Bearer scheme", "invalid_token"),
])
async def test_refusals_are_401_with_challenge_and_cors(headers: dict[str, str], reason: str, error: str | None) -> None:
    async with client() as c:
        r = await c.get("/api/whoami", headers={**headers, "Origin": "https://lms.example"})
    assert r.status_code == 401
    assert reason in r.json()["error"]
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="tusflow"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["cache-control"] == "no-store"


async def test_tus_refusal_keeps_tus_resumable_and_plain_text() -> None:
    async with client() as c:
        r = await c.head("/files/" + "e" * 32, headers={"Tus-Resumable": "1.0.0"})
        assert r.status_code == 401 and r.headers["tus-resumable"] == "1.0.0"
        r = await c.patch("/files/" + "e" * 32, headers=bearer(hs_token(ttl=-120)), content=b"x" * 10)
        assert r.status_code == 401 and r.text == "token expired\n" and r.headers["tus-resumable"] == "1.0.0"
        assert (await c.post("/files/", headers=bearer(ALICE_TOKEN))).text == "tus alice"
        r = await c.get("/", headers=bearer("nope-nope-nope-nope"))
        assert r.status_code == 401 and r.headers["content-type"].startswith("text/plain")


async def test_exempt_paths_and_preflight_need_nothing() -> None:
    async with client() as c:
        for path in ("/healthz", "/metrics", "/static/app.js"):
            assert (await c.get(path)).status_code == 200, path
        r = await c.options("/files/", headers={"Origin": "https://lms.example", "Access-Control-Request-Method": "PATCH",
                                                "Access-Control-Request-Headers": "authorization,tus-resumable"})
        assert r.status_code == 200 and "PATCH" in r.headers["access-control-allow-methods"]
        assert (await c.get("/api/whoami")).status_code == 401


async def test_protected_metrics_need_admin_or_service() -> None:
    async with client(protect_metrics=True) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=bearer(ALICE_TOKEN))).status_code == 403
        assert (await c.get("/metrics", headers=bearer(SERVICE_TOKEN))).text == "m 1"


async def test_query_token_and_cookie_only_on_safe_methods() -> None:
    async with client() as c:
        assert (await c.get(f"/api/whoami?token={ALICE_TOKEN}")).json()["user"] == "alice"
        c.cookies.set("tusflow_token", BOB_TOKEN)
        assert (await c.get("/api/whoami")).json()["user"] == "bob"
        # a cookie or a query token never authorizes a change (no CSRF, no leaked-link uploads)
        assert (await c.post("/files/")).status_code == 401
        assert (await c.post(f"/files/?token={ALICE_TOKEN}")).status_code == 401
        # an explicit header wins over both
        assert (await c.get(f"/api/whoami?token={ALICE_TOKEN}", headers=bearer(ADMIN_TOKEN))).json()["user"] == "root"
    async with client(query_token=False, cookie_name="") as c:
        c.cookies.set("tusflow_token", BOB_TOKEN)
        assert (await c.get(f"/api/whoami?token={ALICE_TOKEN}")).status_code == 401


async def test_auth_disabled_is_anonymous_admin() -> None:
    async with client(enabled=False) as c:
        assert (await c.get("/api/whoami")).json() == {"user": "anonymous", "role": "admin", "via": "anonymous"}
        assert (await c.post("/files/")).text == "tus anonymous"
        assert (await c.get(f"/media/{OTHER_MEDIA}/720p/seg.m4s")).status_code == 200


async def test_delivery_owner_admin_and_others() -> None:
    async with client() as c:
        seg = f"/media/{MEDIA}/720p/seg_1.m4s"
        assert (await c.get(seg, headers=bearer(ALICE_TOKEN))).status_code == 200
        assert (await c.get(seg, headers=bearer(ADMIN_TOKEN))).status_code == 200
        assert (await c.get(f"{seg}?token={ALICE_TOKEN}")).status_code == 200
        other = await c.get(seg, headers=bearer(BOB_TOKEN))
        assert other.status_code == 404 and "not found" in other.text
        assert (await c.get(seg)).status_code == 401


async def signed(path_media: str = MEDIA, **kw: Any) -> str:
    return PlaybackSigner(SIGNING_KEY, 600).query_string(path_media, **kw)


async def test_signed_link_opens_media_without_a_token() -> None:
    async with client(signed_playback=True) as c:
        q = await signed(user="alice")
        assert (await c.get(f"/media/{MEDIA}/720p/seg_1.m4s?{q}")).status_code == 200
        # a signature for one item opens no other
        assert (await c.get(f"/media/{OTHER_MEDIA}/720p/seg_1.m4s?{q}")).status_code == 403
        # without the signature, a token-less viewer is refused even with auth... and the owner's token still works
        assert (await c.get(f"/media/{MEDIA}/720p/seg_1.m4s")).status_code == 401
        assert (await c.get(f"/media/{MEDIA}/720p/seg_1.m4s", headers=bearer(ALICE_TOKEN))).status_code == 200
    async with client(enabled=False, signed_playback=True) as c:
        r = await c.get(f"/media/{MEDIA}/720p/seg_1.m4s")
        assert r.status_code == 403 and "signed link" in r.text
        assert (await c.get(f"/media/{MEDIA}/720p/seg_1.m4s?{q}")).status_code == 200


async def test_tampered_and_expired_signed_links() -> None:
    async with client(enabled=False, signed_playback=True) as c:
        q = await signed()
        tampered = q.replace("exp=", "exp=9")
        r = await c.get(f"/media/{MEDIA}/master.m3u8?{tampered}")
        assert r.status_code == 403 and r.text == "invalid playback signature\n"
        expired = PlaybackSigner(SIGNING_KEY, 600, clock=lambda: 1_000_000.0).query_string(MEDIA)
        r = await c.get(f"/media/{MEDIA}/master.m3u8?{expired}")
        assert r.status_code == 403 and r.text == "playback link expired\n"


async def test_signed_playlist_is_rewritten_even_when_gzip_and_etag_are_asked() -> None:
    async with client(enabled=False, signed_playback=True) as c:
        q = await signed(user="alice")
        r = await c.get(f"/media/{MEDIA}/master.m3u8?{q}",
                        headers={"Accept-Encoding": "gzip", "If-None-Match": '"v1"'})
        assert r.status_code == 200
        assert f"\n720p/index.m3u8?{q}\n" in r.text and f'URI="720p/i.m3u8?{q}"' in r.text
        assert "etag" not in r.headers and r.headers["cache-control"] == "private, no-store"
        assert int(r.headers["content-length"]) == len(r.content)
        # following the rewritten URI works: it carries a valid grant
        variant = r.text.splitlines()[2]
        assert (await c.get(f"/media/{MEDIA}/{variant}")).status_code == 200
        head = await c.head(f"/media/{MEDIA}/master.m3u8?{q}")
        assert head.status_code == 200 and head.content == b""
    async with client(enabled=False) as c:  # unsigned playlists pass through untouched
        r = await c.get(f"/media/{MEDIA}/master.m3u8")
        assert r.text == MASTER and r.headers["etag"] == '"v1"'
