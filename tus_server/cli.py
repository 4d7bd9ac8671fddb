"""The ``tusflow`` command. Each subcommand lives in ``tus_server/commands/<name>.py`` and
registers itself with ``register(subparsers)``; its handler receives the parsed arguments."""

from __future__ import annotations

import argparse
import importlib
import sys

from models.config import ConfigError
from transcoder.logs import configure as configure_logs

COMMANDS = ("serve", "cleanup", "worker", "up", "jobs", "upload", "migrate", "webhooks")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """``only`` names the one subcommand to load: importing every command pulls in the whole web
    stack, about a second of CPU that a ``tusflow upload`` or ``tusflow jobs`` has no use for."""
    parser = argparse.ArgumentParser(prog="tusflow", description="Resumable uploads published as HLS.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only not in COMMANDS else (only,):
        try:
            module = importlib.import_module(f"tus_server.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tus_server.commands.{name}":
                continue
            raise
        module.register(sub)
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
