"""``tusflow jobs status | failed | retry [ID... | --all] | flush``: watch and repair the queue.

The equivalents of the original's ``queue:monitor``, ``queue:failed``, ``queue:retry all`` and
``queue:flush``, read from RQ's registries (and, for what a person cares about, the Media
rows: title, tries, the reason in words).

- ``status``: per queue, jobs waiting / running / waiting for a retry / failed / finished;
  the workers and what they run; media by state, including completions whose job has not
  reached Redis yet; the running and the waiting jobs.
- ``failed``: RQ's failed-job registry, newest first, with the reason.
- ``retry ID...`` (media or job ids) or ``retry --all`` (every failed job): transcode again as
  a new job, the failed one leaves the registry.
- ``flush``: empty the failed-job registry (the media stay ``failed``; ``retry ID`` still works).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import func
from sqlmodel import Session, col, select

from models.config import Settings, load_settings
from models.db import init_db, make_engine
from models.lifecycle import MediaState, generation_of, job_belongs_to
from models.tables import Media
from models.logs import media_from_job_id
from transcoder.queue import MediaNotFound, chunked_parts, get_queue, retry_media
from transcoder.worker import extra_queues
from models.redis_conn import connect, redis_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="queue status, failed jobs, retry, flush")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    st = actions.add_parser("status", help="queue sizes, workers, running and waiting jobs")
    st.add_argument("--limit", type=int, default=20, help="waiting jobs to list (default 20)")
    st.set_defaults(func=run_status)
    fl = actions.add_parser("failed", help="failed jobs with their reason, newest first")
    fl.add_argument("--limit", type=int, default=100, help="rows to show (default 100)")
    fl.set_defaults(func=run_failed)
    rt = actions.add_parser("retry", help="transcode failed media again")
    rt.add_argument("ids", nargs="*", metavar="ID", help="media ids or job ids")
    rt.add_argument("--all", action="store_true", help="every job in the failed registry")
    rt.set_defaults(func=run_retry)
    fu = actions.add_parser("flush", help="delete every job in the failed registry")
    fu.set_defaults(func=run_flush)
    for action in (st, fl, rt, fu):
        action.add_argument("--config", help="path to config.toml")


# ---------------------------------------------------------------------------------- output
def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, max_width: int = 60) -> str:
    """A plain text table: left-aligned columns, long cells cut with an ellipsis."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    if not cells:
        lines.append("(none)")
    return "\n".join(lines)


def _cell(value: Any, max_width: int) -> str:
    text = "-" if value is None or value == "" else " ".join(str(value).split())
    return text if len(text) <= max_width else text[:max_width - 1] + "…"


def ago(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = int((datetime.now(timezone.utc) - moment).total_seconds())
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _media_rows(engine: Any, ids: Iterable[str]) -> dict[str, Media]:
    ids = [i for i in ids if i]
    if not ids:
        return {}
    with Session(engine) as session:
        return {m.id: m for m in session.exec(select(Media).where(col(Media.id).in_(ids))).all()}


def _reason(job: Job, media: Media | None) -> str:
    if media is not None and media.error and media.job_id == job.id:
        return media.error
    lines = [line for line in (job.exc_info or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "-"


# ---------------------------------------------------------------------------------- status
def run_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engine = make_engine(settings)
    init_db(engine)
    try:
        _print_media_counts(engine)
        try:
            conn = connect(settings)
            conn.ping()
        except (RedisError, ValueError) as exc:
            print(f"\nRedis at {redis_url(settings)} is unreachable: {exc}")
            print("Completed uploads wait in the database; workers enqueue them once Redis is back.")
            return 1
        try:
            _print_queues(settings, conn)
            _print_workers(conn)
            _print_running_and_waiting(settings, engine, conn, args.limit)
        finally:
            conn.close()
    finally:
        engine.dispose()
    return 0


def _print_media_counts(engine: Any) -> None:
    with Session(engine) as session:
        counts = dict(session.exec(select(Media.state, func.count()).group_by(Media.state)).all())
        pending = session.exec(select(func.count()).select_from(Media).where(
            col(Media.state) == MediaState.QUEUED, col(Media.enqueued_at).is_(None))).one()
    rows = [(state, counts.get(state, 0)) for state in MediaState]
    print("Media (database)")
    print(table(["STATE", "COUNT"], rows))
    if pending:
        print(f"{pending} queued media have not reached Redis yet (a worker's reconciler "
              "enqueues them).")


def _print_queues(settings: Settings, conn: Any) -> None:
    rows = []
    for name in [settings.redis.queue, *extra_queues(settings)]:
        q = Queue(name, connection=conn)
        rows.append((name, q.count, q.started_job_registry.get_job_count(cleanup=False),
                     q.scheduled_job_registry.get_job_count(cleanup=False),
                     q.failed_job_registry.get_job_count(cleanup=False),
                     q.finished_job_registry.get_job_count(cleanup=False)))
    print(f"\nQueues (redis {redis_url(settings)})")
    print(table(["QUEUE", "WAITING", "RUNNING", "RETRY-WAIT", "FAILED", "FINISHED"], rows))


def _print_workers(conn: Any) -> None:
    rows = []
    for worker in sorted(Worker.all(connection=conn), key=lambda w: w.name):
        current = worker.get_current_job_id()
        rows.append((worker.name, worker.hostname, worker.pid, worker.get_state(),
                     media_from_job_id(current) or current, ago(worker.last_heartbeat),
                     worker.successful_job_count, worker.failed_job_count))
    print("\nWorkers")
    print(table(["NAME", "HOST", "PID", "STATE", "MEDIA", "HEARTBEAT", "OK", "FAILED"], rows))


def _group(job_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Job ids in order, a chunked generation's part jobs collapsed into one entry per media
    (at the place of its first part): [(label, ids)]."""
    out: list[tuple[str, list[str]]] = []
    where: dict[str, int] = {}
    for job_id in job_ids:
        media_id = media_from_job_id(job_id) or ""
        part = _part_name(job_id, media_id)
        if part is None:
            out.append((job_id, [job_id]))
            continue
        key = f"{media_id}:{generation_of(job_id, media_id)}"
        if key not in where:
            where[key] = len(out)
            out.append(("", []))
        out[where[key]][1].append(job_id)
    labelled = []
    for label, ids in out:
        if not label:
            media_id = media_from_job_id(ids[0]) or ""
            parts = [_part_name(j, media_id) or j for j in ids]
            label = (f"{generation_of(ids[0], media_id)}: {len(ids)} part"
                     f"{'s' if len(ids) != 1 else ''} ({', '.join(parts)})")
        labelled.append((label, ids))
    return labelled


def _part_name(job_id: str, media_id: str) -> str | None:
    """``chunk-3`` / ``audio`` / ``join`` for a part job of a chunked ladder, else None."""
    generation = generation_of(job_id, media_id)
    if not media_id or job_id == generation or not job_belongs_to(job_id, media_id):
        return None
    return job_id[len(generation) + 1:]


def _print_running_and_waiting(settings: Settings, engine: Any, conn: Any, limit: int) -> None:
    queue = get_queue(settings, conn)
    running = queue.started_job_registry.get_job_ids(cleanup=False)
    waiting = queue.get_job_ids(0, max(1, limit))
    scheduled = queue.scheduled_job_registry.get_job_ids(cleanup=False)
    media = _media_rows(engine, [media_from_job_id(j) or "" for j in running + waiting + scheduled])

    def info(job_id: str) -> Media | None:
        return media.get(media_from_job_id(job_id) or "")

    rows = []
    for label, ids in _group(running):
        m = info(ids[0])
        rows.append((media_from_job_id(ids[0]), label, f"{m.progress:.0f}%" if m else "-",
                     f"{m.eta_seconds:.0f}s" if m and m.eta_seconds is not None else "-",
                     m.attempts if m else "-", ago(m.started_at) if m else "-", m.title if m else "-"))
    print("\nRunning")
    print(table(["MEDIA", "JOB", "PROGRESS", "ETA", "TRY", "STARTED", "TITLE"], rows, max_width=70))
    rows = []
    position = 0
    for label, ids in _group(waiting):
        m = info(ids[0])
        position += 1
        rows.append((position, media_from_job_id(ids[0]), label,
                     ago(m.enqueued_at) if m else "-", m.title if m else "-"))
    for label, ids in _group(scheduled):
        m = info(ids[0])
        when = queue.scheduled_job_registry.get_scheduled_time(ids[0])
        rows.append((f"retry {ago(when)}", media_from_job_id(ids[0]), label,
                     ago(m.enqueued_at) if m else "-", m.title if m else "-"))
    total = queue.count
    print(f"\nWaiting ({total} in queue{', first ' + str(limit) + ' shown' if total > limit else ''})")
    print(table(["POS", "MEDIA", "JOB", "ENQUEUED", "TITLE"], rows, max_width=70))
    _print_chunked(engine, conn, running + waiting + scheduled)


def _print_chunked(engine: Any, conn: Any, job_ids: Sequence[str]) -> None:
    """Media whose ladder runs as chunk jobs: parts done of all, per state."""
    generations: dict[str, str] = {}
    for job_id in job_ids:
        media_id = media_from_job_id(job_id) or ""
        if _part_name(job_id, media_id) is not None:
            generations.setdefault(generation_of(job_id, media_id), media_id)
    if not generations:
        return
    media = _media_rows(engine, generations.values())
    rows = []
    for generation, media_id in generations.items():
        fanned = chunked_parts(conn, generation)
        parts = fanned["parts"] if fanned else []
        done = fanned["done"] if fanned else set()
        state = {}
        for job in Job.fetch_many([f"{generation}-{p}" for p in parts], connection=conn):
            if job is not None:
                state[job.id[len(generation) + 1:]] = job.get_status(refresh=False)
        running = [p for p, st in state.items() if st == "started" and p not in done]
        queued = [p for p, st in state.items() if st == "queued" and p not in done]
        m = media.get(media_id)
        rows.append((media_id, generation, f"{len(done)}/{len(parts)}", ", ".join(running),
                     ", ".join(queued), f"{m.progress:.0f}%" if m else "-"))
    print("\nChunked ladders")
    print(table(["MEDIA", "GENERATION", "DONE", "RUNNING", "WAITING", "PROGRESS"], rows))


# ---------------------------------------------------------------------------------- failed
def _failed_jobs(settings: Settings, conn: Any) -> list[Job]:
    registry = get_queue(settings, conn).failed_job_registry
    ids = registry.get_job_ids(desc=True, cleanup=False)
    return [job for job in Job.fetch_many(ids, connection=conn) if job is not None]


def run_failed(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engine = make_engine(settings)
    try:
        conn = connect(settings)
        try:
            jobs = _failed_jobs(settings, conn)
        except RedisError as exc:
            print(f"Redis at {redis_url(settings)} is unreachable: {exc}", file=sys.stderr)
            return 1
        finally:
            conn.close()
        media = _media_rows(engine, [media_from_job_id(j.id) or "" for j in jobs])
        rows = []
        for job in jobs[:args.limit]:
            media_id = media_from_job_id(job.id)
            m = media.get(media_id or "")
            note = "" if m is None or m.job_id == job.id else " (superseded)"
            rows.append((media_id, job.id + note, ago(job.ended_at), m.attempts if m else "-",
                         _reason(job, m), m.title if m else "(media deleted)"))
        print(f"Failed jobs: {len(jobs)}")
        print(table(["MEDIA", "JOB", "FAILED", "TRIES", "REASON", "TITLE"], rows, max_width=70))
    finally:
        engine.dispose()
    return 0


# ---------------------------------------------------------------------------------- retry
def run_retry(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not args.ids and not args.all:
        print("tusflow jobs retry: give media/job ids, or --all", file=sys.stderr)
        return 2
    engine = make_engine(settings)
    init_db(engine)
    code = 0
    try:
        conn = connect(settings)
        try:
            if args.all:
                targets = [job.id for job in _failed_jobs(settings, conn)]
            else:
                targets = list(args.ids)
            rows = []
            done: set[str] = set()
            for target in targets:
                media_id = media_from_job_id(target) or target
                if media_id in done:
                    continue
                done.add(media_id)
                try:
                    retry_media(settings, engine, media_id, connection=conn)
                    with Session(engine) as session:
                        m = session.get(Media, media_id)
                    rows.append((media_id, m.job_id if m else "-", "queued again"))
                except MediaNotFound:
                    removed = _forget_jobs_of(conn, settings, media_id)
                    rows.append((media_id, "-", "no such media" + (
                        f"; removed {removed} failed job(s)" if removed else "")))
                    if not removed:
                        code = 1
        except RedisError as exc:
            print(f"Redis at {redis_url(settings)} is unreachable: {exc}", file=sys.stderr)
            return 1
        finally:
            conn.close()
        print(table(["MEDIA", "NEW JOB", "RESULT"], rows))
    finally:
        engine.dispose()
    return code


def _forget_jobs_of(conn: Any, settings: Settings, media_id: str) -> int:
    """Failed jobs of a media that no longer exists: retrying is impossible, drop them."""
    registry = get_queue(settings, conn).failed_job_registry
    removed = 0
    for job_id in registry.get_job_ids(cleanup=False):
        if job_belongs_to(job_id, media_id):
            try:
                Job.fetch(job_id, connection=conn).delete()
            except NoSuchJobError:
                registry.remove(job_id)
            removed += 1
    return removed


# ---------------------------------------------------------------------------------- flush
def run_flush(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        conn = connect(settings)
        try:
            registry = get_queue(settings, conn).failed_job_registry
            ids = registry.get_job_ids(cleanup=False)
            for job_id in ids:
                try:
                    Job.fetch(job_id, connection=conn).delete()
                except NoSuchJobError:
                    registry.remove(job_id)
        finally:
            conn.close()
    except RedisError as exc:
        print(f"Redis at {redis_url(settings)} is unreachable: {exc}", file=sys.stderr)
        return 1
    print(f"Flushed {len(ids)} failed job(s). The media stay failed; "
          "`tusflow jobs retry MEDIA_ID` still works.")
    return 0
