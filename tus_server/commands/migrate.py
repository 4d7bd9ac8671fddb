"""``tusflow migrate``: bring the database schema to a revision (default: the newest).

``tusflow serve`` and ``tusflow up`` upgrade on start too; this command exists for deployments
that migrate as a separate step (the compose file's one-shot ``migrate`` service) and to step
back (``--downgrade``) or write a new revision (``--autogenerate``, for developers).
"""

from __future__ import annotations

import argparse
import sys

from models.config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="upgrade the database schema (Alembic migrations)")
    p.add_argument("--config", help="path to config.toml")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--revision", default="head",
                        help="revision to upgrade to (default: head, the newest)")
    action.add_argument("--downgrade", metavar="REVISION",
                        help="step back to REVISION ('base' removes every table)")
    action.add_argument("--current", action="store_true",
                        help="print the database's revision and the newest one, change nothing")
    action.add_argument("--autogenerate", metavar="MESSAGE",
                        help="write the next revision under models/migrations/versions from the "
                             "difference between the models and the migrations (needs no database)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models import migrations
    from models.db import make_engine, migrate

    if args.autogenerate:
        path = migrations.autogenerate(args.autogenerate)
        print(f"wrote {path}" if path else "models and migrations agree: nothing to write")
        return 0
    settings = load_settings(args.config)
    try:
        if args.current:
            engine = make_engine(settings)
            try:
                current = migrations.current_revision(engine)
            finally:
                engine.dispose()
            head = migrations.head_revision()
            print(f"database revision: {current or 'none'}; newest: {head}"
                  + ("" if current == head else " (run tusflow migrate)"))
            return 0 if current == head else 1
        if args.downgrade:
            engine = make_engine(settings)
            try:
                before, after = migrations.downgrade(engine, args.downgrade)
            finally:
                engine.dispose()
        else:
            before, after = migrate(settings, args.revision)
    except migrations.SchemaError as exc:
        print(f"tusflow: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the database refused or is unreachable: say so, no traceback wall
        print(f"tusflow: migration failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if before == after:
        print(f"database already at revision {after or 'none'}")
    else:
        print(f"database migrated from {before or 'empty'} to {after or 'empty'}")
    return 0
