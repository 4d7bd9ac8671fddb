"""``tusflow serve``: run the web app under uvicorn."""

from __future__ import annotations

import argparse
import os
import socket
import sys

import uvicorn

from models.config import load_settings
from tus_server.app import CONFIG_ENV, create_app
from tus_server.httpserver import server_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the tus endpoint, media API and pages")
    p.add_argument("--config", help="path to config.toml")
    p.add_argument("--host", help="address to bind (default from [server] host)")
    p.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default [server] port)")
    p.add_argument("--workers", type=int, help="uvicorn worker processes (default [server] workers)")
    p.set_defaults(func=run)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    workers = args.workers or settings.server.workers
    return serve(settings, host, port, workers)


def serve(settings, host: str, port: int, workers: int = 1) -> int:  # type: ignore[no-untyped-def]
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    # One write: under `tusflow up` workers log to the same pipe, and print() with
    # PYTHONUNBUFFERED writes the text and the newline separately, so a worker's line could
    # land in between and glue itself to the URL.
    sys.stdout.write(f"tusflow listening on http://{shown}:{actual}{settings.server.base_path}\n")
    sys.stdout.flush()
    common = dict(log_level="warning", loop="uvloop", lifespan="on",
                  timeout_graceful_shutdown=30, access_log=False)
    if workers <= 1:
        config = server_config(settings, create_app(settings), **common)
        uvicorn.Server(config).run(sockets=[sock])
        return 0
    if settings.config_path:
        os.environ[CONFIG_ENV] = str(settings.config_path)
    from uvicorn.supervisors import Multiprocess

    from tus_server.metrics import prepare_multiprocess
    prepare_multiprocess(settings)
    config = server_config(settings, "tus_server.app:app_from_env", factory=True, workers=workers, **common)
    Multiprocess(config, sockets=[sock]).run()
    return 0
