"""Database engine and sessions (SQLite file by default, PostgreSQL by URL)."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from models import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from models.config import Settings


def engine_url(settings: Settings) -> str:
    """The configured URL, with bare ``postgres://``/``postgresql://`` sent to psycopg 3: it
    is the driver installed, and SQLAlchemy would otherwise look for psycopg2."""
    url = settings.database_url
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _enable_wal(cur: sqlite3.Cursor, attempts: int = 100) -> None:
    """WAL is a property of the database file, so only the first connection ever switches it.
    That switch needs the file to itself and SQLite does not wait for it (no busy handler), so
    processes opening a new database together (server and workers starting at once) retry."""
    for attempt in range(attempts):
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def make_engine(settings: Settings) -> Engine:
    """Create the engine; SQLite gets WAL so several server and worker processes can share it."""
    url = engine_url(settings)
    if url.startswith("sqlite"):
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # Each server or worker process keeps its own small pool: the server runs blocking queries
    # on an 8-thread executor, so 5 + 10 overflow covers it without exhausting max_connections
    # when many processes share one PostgreSQL. pre_ping and recycle survive server restarts
    # and idle-connection reapers (pgbouncer, cloud proxies).
    engine = create_engine(url, pool_size=5, max_overflow=10, pool_timeout=30, pool_recycle=1800,
                           pool_pre_ping=True,
                           connect_args={"connect_timeout": 10, "application_name": "tusflow"})
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _utc(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # timestamptz comes back in the session time zone; UTC keeps it like SQLite's.
            with dbapi_conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
            dbapi_conn.commit()

    return engine


def never_waits(engine: Engine) -> bool:
    """True when a read does not wait for writers: a SQLite file in WAL mode (a reader sees the
    last commit while a writer works). Without WAL (a filesystem that refuses it) a reader may
    wait up to busy_timeout, and a server database is a network round trip away."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return False
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    return str(mode).lower() == "wal"


def init_db(engine: Engine) -> None:
    """Bring the schema to the newest migration (no-op when it is there already).

    Migrations, not create_all, build every database, so one made by ``tusflow serve`` can be
    upgraded later like any other. Raises ``models.migrations.SchemaError`` when a model table
    has no migration yet."""
    from models.migrations import ensure_schema
    ensure_schema(engine)


def migrate(settings: Settings, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the configured database to ``revision``; return (before, after). For
    ``tusflow migrate`` and ``tusflow up``, which run it once before starting anything."""
    from models.migrations import ensure_schema, upgrade
    engine = make_engine(settings)
    try:
        return ensure_schema(engine) if revision == "head" else upgrade(engine, revision)
    finally:
        engine.dispose()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
