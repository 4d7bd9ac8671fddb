"""The media API: ``/api/media`` (list, read, delete, retry) and ``/api/events`` (SSE).

Everything per-app (the catalog, the queue adapter, the one change feed) is built here from the
app context, so two apps in one process never share state.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from tus_server.api.changes import ChangeDetector
from tus_server.api.events import ChangeFeed, EventStream, stopping_flag
from tus_server.api.items import MediaCatalog
from tus_server.api.jobs import JobQueue
from tus_server.api.links import playback_links
from tus_server.api.media import MediaApi
from tus_server.auth.requires import Style, guarded, identified
from tus_server.context import AppContext


def routes(ctx: AppContext) -> list[BaseRoute]:
    jobs = JobQueue(ctx.settings, ctx.engine)
    catalog = MediaCatalog(ctx.engine, ctx.layout, jobs)
    links = playback_links(ctx.settings)  # None unless [auth] signed_playback
    api = MediaApi(catalog, jobs, ctx.engine, ctx.layout, ctx.settings.server.base_path, links)
    events = EventStream(ChangeFeed(ChangeDetector(catalog), links=links), stopping_flag(ctx))

    # every route needs an identified caller (JSON refusals); which items it may see is
    # decided per item by tus_server.api.access
    return guarded([
        Route("/api/media", api.list, methods=["GET"]),
        Route("/api/media/{media_id}", api.get, methods=["GET"]),
        Route("/api/media/{media_id}", api.delete, methods=["DELETE"]),
        Route("/api/media/{media_id}/retry", api.retry, methods=["POST"]),
        Route("/api/events", events.handle, methods=["GET"]),
    ], identified, Style.JSON)
