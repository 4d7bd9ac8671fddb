"""Everything auth needs, built once per app from Settings (no module-level state).

``create_app`` calls ``build`` and then wires three things: ``middleware`` (inside CORS),
``guard`` (handed to the tus handler) and ``routes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from sqlalchemy.engine import Engine
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from models.config import Settings
from models.db import session_scope
from models.tables import Media, Upload
from tus_server.auth.authenticator import Authenticator
from tus_server.auth.jwt import JwtVerifier
from tus_server.auth.middleware import AuthMiddleware, AuthOptions
from tus_server.auth.prehook import PreCreateHook
from tus_server.auth.quota import Limits
from tus_server.auth.routes import auth_routes
from tus_server.auth.signing import PlaybackSigner
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


class MediaOwners:
    """Owner of a media item (or of the upload it is still being made from) for the delivery
    and player-page checks: primary-key reads, off the event loop."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def _read(self, media_id: str) -> tuple[bool, str | None]:
        with session_scope(self.engine) as session:
            row = session.get(Media, media_id) or session.get(Upload, media_id)
            return (row is not None, row.owner if row is not None else None)

    async def __call__(self, media_id: str) -> tuple[bool, str | None]:
        return await anyio.to_thread.run_sync(self._read, media_id)


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
    signer = PlaybackSigner(a.playback_signing_key, a.playback_ttl) if a.playback_signing_key else None
    options = AuthOptions(enabled=a.enabled, authenticator=authenticator(settings),
                          base_path=settings.server.base_path, signer=signer,
                          signed_playback=a.signed_playback, public_paths=a.public_paths,
                          protect_metrics=a.protect_metrics, query_token=a.query_token,
                          cookie_name=a.cookie_name, media_owner=MediaOwners(engine))
    hook = PreCreateHook(a.precreate_hook_url, a.precreate_hook_timeout) if a.precreate_hook_url else None
    limits = Limits(max_size=settings.uploads.max_size, per_day=a.quota_bytes_per_day, total=a.quota_bytes_total)
    return Auth(options=options, guard=TusGuard(engine, limits, hook), signer=signer,
                routes=auth_routes(settings, engine, signer))
