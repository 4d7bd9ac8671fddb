#!/usr/bin/env python3
"""The baseline for scripts/bench_upload.py: a bare ASGI app that writes each request body to a
file and answers 204, under the same uvicorn settings as ``tusflow serve`` (httptools, uvloop,
one worker). Writes go straight from the event loop (the cheapest way there is), and with
``--fsync`` each request ends with fdatasync, as tusflow does with [storage] fsync = true.

usage: sink_app.py --dir DIR [--port 0] [--fsync]   → prints "sink listening on http://HOST:PORT/"
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path


def make_app(directory: Path, fsync: bool):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        name = scope["path"].strip("/").replace("/", "_") or "body"
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                body = message.get("body", b"")
                if body:
                    os.write(fd, body)
                if not message.get("more_body", False):
                    break
            if fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    return app


def main() -> None:
    import uvicorn
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fsync", action="store_true")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    print(f"sink listening on http://{args.host}:{sock.getsockname()[1]}/", flush=True)
    config = uvicorn.Config(make_app(args.dir, args.fsync), log_level="warning", http="httptools", loop="uvloop",
                            lifespan="on", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
