"""The Starlette application: tus endpoint, media API, HLS delivery and pages.

``create_app`` takes the Settings explicitly; ``app_from_env`` is the factory uvicorn calls in
each worker process when ``[server] workers`` > 1 (it reads the config path the parent set).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route

from models.config import Settings, load_settings
from tus_server import api, delivery, health, pages
from tus_server.auth import setup as auth_setup
from tus_server.context import AppContext
from tus_server.metrics import Metrics
from tus_server.publish import UploadLifecycle
from tus_server.tus.draft import DraftHandler
from tus_server.tus.datastore import UploadStore, open_store
from tus_server.tus.events import FanOut, UploadEvents
from tus_server.tus.handlers import AccessGuard, TusContext, TusHandler
from tus_server.tus.locks import open_locks
from tus_server.tus.repo import UploadRepo

CONFIG_ENV = "TUSFLOW_CONFIG_FILE"

TUS_REQUEST_HEADERS = [
    "Authorization", "Origin", "X-Requested-With", "X-Request-ID", "X-HTTP-Method-Override",
    "Content-Type", "Upload-Length", "Upload-Offset", "Tus-Resumable", "Upload-Metadata",
    "Upload-Defer-Length", "Upload-Concat", "Upload-Checksum", "Upload-Incomplete",
    "Upload-Complete", "Upload-Draft-Interop-Version", "Cache-Control", "Range",
    "Content-Disposition", "Repr-Digest", "Content-Digest", "Want-Repr-Digest",
]
TUS_RESPONSE_HEADERS = [
    "Location", "Upload-Offset", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata",
    "Upload-Concat", "Upload-Expires", "Tus-Resumable", "Tus-Version", "Tus-Extension",
    "Tus-Max-Size", "Tus-Checksum-Algorithm", "Link", "Content-Range", "Content-Length",
    "WWW-Authenticate", "Upload-Complete", "Upload-Limit", "Upload-Draft-Interop-Version",
    "Repr-Digest", "Retry-After",  # when a 429 or 503 may be retried, readable by scripts
]


def tus_handler(ctx: AppContext, store: UploadStore, events: UploadEvents,
                guard: AccessGuard | None = None) -> TusHandler:
    s = ctx.settings
    repo = UploadRepo(ctx.engine, s.uploads.expiration)
    locks = open_locks(s, ctx.layout, repo.claim)
    newest_token = getattr(locks, "newest_token", None)  # Redis locks: leases can run out
    if newest_token is not None:
        store.fence_writes(newest_token)  # a superseded holder's writer stores nothing more
    tus = TusContext(settings=s, repo=repo, store=store, locks=locks, events=events,
                     guard=guard, stopping=ctx.stopping)
    return TusHandler(tus, draft=DraftHandler(tus))  # the IETF draft on the same endpoint


def extra_routes(ctx: AppContext) -> list[BaseRoute]:
    """Routes of the media API, delivery, pages and health checks."""
    return [*api.routes(ctx), *delivery.routes(ctx), *pages.routes(ctx), *health.routes(ctx)]


def create_app(settings: Settings) -> Starlette:
    ctx = AppContext.build(settings)
    base = settings.server.base_path.rstrip("/")
    metrics = Metrics(ctx)  # serves /metrics; counts uploads as an observer of their events
    auth = auth_setup.build(settings, ctx.engine)  # who may do what: see tus_server/auth
    # The one seam from upload to worker: publishing first (its headers answer the client),
    # then the counts, so an upload is counted as completed only once it is handed on.
    store = open_store(settings, ctx.layout, ctx.executor)  # [storage] backend: file or s3
    events = FanOut(UploadLifecycle(ctx, store), metrics.upload_events())
    tus = tus_handler(ctx, store, events, auth.guard)
    tus_app = auth.tus_endpoint(tus)  # refusals before any body byte
    # The collection answers without its trailing slash too: a redirect would drop tus headers.
    routes: list[BaseRoute] = [Route(base, endpoint=tus_app), Mount(base, app=tus_app)]
    routes.extend(auth.routes)
    routes.extend(extra_routes(ctx))
    routes.extend(metrics.routes())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        restore = _chain_stop_signals(ctx)
        try:
            yield
        finally:
            ctx.stopping.set()
            restore()
            await tus.ctx.locks.aclose()  # the Redis locker's listener task and connections
            ctx.close()

    cors = settings.cors
    middleware = [Middleware(CORSMiddleware, allow_origins=list(cors.allow_origins),
                             allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
                             allow_headers=TUS_REQUEST_HEADERS, expose_headers=TUS_RESPONSE_HEADERS,
                             allow_credentials=cors.allow_credentials, max_age=cors.max_age),
                  auth.middleware]  # inside CORS, so refusals still carry CORS headers
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.ctx = ctx
    return app


def _chain_stop_signals(ctx: AppContext) -> Callable[[], None]:
    """Mark ``ctx.stopping`` the moment SIGTERM/SIGINT arrives, then let uvicorn's own handler run.

    uvicorn installs its handlers with ``signal.signal`` before the lifespan starts, so chaining
    here sees shutdown at once instead of after in-flight requests have drained."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        prior = signal.getsignal(sig)
        previous[sig] = prior

        def handler(signum: int, frame: Any, prior: Any = prior) -> None:
            ctx.stopping.set()
            if callable(prior):
                prior(signum, frame)
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, prior in previous.items():
            signal.signal(sig, prior)
    return restore


def app_from_env() -> Starlette:
    return create_app(load_settings(os.environ.get(CONFIG_ENV) or None))
