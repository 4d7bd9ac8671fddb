"""Everything auth needs, built once per app from Settings (no module-level state).

``create_app`` calls ``build`` and then wires four things: ``middleware`` (inside CORS: who is
asking), ``tus_endpoint`` (the tus app behind its need: an identified caller), ``guard``
(handed to the tus handler: whose upload, may it start) and ``routes``. The other routes
(API, delivery, pages, /metrics) state their own needs with ``tus_server.auth.requires``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from models.config import Settings
from tus_server.auth.authenticator import Authenticator
from tus_server.auth.jwt import JwtVerifier
from tus_server.auth.middleware import AuthMiddleware, AuthOptions
from tus_server.auth.prehook import PreCreateHook
from tus_server.auth.quota import Limits
from tus_server.auth.ratelimit import RateLimiter
from tus_server.auth.requires import Requires, Style, identified
from tus_server.auth.routes import auth_routes
from tus_server.auth.signing import PlaybackSigner, playback_signer
from tus_server.auth.tokens import StaticTokens, TokenEntry
from tus_server.auth.tus_guard import TusGuard


@dataclass
class Auth:
    options: AuthOptions
    guard: TusGuard
    signer: PlaybackSigner | None
    routes: list[BaseRoute]

    @property
    def middleware(self) -> Middleware:
        return Middleware(AuthMiddleware, options=self.options)

    @staticmethod
    def tus_endpoint(app: ASGIApp) -> ASGIApp:
        """Every tus request but OPTIONS needs an identified caller, checked before the handler
        reads a body byte, so a PATCH refused for an expired token keeps the upload's offset
        and the client resumes after refreshing it (uvicorn discards the unread body)."""
        return Requires(app, identified, Style.TUS)


def authenticator(settings: Settings) -> Authenticator:
    a = settings.auth
    base: Path | None = settings.config_path.parent if settings.config_path else None
    verifier = JwtVerifier(hs256_secret=a.jwt_hs256_secret, rs256_public_key=a.jwt_rs256_public_key,
                           issuer=a.jwt_issuer, audience=a.jwt_audience, leeway=a.jwt_leeway,
                           role_claim=a.role_claim, max_size_claim=a.max_size_claim, base_dir=base)
    tokens = StaticTokens(TokenEntry(t.token, t.user, t.role) for t in a.tokens)
    return Authenticator(tokens, verifier if verifier else None)


def build(settings: Settings, engine: Engine) -> Auth:
    a = settings.auth
    signer = playback_signer(settings)
    options = AuthOptions(enabled=a.enabled, authenticator=authenticator(settings),
                          query_token=a.query_token, cookie_name=a.cookie_name)
    hook = PreCreateHook(a.precreate_hook_url, a.precreate_hook_timeout) if a.precreate_hook_url else None
    limits = Limits(max_size=settings.uploads.max_size, per_day=a.quota_bytes_per_day, total=a.quota_bytes_total)
    guard = TusGuard(engine, limits, hook, per_user=RateLimiter(a.creations_per_minute_per_user),
                     per_address=RateLimiter(a.creations_per_minute_per_address))
    return Auth(options=options, guard=guard, signer=signer,
                routes=auth_routes(settings, engine, signer))
