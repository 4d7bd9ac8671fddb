"""A throwaway PostgreSQL cluster for tests: initdb into a temporary folder, ``postgres`` on
127.0.0.1 at a free port, stopped by PID and deleted afterwards.

postgres refuses to run as root, so when the tests run as root the cluster belongs to a
dedicated system user (``tusflow-test``, created on first use; ``nobody`` if that fails). The
folder is made with ``tempfile.mkdtemp`` directly under the system temp dir because pytest's own
temp dirs are mode 700 for root and that user could not reach them.

Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the
cluster lives for one test session and speed is what matters.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CLUSTER_USER = "tusflow-test"
SUPERUSER = "postgres"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL server binaries (Debian layout), or those on PATH."""
    override = os.environ.get("TUSFLOW_TEST_PG_BIN")
    if override:
        return Path(override)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries not found (./scripts/setup installs `postgresql`; "
                       "TUSFLOW_TEST_POSTGRES=0 skips the PostgreSQL tests)")


def cluster_account() -> pwd.struct_passwd | None:
    """The account to run postgres as: None = ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(CLUSTER_USER)
    except KeyError:
        pass
    if shutil.which("useradd"):
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", CLUSTER_USER],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        try:
            return pwd.getpwnam(CLUSTER_USER)
        except KeyError:
            pass
    return pwd.getpwnam("nobody")


def free_port() -> int:
    """A port free right now. postgres cannot bind port 0, so a race is possible; start() retries."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One cluster per test session; ``create_database`` hands each test a fresh database."""

    def __init__(self, bin_dir: Path | None = None, start_timeout: float = 60.0):
        self.bin_dir = bin_dir or find_bin_dir()
        self.account = cluster_account()
        self.base = Path(tempfile.mkdtemp(prefix="tusflow-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.log = self.base / "postgres.log"
        self.port = 0
        self.popen: subprocess.Popen[bytes] | None = None
        self._counter = 0
        self._clean: list[str] = []  # emptied databases, ready to hand out again
        try:
            self.sockets.mkdir()
            self._chown(self.base)
            self._chown(self.sockets)
            self._initdb()
            self._start(start_timeout)
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------------ lifecycle
    def _chown(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _run_as(self) -> dict[str, object]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if self.account is not None:
            env["HOME"] = str(self.base)
        return env

    def _initdb(self) -> None:
        argv = [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        result = subprocess.run(argv, cwd=self.base, env=self._env(), capture_output=True, text=True,
                                timeout=120, **self._run_as())  # type: ignore[call-overload]
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def _start(self, timeout: float) -> None:
        last_error = ""
        for _ in range(5):
            self.port = free_port()
            argv = [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-k", str(self.sockets), "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "max_connections=300", "-c", "timezone=UTC", "-c", "log_min_messages=warning"]
            with open(self.log, "ab") as log:
                self.popen = subprocess.Popen(argv, cwd=self.base, env=self._env(), stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True,
                                              **self._run_as())  # type: ignore[call-overload]
            if self._wait_ready(timeout):
                return
            last_error = self.log.read_text(errors="replace")[-3000:]
            self._terminate()
            if "could not bind" not in last_error and "already in use" not in last_error:
                break
        raise RuntimeError(f"postgres did not start:\n{last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        import psycopg
        deadline = time.monotonic() + timeout
        assert self.popen is not None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                return False
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster, SIGKILL to its group if it hangs."""
        popen, self.popen = self.popen, None
        if popen is None:
            return
        if popen.poll() is None:
            os.kill(popen.pid, signal.SIGINT)
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if popen.poll() is None:
            popen.wait(5)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ databases
    def dsn(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL tusflow's ``[database] url`` takes."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database_name(self, hint: str = "t") -> str:
        self._counter += 1
        stem = re.sub(r"[^a-z0-9_]", "_", hint.lower())[:40] or "t"
        return f"t_{stem}_{os.getpid()}_{self._counter}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database, empty or as a copy of ``template``; return its SQLAlchemy URL."""
        for value in (name, template):
            if value is not None and not _NAME.match(value):
                raise ValueError(f"unsafe database name {value!r}")
        self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"unsafe database name {name!r}")
        if self.alive():
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ------------------------------------------------------------------ reuse
    # CREATE DATABASE copies every block of the template through the WAL (the better part of a
    # second on a busy machine); emptying a used database with TRUNCATE takes a few ms. So
    # databases are handed out, emptied when the test ends, and handed out again.
    def acquire(self, template: str, hint: str = "t") -> str:
        """An empty database with the template's schema; returns its name."""
        if self._clean:
            return self._clean.pop()
        name = self.new_database_name(hint)
        self.create_database(name, template=template)
        return name

    def release(self, name: str, template: str) -> None:
        """Empty the database for the next test, or drop it if its schema moved away from the
        template's (a test migrated it) or it cannot be emptied."""
        import psycopg
        if not self.alive():
            return
        try:
            with psycopg.connect(self.dsn(name), autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                if self._revision(conn) != self._template_revision(template):
                    raise LookupError("schema changed")
                tables = [row[0] for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'")]
                if tables:
                    conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)  # type: ignore[arg-type]
                                 + " RESTART IDENTITY CASCADE")
        except (LookupError, psycopg.Error):
            self.drop_database(name)
            return
        self._clean.append(name)

    @staticmethod
    def _revision(conn: object) -> list[str]:
        import psycopg
        assert isinstance(conn, psycopg.Connection)
        try:
            return sorted(row[0] for row in conn.execute("SELECT version_num FROM alembic_version"))
        except psycopg.errors.UndefinedTable:
            return []

    def _template_revision(self, template: str) -> list[str]:
        import psycopg
        with psycopg.connect(self.dsn(template), autocommit=True) as conn:
            return self._revision(conn)
