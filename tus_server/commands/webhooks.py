"""``tusflow webhooks``: see what was sent to the platform and send failed deliveries again.

    tusflow webhooks list [--failed | --pending] [--limit N] --config PATH
    tusflow webhooks redeliver ID [ID ...] --config PATH
    tusflow webhooks redeliver --all-failed --config PATH
    tusflow webhooks sweep --config PATH     (re-enqueue deliveries whose wake-up was lost)
"""

from __future__ import annotations

import argparse
import sys

from sqlmodel import Session, col, select

from models.config import Settings, load_settings
from models.db import init_db, make_engine
from models.webhooks import WebhookDelivery


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("webhooks", help="list and redeliver webhook deliveries")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="recent deliveries, newest first")
    state = ls.add_mutually_exclusive_group()
    state.add_argument("--failed", action="store_true", help="only deliveries that gave up")
    state.add_argument("--pending", action="store_true", help="only deliveries still being retried")
    ls.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    ls.set_defaults(func=run_list)

    rd = actions.add_parser("redeliver", help="send again now, same id and body, fresh retries")
    rd.add_argument("ids", nargs="*", metavar="ID", help="delivery ids (Tusflow-Delivery)")
    rd.add_argument("--all-failed", action="store_true", help="every delivery that gave up")
    rd.set_defaults(func=run_redeliver)

    sw = actions.add_parser("sweep", help="re-enqueue deliveries whose wake-up was lost")
    sw.add_argument("--grace", type=float, default=600.0,
                    help="seconds a retry may be overdue before it counts as lost (default 600)")
    sw.set_defaults(func=run_sweep)

    for action in (ls, rd, sw):
        action.add_argument("--config", help="path to config.toml")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings)
    init_db(engine)
    return engine


def run_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engine = _engine(settings)
    query = select(WebhookDelivery).order_by(col(WebhookDelivery.created_at).desc()).limit(args.limit)
    if args.failed:
        query = query.where(col(WebhookDelivery.failed_at).is_not(None))
    elif args.pending:
        query = query.where(col(WebhookDelivery.failed_at).is_(None),
                            col(WebhookDelivery.delivered_at).is_(None))
    with Session(engine) as s:
        rows = s.exec(query).all()
    engine.dispose()
    print(f"{'ID':32}  {'EVENT':16}  {'STATE':9}  {'TRIES':>5}  {'LAST':>4}  {'CREATED':19}  URL / LAST ERROR")
    for r in rows:
        last = "-" if r.last_status is None else str(r.last_status)
        created = r.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{r.id:32}  {r.event:16}  {r.state:9}  {r.attempts:>5}  {last:>4}  {created:19}  {r.url}")
        if r.last_error and r.delivered_at is None:
            print(f"{'':32}  {r.last_error[:200]}")
    return 0


def run_redeliver(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all_failed):
        print("tusflow: give delivery ids or --all-failed (not both)", file=sys.stderr)
        return 2
    settings = _settings(args)
    from transcoder.webhooks import redeliver
    engine = _engine(settings)
    reset = redeliver(settings, engine, args.ids, all_failed=args.all_failed)
    with Session(engine) as s:
        queued = {r.id for r in s.exec(select(WebhookDelivery).where(
            col(WebhookDelivery.id).in_(reset), col(WebhookDelivery.enqueued_at).is_not(None))).all()}
    engine.dispose()
    missing = sorted(set(args.ids) - set(reset))
    for delivery_id in reset:
        note = "queued" if delivery_id in queued else "reset; Redis unreachable, the sweep enqueues it"
        print(f"{delivery_id}  {note}")
    for delivery_id in missing:
        print(f"tusflow: no delivery {delivery_id}", file=sys.stderr)
    if not reset and args.all_failed:
        print("no failed deliveries")
    return 1 if missing or len(queued) < len(reset) else 0


def run_sweep(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from transcoder.webhooks import sweep
    engine = _engine(settings)
    try:
        woken = sweep(settings, engine, grace=args.grace)
    finally:
        engine.dispose()
    print(f"{len(woken)} deliveries re-enqueued")
    return 0
