"""``tusflow cleanup``: delete what abandoned uploads left behind.

Removes uploads whose ``Upload-Expires`` has passed (unfinished ones, and finished partials that
no final can use any more): their rows, bytes, staged chunks and lock files. Also removes files
under uploads/ and locks/ that no row owns (a process killed between creating a file and its
row, or while assembling a final), stale staged chunks, and the lock files of finished uploads,
once they are older than ``--orphan-age``; with ``[storage] backend = "s3"`` also S3 multipart
uploads and objects under uploads/ that no row owns, and stale checksum stages, which are
aborted and deleted through the store. An upload some
request is working on right now is skipped, never waited for: it is not abandoned, and cleanup
must not stall a live client. Safe to run from cron while servers run.
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlmodel import Session, select

from models.config import Settings, load_settings
from models.db import init_db, make_engine
from models.layout import Layout
from models.tables import Upload
from models.clock import utcnow
from tus_server.tus.datastore import UploadStore, open_store
from tus_server.tus.expiry import is_expired
from tus_server.tus.headers import is_valid_id
from tus_server.tus.locks import Locker, open_locks
from tus_server.tus.s3store import S3Store

log = logging.getLogger("tusflow.cleanup")
BATCH = 500


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cleanup", help="delete expired unfinished uploads, expired partials and orphan files")
    p.add_argument("--config", help="path to config.toml")
    p.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    p.add_argument("--orphan-age", type=float, default=3600.0,
                   help="seconds a file without an upload row must be untouched before it is removed")
    p.set_defaults(func=run)


@dataclass
class Report:
    expired: int = 0
    partials: int = 0
    busy: int = 0
    orphans: int = 0

    def line(self, dry_run: bool) -> str:
        verb = "would remove" if dry_run else "removed"
        return (f"tusflow cleanup: {verb} {self.expired} expired uploads, {self.partials} expired partials, "
                f"{self.orphans} orphan files; skipped {self.busy} busy")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    report = cleanup(settings, dry_run=args.dry_run, orphan_age=args.orphan_age)
    print(report.line(args.dry_run), flush=True)
    return 0


def cleanup(settings: Settings, *, dry_run: bool = False, orphan_age: float = 3600.0,
            now: datetime | None = None) -> Report:
    layout = Layout(settings.data_dir)
    layout.ensure()
    engine = make_engine(settings)
    executor = ThreadPoolExecutor(2, "tusflow-cleanup")
    try:
        init_db(engine)
        store = open_store(settings, layout, executor)
        locks = open_locks(settings, layout, None, 0)  # the servers' own: file or Redis
        report = Report()
        now = now or utcnow()
        _expired_uploads(engine, layout, store, locks, now, dry_run, report)
        _orphans(engine, layout, locks, orphan_age, dry_run, report)
        if isinstance(store, S3Store):
            _stored_orphans(engine, store, locks, orphan_age, dry_run, report)
        return report
    finally:
        executor.shutdown(wait=True)
        engine.dispose()


def _expired_uploads(engine, layout: Layout, store: UploadStore, locks: Locker,  # type: ignore[no-untyped-def]
                     now: datetime, dry_run: bool, report: Report) -> None:
    seen: set[str] = set()
    while True:
        with Session(engine) as s:
            query = (select(Upload.id).where(Upload.expires_at.is_not(None), Upload.expires_at < now)  # type: ignore[union-attr]
                     .order_by(Upload.expires_at).limit(BATCH + len(seen)))  # type: ignore[arg-type]
            ids = [i for i in s.exec(query) if i not in seen]
        if not ids:
            return
        for upload_id in ids[:BATCH]:
            seen.add(upload_id)
            with locks.try_hold(upload_id) as held:
                if not held:
                    report.busy += 1
                    continue
                with Session(engine) as s:
                    upload = s.get(Upload, upload_id)
                    if upload is None or not is_expired(upload, now):  # renewed or gone meanwhile
                        continue
                    partial = upload.concat == "partial" and upload.is_complete
                    if not dry_run:
                        s.delete(upload)
                        s.commit()
                        store.purge(upload)  # bytes, tails, stages; S3: the multipart upload aborted
                if partial:
                    report.partials += 1
                else:
                    report.expired += 1
                log.info("upload=%s expired at %s: %s", upload_id, upload.expires_at,
                         "would delete" if dry_run else "deleted")
            if not dry_run:
                for suffix in (".lock", ".release"):
                    (layout.locks / f"{upload_id}{suffix}").unlink(missing_ok=True)


def _orphans(engine, layout: Layout, locks: Locker, orphan_age: float,  # type: ignore[no-untyped-def]
             dry_run: bool, report: Report) -> None:
    cutoff = time.time() - orphan_age
    candidates: dict[str, list[Path]] = {}
    for folder in (layout.uploads, layout.locks):
        for path in folder.iterdir():
            upload_id = path.name.split(".", 1)[0]
            if not is_valid_id(upload_id) or not path.is_file():
                continue
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            candidates.setdefault(upload_id, []).append(path)
    for upload_id, paths in candidates.items():
        with Session(engine) as s:
            upload = s.get(Upload, upload_id)
        if upload is not None:
            # A row owns these: only a left-over stage, or the lock files of a finished upload
            # (nothing writes to it any more), are clutter.
            stale = [p for p in paths if p.name.endswith(".stage")
                     or (upload.is_complete and p.parent == layout.locks)]
            if not stale:
                continue
            paths = stale
        with locks.try_hold(upload_id) as held:
            if not held:
                report.busy += 1
                continue
            for path in paths:
                report.orphans += 1
                log.info("orphan file %s: %s", path, "would delete" if dry_run else "deleted")
                if not dry_run:
                    path.unlink(missing_ok=True)
        if not dry_run and (upload is None or upload.is_complete):
            (layout.locks / f"{upload_id}.lock").unlink(missing_ok=True)


def _stored_orphans(engine, store: S3Store, locks: Locker, orphan_age: float,  # type: ignore[no-untyped-def]
                    dry_run: bool, report: Report) -> None:
    """What the S3 store holds for no row (a process killed between creating the multipart
    upload and its row, or while assembling a final), and checksum stages a killed PATCH left."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=orphan_age)
    for upload_id, kind, key in list(store.strays(cutoff)):
        if not is_valid_id(upload_id):
            continue
        with Session(engine) as s:
            upload = s.get(Upload, upload_id)
        if upload is not None and ".stage-" not in key:
            continue
        with locks.try_hold(upload_id) as held:
            if not held:
                report.busy += 1
                continue
            report.orphans += 1
            log.info("orphan %s %s: %s", kind, key, "would delete" if dry_run else "deleted")
            if not dry_run:
                store.remove_stray(kind, key)
