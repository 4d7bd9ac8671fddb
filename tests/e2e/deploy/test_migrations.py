"""Migrations build the schema the models describe, on SQLite and on a real PostgreSQL.

The drift test (``test_migrations_match_models``) is the one to watch when changing a model:
it fails until ``tusflow migrate --autogenerate "..."`` has written the matching revision.
"""

from __future__ import annotations

import multiprocessing
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, select

from models import migrations
from models.config import Settings
from models.db import engine_url, init_db, make_engine, migrate, session_scope
from models.tables import Media, Timestamp, Upload
from tests.support.procs import TUSFLOW, write_config
from tus_server.cli import main

GiB = 1024**3


def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings().replace(storage={"data_dir": tmp_path / "var"})


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for an empty database of each kind."""
    if request.param == "postgres":
        return sqlite_settings(tmp_path).replace(database={"url": request.getfixturevalue("postgres_url")})
    return sqlite_settings(tmp_path)


@pytest.fixture
def engine(db_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(db_settings)
    yield engine
    engine.dispose()


def table_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_migrations_match_models(engine: Engine) -> None:
    before, after = migrations.upgrade(engine)
    assert before is None and after == migrations.head_revision()
    diffs = migrations.schema_diff(engine)
    assert diffs == [], (
        "models and migrations differ; write a revision with "
        f"`tusflow migrate --autogenerate \"what changed\"` and review it:\n{diffs}")
    assert set(SQLModel.metadata.tables) <= table_names(engine)


def test_downgrade_to_base_and_up_again(engine: Engine) -> None:
    migrations.upgrade(engine)
    before, after = migrations.downgrade(engine, "base")
    assert (before, after) == (migrations.head_revision(), None)
    assert table_names(engine) <= {"alembic_version"}
    migrations.upgrade(engine)
    assert migrations.schema_diff(engine) == []


def test_revisions_form_one_numbered_chain() -> None:
    script = migrations.script_directory()
    revisions = list(script.walk_revisions("base", "heads"))
    assert len(script.get_heads()) == 1
    files = sorted(p for p in migrations.VERSIONS_DIR.glob("*.py") if p.name != "__init__.py")
    assert len(files) == len(revisions)
    chain = {r.revision: r.down_revision for r in revisions}
    for number, path in enumerate(files, start=1):
        match = re.match(r"(\d{4})_\w+\.py$", path.name)
        assert match, f"{path.name}: name it NNNN_what.py"
        assert match.group(1) == f"{number:04d}", f"{path.name}: numbers must follow on"
        assert chain[match.group(1)] == (None if number == 1 else f"{number - 1:04d}")


def test_every_timestamp_column_is_timezone_aware() -> None:
    migrations.load_models()
    naive = [f"{t.name}.{c.name}" for t in SQLModel.metadata.tables.values() for c in t.columns
             if isinstance(c.type, sa.DateTime) and not c.type.timezone]
    assert naive == [], f"use sa_type=models.tables.Timestamp for {naive} (timestamptz on PostgreSQL)"


def test_values_round_trip(engine: Engine) -> None:
    """Sizes past 2 GiB and aware timestamps in any zone keep their value on both databases."""
    init_db(engine)
    local = timezone(timedelta(hours=2))
    created = datetime(2026, 3, 29, 1, 30, 15, 250000, tzinfo=local)
    with session_scope(engine) as s:
        s.add(Upload(id="u1", length=20 * GiB, offset=5 * GiB + 7, created_at=created, updated_at=created,
                     expires_at=created + timedelta(days=1)))
        s.add(Media(id="u1", size=20 * GiB, created_at=created, updated_at=created))
    with session_scope(engine) as s:
        upload = s.get(Upload, "u1")
        media = s.get(Media, "u1")
        assert upload is not None and media is not None
        assert (upload.length, upload.offset, media.size) == (20 * GiB, 5 * GiB + 7, 20 * GiB)
        got = upload.created_at
        if engine.dialect.name == "postgresql":
            assert got.utcoffset() == timedelta(0), "sessions run in UTC"
        else:  # SQLite keeps the UTC wall time without a zone; readers treat naive as UTC
            got = got.replace(tzinfo=timezone.utc)
        assert got == created
        later = s.exec(select(Upload).where(Upload.expires_at > created + timedelta(hours=23))).all()
        assert [u.id for u in later] == ["u1"]


def test_startup_refuses_models_without_migration(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    init_db(engine)
    extended = sa.MetaData()
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(extended)
    sa.Table("extra_thing", extended, sa.Column("id", sa.Integer, primary_key=True))
    extended.tables["upload"].append_column(sa.Column("extra_col", sa.Integer))
    monkeypatch.setattr(migrations, "target_metadata", lambda: extended)
    with pytest.raises(migrations.SchemaError) as info:
        init_db(engine)
    assert "table extra_thing" in str(info.value)
    assert "column upload.extra_col" in str(info.value)
    assert "--autogenerate" in str(info.value)


def test_autogenerate_writes_the_next_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, scratch, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", scratch)
    monkeypatch.setattr(migrations, "VERSIONS_DIR", scratch / "versions")
    assert migrations.autogenerate("nothing") is None
    extended = sa.MetaData()
    for table in migrations.target_metadata().tables.values():
        table.to_metadata(extended)
    sa.Table("extra_thing", extended, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("size", sa.BigInteger, nullable=False), sa.Column("at", Timestamp))
    monkeypatch.setattr(migrations, "target_metadata", lambda: extended)

    expected = migrations.next_revision_id()
    path = migrations.autogenerate("add extra thing")
    assert path is not None and path.name == f"{expected}_add_extra_thing.py"
    text = path.read_text()
    assert "create_table('extra_thing'" in text and f"revision: str = '{expected}'" in text
    assert "sa.Column('at', sa.DateTime(timezone=True)" in text and "models." not in text

    engine = make_engine(sqlite_settings(tmp_path))
    try:
        init_db(engine)  # raises if the new revision did not create the table
        assert "extra_thing" in table_names(engine)
        assert migrations.schema_diff(engine) == []
    finally:
        engine.dispose()


def test_database_made_by_create_all_is_adopted(tmp_path: Path) -> None:
    """A SQLite file from before migrations existed: the first tables (exactly the schema of
    the initial revision, whatever columns later revisions added) and no ``alembic_version``."""
    engine = make_engine(sqlite_settings(tmp_path))
    try:
        migrations.upgrade(engine, migrations.INITIAL_REVISION)
        with engine.begin() as c:
            c.execute(sa.text("DROP TABLE alembic_version"))
            for name in [n for n in inspect(c).get_table_names() if n not in ("upload", "media")]:
                c.execute(sa.text(f"DROP TABLE {name}"))
            old = sa.Table("upload", sa.MetaData(), autoload_with=c)
            values = Upload(id="old", length=10, offset=4).model_dump()
            c.execute(old.insert().values({k: v for k, v in values.items() if k in old.c}))
        assert migrations.current_revision(engine) is None
        init_db(engine)
        assert migrations.current_revision(engine) == migrations.head_revision()
        with session_scope(engine) as s:
            upload = s.get(Upload, "old")
            assert upload is not None and upload.offset == 4
        assert migrations.schema_diff(engine) == []
    finally:
        engine.dispose()


def run_migrate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TUSFLOW, "migrate", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=60)


def migrate_in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command's own parser and handler, without a process start per call."""
    code = main(["migrate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _migrate_after(barrier: Any, settings: Settings) -> tuple[str | None, str | None]:
    barrier.wait(30)
    return migrate(settings)


def test_concurrent_migrators_do_not_collide(db_settings: Settings) -> None:
    """Servers and workers starting together all migrate; the lock makes them take turns."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Manager().Barrier(4)
    with ctx.Pool(4) as pool:
        results = pool.starmap(_migrate_after, [(barrier, db_settings)] * 4, chunksize=1)
    head = migrations.head_revision()
    assert sorted(results, key=str) == sorted([(None, head)] + [(head, head)] * 3, key=str), results
    engine = make_engine(db_settings)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
    finally:
        engine.dispose()


def test_migrate_command(postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "config.toml", {"storage": {"data_dir": str(tmp_path / "var")},
                                                     "database": {"url": postgres_url}})
    head = migrations.head_revision()
    code, out, _ = migrate_in_process(capsys, "--config", str(config), "--current")
    assert code == 1 and "database revision: none" in out
    code, out, err = migrate_in_process(capsys, "--config", str(config), "--revision", "0001")
    assert code == 0 and "migrated from empty to 0001" in out, err

    real = run_migrate(config)  # the installed console script, as compose and supervisor run it
    assert real.returncode == 0 and f"migrated from 0001 to {head}" in real.stdout, real.stderr
    assert not (tmp_path / "var" / "tusflow.db").exists(), "used SQLite instead of the URL"

    code, out, _ = migrate_in_process(capsys, "--config", str(config))
    assert code == 0 and f"already at revision {head}" in out
    code, out, _ = migrate_in_process(capsys, "--config", str(config), "--current")
    assert code == 0 and f"database revision: {head}; newest: {head}" in out
    code, out, err = migrate_in_process(capsys, "--config", str(config), "--downgrade", "base")
    assert code == 0 and f"migrated from {head} to empty" in out, err
    code, _, err = migrate_in_process(capsys, "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "config file not found" in err


def test_migrate_reports_unreachable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.postgres import free_port
    config = write_config(tmp_path / "config.toml", {"storage": {"data_dir": str(tmp_path / "var")}, "database": {
        "url": f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing?connect_timeout=2"}})
    code, _, err = migrate_in_process(capsys, "--config", str(config))
    assert code == 1
    assert "migration failed" in err and "Traceback" not in err


def test_postgres_urls_use_psycopg(tmp_path: Path) -> None:
    base = sqlite_settings(tmp_path)
    for given in ("postgres://u:p@db:5432/tusflow", "postgresql://u:p@db:5432/tusflow",
                  "postgresql+psycopg://u:p@db:5432/tusflow"):
        assert engine_url(base.replace(database={"url": given})) == "postgresql+psycopg://u:p@db:5432/tusflow"
    assert engine_url(base).startswith("sqlite:///")
    engine = make_engine(base.replace(database={"url": "postgresql://u:p@db:5432/tusflow"}))
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool.size() == 5  # type: ignore[attr-defined]
    finally:
        engine.dispose()
