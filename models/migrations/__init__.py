"""Schema migrations (Alembic). Every database, SQLite or PostgreSQL, is built by these scripts,
never by ``create_all``, so a database made by ``tusflow serve`` and one made by
``tusflow migrate`` are the same and later migrations apply to both.

Several processes may start at once (uvicorn workers, RQ workers, ``tusflow up``), so upgrading
holds a lock: a PostgreSQL advisory lock, or a file lock beside the SQLite file. The common
case, a database already at head, only reads ``alembic_version`` and takes no lock.

Adding a table or column: change the model, then ``tusflow migrate --autogenerate "what"``
writes ``versions/NNNN_what.py``; review it and commit it with the model.
``tests/e2e/deploy/test_migrations.py`` fails while models and migrations disagree.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import pkgutil
import re
import tempfile
from pathlib import Path
from typing import Iterator


class _OnlySteps(logging.Filter):
    """Keep alembic's "Running upgrade a -> b" lines; drop the per-connection chatter that
    every server and worker start would otherwise print."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage().startswith(("Running ", "Stamping "))  # type: ignore[arg-type]


def _quiet_alembic_logs() -> None:
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    migration = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _OnlySteps) for f in migration.filters):
        migration.addFilter(_OnlySteps())


_quiet_alembic_logs()  # before alembic is imported: its import logs too

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import MetaData, inspect, text  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402

MIGRATIONS_DIR = Path(__file__).resolve().parent
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
# The first revision; a database created by create_all before migrations existed matches it.
INITIAL_REVISION = "0001"
# pg_advisory_lock key: any constant shared by every tusflow process ("tusf" in ASCII).
PG_LOCK_KEY = 0x74757366
# Modules of the models package that define no tables.
_NOT_MODELS = {"config", "db", "layout", "migrations"}


class SchemaError(RuntimeError):
    """The database cannot be brought to the schema the code expects; the message says why."""


def load_models() -> None:
    """Import every module of ``models`` so each table is on ``SQLModel.metadata``: a table
    that nobody imported yet must still be created and compared."""
    import models
    for info in pkgutil.iter_modules(models.__path__):
        if info.name not in _NOT_MODELS and not info.name.startswith("_"):
            importlib.import_module(f"models.{info.name}")


def target_metadata() -> MetaData:
    from sqlmodel import SQLModel
    load_models()
    return SQLModel.metadata


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise SchemaError(f"migrations have {len(heads)} heads {heads}; merge them into one")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection that is the only migrator of this database until the block ends."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        with engine.connect() as conn:
            yield conn
        return
    lock_path = Path(f"{database}.migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database up to ``revision``; return (revision before, revision after)."""
    target = head_revision() if revision == "head" else revision
    before = current_revision(engine)
    if before == target:
        return before, before
    with _migration_lock(engine) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
        if before is None and inspect(conn).has_table("upload"):
            # Made by create_all before migrations existed: it is the initial schema.
            command.stamp(alembic_config(conn), INITIAL_REVISION)
            conn.commit()
        if before != target:
            command.upgrade(alembic_config(conn), revision)
            conn.commit()
        after = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
    return before, after


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    """Step the database back to ``revision`` ("base" drops everything tusflow created)."""
    with _migration_lock(engine) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
        command.downgrade(alembic_config(conn), revision)
        conn.commit()
        after = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
    return before, after


def schema_diff(engine: Engine) -> list[object]:
    """Alembic's differences between the models and the database (empty = in step)."""
    from alembic.autogenerate import compare_metadata
    metadata = target_metadata()
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


def missing_from_database(engine: Engine) -> list[str]:
    """Tables and columns the models use that the database lacks: a model changed without a
    migration. Only these are fatal at startup; subtler drift is the tests' business."""
    missing: list[str] = []
    for diff in schema_diff(engine):
        if isinstance(diff, tuple) and diff[0] == "add_table":
            missing.append(f"table {diff[1].name}")
        elif isinstance(diff, tuple) and diff[0] == "add_column":
            missing.append(f"column {diff[2]}.{diff[3].name}")
    return missing


def ensure_schema(engine: Engine) -> tuple[str | None, str | None]:
    """Upgrade to head and refuse to go on when the models need tables or columns that no
    migration creates, naming the fix. Returns (revision before, revision after)."""
    revisions = upgrade(engine)
    missing = missing_from_database(engine)
    if missing:
        raise SchemaError(f"models/ use {', '.join(missing)} but no migration creates them; "
                          "write one: tusflow migrate --autogenerate \"what changed\" "
                          "(see models/migrations/__init__.py)")
    return revisions


def next_revision_id() -> str:
    numbers = [int(m.group(1)) for p in VERSIONS_DIR.glob("*.py")
               if (m := re.match(r"(\d{4})_", p.name))]
    return f"{max(numbers, default=0) + 1:04d}"


def autogenerate(message: str) -> Path | None:
    """Write the next revision from the difference between the models and the migrations.

    Compares against a scratch SQLite database upgraded to head, so it needs no server and no
    config. Returns the new file, or None when there is nothing to migrate."""
    from sqlalchemy import create_engine
    from alembic.autogenerate import compare_metadata

    with tempfile.TemporaryDirectory(prefix="tusflow-autogen-") as tmp:
        engine = create_engine(f"sqlite:///{tmp}/scratch.db")
        try:
            upgrade(engine)
            with engine.connect() as conn:
                diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                         target_metadata())
                if not diffs:
                    return None
                before = {p.name for p in VERSIONS_DIR.glob("*.py")}
                command.revision(alembic_config(conn), message=message, autogenerate=True,
                                 rev_id=next_revision_id())
        finally:
            engine.dispose()
    created = sorted(VERSIONS_DIR / name for name in {p.name for p in VERSIONS_DIR.glob("*.py")} - before)
    return created[0] if created else None
