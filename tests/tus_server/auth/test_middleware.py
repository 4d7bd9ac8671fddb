"""The middleware and the route needs in a small Starlette app (CORS outside, like create_app),
through httpx's ASGI transport: which credential is taken where, what the middleware leaves for
the routes, and what each need's refusal looks like. Delivery's own rules (owner, signatures,
signed playlists) are tested through the real app in test_media_rules.py and tests/tus_server/api."""

from __future__ import annotations

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
from tus_server.auth.requires import Requires, Style, guarded, identified, metrics_reader, page_visitor, public_under
from tus_server.auth.tokens import StaticTokens, TokenEntry

from tests.support.credentials import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, HS_SECRET, SERVICE_TOKEN, TOKENS, hs_token


def whoami(request: Request) -> Response:
    state = request.state
    principal = getattr(state, "principal", None)
    error = getattr(state, "auth_error", None)
    return JSONResponse({"user": getattr(state, "user", None), "role": getattr(state, "role", None),
                         "via": principal.via if principal else None, "error": error.code if error else None})


async def tus_app(scope: Any, receive: Any, send: Any) -> None:
    response = PlainTextResponse(f"tus {scope['state']['user']}", headers={"Tus-Resumable": "1.0.0"})
    await response(scope, receive, send)


def make_app(protect_metrics: bool = False, **options: Any) -> Starlette:
    tokens = StaticTokens(TokenEntry(**t) for t in TOKENS)
    defaults: dict[str, Any] = dict(enabled=True, authenticator=Authenticator(tokens, JwtVerifier(hs256_secret=HS_SECRET)))
    defaults.update(options)
    routes = [Mount("/files", app=Requires(tus_app, identified, Style.TUS)),
              *guarded([Route("/api/whoami", whoami)], identified, Style.JSON),
              *guarded([Route("/", whoami, methods=["GET", "HEAD"])], page_visitor),
              Route("/healthz", lambda r: PlainTextResponse("ok")),
              Route("/anything", whoami),  # no need at all: the middleware alone never refuses
              *guarded([Route("/metrics", lambda r: PlainTextResponse("m 1"))], metrics_reader(protect_metrics)),
              *guarded([Route("/static/app.js", lambda r: PlainTextResponse("js")),
                        Route("/private/app.js", lambda r: PlainTextResponse("js"))], public_under(("/static/",)))]
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
        assert r.json() == {"user": "root", "role": "admin", "via": "token", "error": None}
        r = await c.get("/api/whoami", headers=bearer(hs_token("alice", role="service")))
        assert r.json() == {"user": "alice", "role": "service", "via": "jwt", "error": None}


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
        assert (await c.get("/api/whoami")).json() == {"user": "anonymous", "role": "admin", "via": "anonymous",
                                                       "error": None}
        assert (await c.post("/files/")).text == "tus anonymous"
        assert (await c.get("/metrics")).text == "m 1"


@pytest.mark.parametrize("headers,query,error", [
    ({}, "", "ERR_AUTH_REQUIRED"),
    (bearer("wrong-token-0123456789"), "", "ERR_INVALID_TOKEN"),
    ({}, f"?token={hs_token('alice', ttl=-120)}", "ERR_TOKEN_EXPIRED"),
])
async def test_the_middleware_only_identifies_and_never_refuses(headers: dict[str, str], query: str, error: str) -> None:
    """Whether a principal is enough is the route's decision: a route with no need sees the
    unidentified caller and why, and the middleware itself answers nothing."""
    async with client() as c:
        r = await c.get(f"/anything{query}", headers=headers)
        assert r.status_code == 200
        assert r.json() == {"user": "", "role": "user", "via": "unidentified", "error": error}
        assert (await c.get(f"/api/whoami{query}", headers=headers)).json()["code"] == error


async def test_page_shells_forgive_stale_ambient_credentials_but_not_a_bad_header() -> None:
    async with client() as c:
        assert (await c.get("/")).json()["via"] == "unidentified"
        assert (await c.get(f"/?token={hs_token('alice', ttl=-120)}")).json()["via"] == "unidentified"
        c.cookies.set("tusflow_token", "stale-cookie-0123456789")
        assert (await c.get("/")).json()["via"] == "unidentified"
        c.cookies.clear()
        assert (await c.get(f"/?token={ALICE_TOKEN}")).json()["user"] == "alice"
        r = await c.get("/", headers=bearer("wrong-token-0123456789"))
        assert r.status_code == 401 and r.text == "invalid token\n"
        # a shell is only for GET/HEAD: other methods need a caller, and learn the 405 only then
        assert (await c.post("/")).status_code == 401
        assert (await c.post("/", headers=bearer(ALICE_TOKEN))).status_code == 405
        head = await c.head("/", headers=bearer("wrong-token-0123456789"))
        assert head.status_code == 401 and head.content == b"" and int(head.headers["content-length"]) > 0


async def test_public_paths_are_open_and_others_need_a_caller() -> None:
    async with client() as c:
        assert (await c.get("/static/app.js", headers=bearer("wrong-token-0123456789"))).text == "js"
        assert (await c.get("/private/app.js")).status_code == 401
        assert (await c.get("/private/app.js", headers=bearer(BOB_TOKEN))).text == "js"
