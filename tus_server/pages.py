"""The teacher's pages: upload (``/``), media list (``/media``), player (``/media/{id}``).

Pages are small HTML shells rendered on the server (strings from ``i18n/<lang>.json``, config
as inline JSON) plus ES modules under ``/static/`` (the path ``[auth] public_paths`` opens
by default). ``/media/{id}`` is the player page and
``/media/{id}/{file}`` is delivery (delivery.py): the one-segment path never reaches delivery.
tus-js-client and hls.js come from ``node_modules`` (npm, lock committed) and are served from
this origin under ``/static/vendor/`` so the pages need no third-party host.

With ``[auth] enabled`` a page may be loaded by a navigation that carries no credential (the
platform hands the token over in the URL fragment, see static/js/auth.js and the README): the
middleware then names the principal ``unidentified`` and the page routes, whose need is
``requires.page_visitor``, serve it an empty shell. The upload and list pages hold no user data
anyway; the player page leaves out title and description, so its shell is the same for every id
and confirms nothing. The script fills everything in from the API, which does need the token.
A visitor who did prove who they are gets the player page only for an item they may see (owner
or privileged); for any other it is the same 404 page as for an id that does not exist.
Static files and the vendored libraries are open to everyone under ``[auth] public_paths``.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from models.metadata import stored_metadata
from models.config import Settings
from models.tables import Media, Upload
from tus_server.api.ids import is_media_id
from tus_server.auth.access import can_access
from tus_server.auth.principal import Principal
from tus_server.auth.requires import guarded, page_visitor, public_under
from tus_server.context import AppContext

PACKAGE = Path(__file__).resolve().parent
STATIC = PACKAGE / "static"
TEMPLATES = PACKAGE / "templates"
I18N = PACKAGE / "i18n"
NODE_MODULES_ENV = "TUSFLOW_NODE_MODULES"

VENDOR = {
    "tus.min.js": "tus-js-client/dist/tus.min.js",
    "tus.min.js.map": "tus-js-client/dist/tus.min.js.map",
    "hls.min.js": "hls.js/dist/hls.min.js",
    "hls.min.js.map": "hls.js/dist/hls.min.js.map",
}
PAGE_SCRIPTS = {
    "upload": ["/static/vendor/tus.min.js", "/static/js/upload.js"],
    "media": ["/static/js/list.js"],
    "player": ["/static/vendor/hls.min.js", "/static/js/player.js"],
    "notfound": [],
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# hls.js runs its transmuxer in a blob: worker and feeds MSE from blob: URLs.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
            "worker-src 'self' blob:; connect-src 'self'; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors {ancestors}; form-action 'self'")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_TOKEN = re.compile(r"\{\{\{(\w+)\}\}\}|\{\{t:([\w.]+)\}\}|\{\{(\w+)\}\}")


def host_origins(settings: Settings) -> list[str]:
    """Origins of the platform that may embed the pages (CSP frame-ancestors) and push a token
    into them (``tusflow:token`` messages): the explicit ``[cors] allow_origins``, which already
    name the platform's origins that call the API from a browser. ``"*"`` is not taken: a page
    any site may frame, and accept a token from, would let that site make a teacher upload
    into the site's account."""
    return [o.rstrip("/") for o in settings.cors.allow_origins if _ORIGIN.fullmatch(o.rstrip("/"))]


def node_modules_dirs(settings: Settings) -> list[Path]:
    """Where npm put the browser libraries: $TUSFLOW_NODE_MODULES, beside the code, beside the
    config file, then the working directory (the first that exists wins per file)."""
    candidates = [os.environ.get(NODE_MODULES_ENV, ""), str(PACKAGE.parent / "node_modules")]
    if settings.config_path is not None:
        candidates.append(str(settings.config_path.parent / "node_modules"))
    candidates.append(str(Path.cwd() / "node_modules"))
    return [Path(c) for c in dict.fromkeys(candidates) if c]


class Strings:
    """The UI text of every language shipped in ``i18n/``; English is the fallback."""

    def __init__(self, folder: Path = I18N, default: str = "en"):
        self.default = default
        self.catalogs: dict[str, dict[str, str]] = {}
        for path in sorted(folder.glob("*.json")):
            self.catalogs[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        base = self.catalogs[default]
        for lang, catalog in self.catalogs.items():
            if lang != default:
                self.catalogs[lang] = {**base, **catalog}

    def pick(self, accept_language: str | None) -> str:
        ranked: list[tuple[float, int, str]] = []
        for index, part in enumerate((accept_language or "").split(",")):
            tag, _, params = part.strip().partition(";")
            q = 1.0
            if params.strip().startswith("q="):
                try:
                    q = float(params.strip()[2:])
                except ValueError:
                    q = 0.0
            if tag and q > 0:
                ranked.append((-q, index, tag.strip().lower()))
        for _, _, tag in sorted(ranked):
            for lang in (tag, tag.split("-")[0]):
                if lang in self.catalogs:
                    return lang
        return self.default

    def catalog(self, lang: str) -> dict[str, str]:
        return self.catalogs.get(lang) or self.catalogs[self.default]


class Templates:
    """``{{name}}`` escaped, ``{{{name}}}`` raw, ``{{t:key}}`` an escaped UI string."""

    def __init__(self, folder: Path = TEMPLATES):
        self.sources = {p.stem: p.read_text(encoding="utf-8") for p in folder.glob("*.html")}

    def render(self, name: str, strings: dict[str, str], values: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            raw, key, name_ = match.groups()
            if raw:
                return str(values.get(raw, ""))
            if key:
                return html.escape(strings.get(key, key))
            return html.escape(str(values.get(name_, "")))
        return _TOKEN.sub(replace, self.sources[name])


def script_json(data: Any) -> str:
    """JSON safe inside <script type=application/json> (no ``</script>``, no HTML comment)."""
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


class StaticAssets(StaticFiles):
    """Our own CSS/JS: revalidated on every load (ETag), so a deploy is seen at once."""

    def file_response(self, full_path: Any, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if str(full_path).endswith((".js", ".mjs")):
            response.headers["Content-Type"] = "text/javascript; charset=utf-8"
        return response


class Pages:
    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self.strings = Strings()
        self.templates = Templates()
        self.vendor_dirs = node_modules_dirs(settings)
        self.hosts = host_origins(settings)
        self.csp = PAGE_CSP.format(ancestors=" ".join(["'self'", *self.hosts]))

    def _config(self) -> dict[str, Any]:
        uploads = self.settings.uploads
        auth = self.settings.auth
        return {
            "endpoint": self.settings.server.base_path,
            "chunkSize": uploads.client_chunk_size,
            "maxSize": uploads.max_size,
            "retryDelays": list(uploads.client_retry_delays),
            "redirectDelayMs": 400,
            # what the page's credential handling needs (static/js/auth.js); no secret in here
            "auth": {
                "enabled": auth.enabled,
                "queryToken": auth.query_token,
                "cookieName": auth.cookie_name,
                "hostOrigins": self.hosts,
            },
        }

    def render(self, request: Request, page: str, title_key: str, content: dict[str, Any],
               extra: dict[str, Any] | None = None, status: int = 200, title_values: dict[str, str] | None = None) -> HTMLResponse:
        lang = self.strings.pick(request.headers.get("accept-language"))
        strings = self.strings.catalog(lang)
        title = strings.get(title_key, title_key)
        for key, value in (title_values or {}).items():
            title = title.replace("{" + key + "}", value)
        data = {"lang": lang, "page": page, "config": self._config(), "strings": strings, **(extra or {})}
        body = self.templates.render(page, strings, content)
        scripts = "\n".join(
            f'<script type="module" src="{src}"></script>' if src.startswith("/static/js/")
            else f'<script src="{src}" defer></script>' for src in PAGE_SCRIPTS[page])
        document = self.templates.render("base", strings, {
            "lang": lang, "title": title, "page": page, "data": script_json(data), "scripts": scripts,
            "content": body,
            "current_upload": ' aria-current="page"' if page == "upload" else "",
            "current_media": ' aria-current="page"' if page in ("media", "player") else "",
        })
        return HTMLResponse(document, status_code=status, headers={
            **SECURITY_HEADERS, "Content-Security-Policy": self.csp, "Cache-Control": "no-cache"})

    async def upload(self, request: Request) -> Response:
        return self.render(request, "upload", "upload.page_title", {})

    async def media(self, request: Request) -> Response:
        return self.render(request, "media", "list.page_title", {})

    async def player(self, request: Request) -> Response:
        media_id = request.path_params["media_id"]
        principal = getattr(request.state, "principal", None)
        if is_media_id(media_id) and principal is not None and principal.via == "unidentified":
            # no database read: the shell must not differ between ids that exist and ids that do not
            strings = self.strings.catalog(self.strings.pick(request.headers.get("accept-language")))
            return self.render(request, "player", "player.shell_title",
                               {"heading": strings.get("player.shell_title", ""), "description": ""},
                               extra={"mediaId": media_id})
        found = await anyio.to_thread.run_sync(self._title_of, media_id) if is_media_id(media_id) else None
        if found is None or not _may_see(principal, found[2]):
            return self.not_found(request, "player.not_found")
        title, description, _ = found
        return self.render(request, "player", "player.page_title",
                           {"heading": title, "description": description}, extra={"mediaId": media_id},
                           title_values={"title": title})

    def _title_of(self, media_id: str) -> tuple[str, str, str | None] | None:
        """Title, description and owner of a media item or of the upload it is made from."""
        with Session(self.engine) as session:
            media = session.get(Media, media_id)
            if media is not None:
                return media.title or media.filename, media.description, media.owner
            upload = session.get(Upload, media_id)
            if upload is None or upload.completed_at is not None:
                return None
        meta = stored_metadata(upload.metadata_raw)
        return meta.text("title") or meta.text("filename"), meta.text("description"), upload.owner

    def not_found(self, request: Request, message_key: str = "notfound.text") -> HTMLResponse:
        lang = self.strings.pick(request.headers.get("accept-language"))
        message = self.strings.catalog(lang).get(message_key, "")
        return self.render(request, "notfound", "notfound.page_title", {"message": message}, status=404)

    async def vendor(self, request: Request) -> Response:
        name = request.path_params["name"]
        relative = VENDOR.get(name)
        if relative is None:
            return PlainTextResponse("not found\n", status_code=404, headers=SECURITY_HEADERS)
        for folder in self.vendor_dirs:
            path = folder / relative
            if path.is_file():
                media_type = "application/json" if name.endswith(".map") else "text/javascript; charset=utf-8"
                return FileResponse(path, media_type=media_type, headers={
                    **SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"})
        return PlainTextResponse(
            f"{relative} is not installed: run ./scripts/setup (npm ci) or set {NODE_MODULES_ENV}\n",
            status_code=404, headers=SECURITY_HEADERS)


def _may_see(principal: Principal | None, owner: str | None) -> bool:
    """Without a principal (no auth in this build) everything is the operator's."""
    return principal is None or can_access(principal, owner)


def routes(ctx: AppContext) -> list[BaseRoute]:
    pages = Pages(ctx.settings, ctx.engine)
    shells = guarded([
        Route("/", pages.upload, methods=["GET", "HEAD"]),
        Route("/media", pages.media, methods=["GET", "HEAD"]),
        Route("/media/{media_id}", pages.player, methods=["GET", "HEAD"]),
    ], page_visitor)
    assets = guarded([
        Route("/static/vendor/{name}", pages.vendor, methods=["GET", "HEAD"]),
        Mount("/static", app=StaticAssets(directory=STATIC), name="static"),
    ], public_under(ctx.settings.auth.public_paths))
    return [*shells, *assets]
