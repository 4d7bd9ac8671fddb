"""The ``tusflow`` command. Each subcommand lives in its own module (``COMMANDS``) and registers
itself with ``register(subparsers)``; its handler receives the parsed arguments. ``upload`` is
the command-line client, which lives in its own package and imports nothing of the server."""

from __future__ import annotations

import argparse
import importlib
import sys

from models.config import ConfigError
from models.logs import configure as configure_logs

COMMANDS = {
    "serve": "tus_server.commands.serve",
    "cleanup": "tus_server.commands.cleanup",
    "worker": "tus_server.commands.worker",
    "up": "tus_server.commands.up",
    "jobs": "tus_server.commands.jobs",
    "upload": "tusflow_client.command",
    "migrate": "tus_server.commands.migrate",
    "webhooks": "tus_server.commands.webhooks",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """``only`` names the one subcommand to load: importing every command pulls in the whole web
    stack, about a second of CPU that a ``tusflow upload`` or ``tusflow jobs`` has no use for."""
    parser = argparse.ArgumentParser(prog="tusflow", description="Resumable uploads published as HLS.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only not in COMMANDS else (only,):
        importlib.import_module(COMMANDS[name]).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    configure_logs()  # the same logfmt lines as the worker, media=<id> where one is named
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:  # one place turns a bad config into a one-line error
        print(f"tusflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
