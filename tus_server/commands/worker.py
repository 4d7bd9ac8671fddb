"""``tusflow worker --config PATH [--burst]``: one RQ worker for the transcoding queue.

The worker itself (reconciling between jobs, a work horse that dies with it, requeue on
shutdown) lives in the worker layer, ``transcoder/worker.py``; this module parses arguments.
"""

from __future__ import annotations

import argparse

from models.config import load_settings
from models.logs import configure as configure_logs
from transcoder import worker


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run one RQ transcoding worker")
    p.add_argument("--config", help="path to config.toml")
    p.add_argument("--burst", action="store_true",
                   help="reconcile, run every queued job, then exit (no waiting for new jobs)")
    p.add_argument("--name", help="worker name shown by `tusflow jobs status` (default random)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    configure_logs()
    return worker.run(settings, burst=args.burst, name=args.name)
