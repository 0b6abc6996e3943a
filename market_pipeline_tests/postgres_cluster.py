"""A throwaway PostgreSQL cluster for tests, plus a pytest plugin.

``PostgresCluster`` runs ``initdb`` into a fresh temporary directory, starts a
server on a free loopback port (durability switched off, so it is fast) and
removes everything again on ``stop()``. When the test process runs as root the
server binaries (which refuse to run as root) are run as the ``postgres`` OS
user and the temporary directory is handed to that user.

Plugin fixtures (register with ``pytest_plugins = ["market_pipeline_tests.postgres_cluster"]``
in the root conftest.py):

* ``postgres_cluster`` (session): one running cluster for the whole session.
  Skips when no server binaries are installed, unless ``CI=true`` where that is
  a failure.
* ``postgres_url`` (function): a fresh, uniquely named database on that
  cluster; its SQLAlchemy URL is returned and it is dropped afterwards.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Iterator, Optional

import pytest

__all__ = [
    "PostgresCluster",
    "PostgresClusterError",
    "find_bindir",
    "require_bindir",
    "postgres_cluster",
    "postgres_url",
]

OS_USER = "postgres"
DB_USER = "postgres"
HOST = "127.0.0.1"

_SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
    "-c full_page_writes=off -c max_connections=200"
)
_VALID_DBNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresClusterError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped."""


def _has_server_binaries(bindir: Optional[str]) -> bool:
    if not bindir:
        return False
    return all(
        os.path.isfile(os.path.join(bindir, exe)) and os.access(os.path.join(bindir, exe), os.X_OK)
        for exe in ("initdb", "pg_ctl", "postgres")
    )


def _version_key(path: str) -> tuple:
    # /usr/lib/postgresql/<version>/bin -> numeric sort key for <version>
    version = os.path.basename(os.path.dirname(path))
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.\-]", version))


def find_bindir() -> Optional[str]:
    """Directory holding initdb/pg_ctl/postgres, or None.

    Order: ``pg_config --bindir`` (if it has initdb), then initdb on PATH, then
    the newest ``/usr/lib/postgresql/*/bin``.
    """
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if _has_server_binaries(out):
            return out

    initdb = shutil.which("initdb")
    if initdb:
        # Follow symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb)
        for candidate in (os.path.dirname(initdb), os.path.dirname(os.path.realpath(initdb))):
            if _has_server_binaries(candidate):
                return candidate

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if _has_server_binaries(candidate):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _clean_env() -> dict:
    """Environment for the server tools without PG* variables that could redirect them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class PostgresCluster:
    """A private PostgreSQL server in a temporary directory.

    >>> cluster = PostgresCluster()
    >>> cluster.start()
    >>> url = cluster.create_database("mydb")   # postgresql+psycopg2://postgres@127.0.0.1:PORT/mydb
    >>> cluster.stop()
    """

    def __init__(self, bindir: Optional[str] = None) -> None:
        self.bindir: Optional[str] = bindir or find_bindir()
        self.base_dir: Optional[str] = None
        self.data_dir: Optional[str] = None
        self.socket_dir: Optional[str] = None
        self.log_file: Optional[str] = None
        self._port: Optional[int] = None
        self._running = False
        self._as_other_user = os.geteuid() == 0
        self._uid: Optional[int] = None
        self._gid: Optional[int] = None

    # ------------------------------------------------------------------ properties
    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresClusterError("cluster has not been started")
        return self._port

    @property
    def user(self) -> str:
        return DB_USER

    @property
    def running(self) -> bool:
        return self._running

    # ------------------------------------------------------------------ helpers
    def _exe(self, name: str) -> str:
        assert self.bindir is not None
        return os.path.join(self.bindir, name)

    def _run(self, args: list, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        from market_pipeline_tests.waiting import scaled

        timeout = scaled(timeout)  # initdb and pg_ctl take longer on a busy machine
        kwargs: dict = {}
        if self._as_other_user:
            kwargs.update(user=self._uid, group=self._gid, extra_groups=[])
        try:
            proc = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_clean_env(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresClusterError(
                f"{os.path.basename(args[0])} timed out after {timeout}s\n{self._log_tail()}"
            ) from exc
        if check and proc.returncode != 0:
            raise PostgresClusterError(
                f"{' '.join(shlex.quote(str(a)) for a in args)} failed (exit {proc.returncode})\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n{self._log_tail()}"
            )
        return proc

    def _log_tail(self, lines: int = 40) -> str:
        if not self.log_file or not os.path.exists(self.log_file):
            return "(no server log)"
        try:
            with open(self.log_file, errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError as exc:
            return f"(server log unreadable: {exc})"
        return "server log tail:\n" + "".join(tail)

    def _port_clash_since(self, offset: int) -> bool:
        try:
            with open(self.log_file, errors="replace") as f:
                f.seek(offset)
                text = f.read()
        except OSError:
            return False
        return "could not bind" in text or "already in use" in text

    def _is_our_postmaster(self, pid: int) -> bool:
        """True if ``pid`` is alive and is the postmaster of this data dir (guards against pid reuse)."""
        if not _pid_alive(pid):
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            return False
        return bool(self.data_dir) and self.data_dir in cmdline

    def _postmaster_pid(self) -> Optional[int]:
        if not self.data_dir:
            return None
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def _make_base_dir(self) -> None:
        parent = tempfile.gettempdir()
        if self._as_other_user:
            try:
                import pwd

                pw = pwd.getpwnam(OS_USER)
            except KeyError as exc:
                raise PostgresClusterError(
                    f"running as root but there is no '{OS_USER}' OS user to run the server as"
                ) from exc
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            # The postgres user must be able to traverse the parent directory.
            if not os.access(parent, os.X_OK) or (os.stat(parent).st_mode & 0o001) == 0:
                parent = "/tmp"
        # Keep the path short: unix socket paths are limited to ~107 bytes.
        self.base_dir = tempfile.mkdtemp(prefix="pgtest-", dir=parent)
        self.data_dir = os.path.join(self.base_dir, "data")
        self.socket_dir = os.path.join(self.base_dir, "sock")
        self.log_file = os.path.join(self.base_dir, "server.log")
        os.mkdir(self.socket_dir, 0o700)
        if self._as_other_user:
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, self._uid, self._gid)

    def _pg_ctl_start(self) -> None:
        opts = f"-p {self.port} -k {shlex.quote(self.socket_dir)} {_SERVER_OPTIONS}"
        self._run(
            [self._exe("pg_ctl"), "start", "-D", self.data_dir, "-w", "-t", "60", "-l", self.log_file, "-o", opts],
            timeout=90,
        )
        self._running = True

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "PostgresCluster":
        """initdb into a new temp dir and start the server. Returns self."""
        if self._running:
            return self
        if not _has_server_binaries(self.bindir):
            raise PostgresClusterError(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install postgresql-15"
            )
        self._make_base_dir()
        atexit.register(self.stop)
        try:
            self._run(
                [
                    self._exe("initdb"), "-D", self.data_dir, "-A", "trust", "-U", DB_USER,
                    "--no-sync", "-E", "UTF8", "--locale=C",
                ],
                timeout=120,
            )
            for attempt in range(3):
                self._port = _free_port()
                log_offset = os.path.getsize(self.log_file) if os.path.exists(self.log_file) else 0
                try:
                    self._pg_ctl_start()
                    return self
                except PostgresClusterError:
                    # Another process may have grabbed the port between probe and bind: retry.
                    if attempt == 2 or not self._port_clash_since(log_offset):
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (immediate) and remove the temp dir. Idempotent."""
        try:
            atexit.unregister(self.stop)
        except Exception:  # pragma: no cover
            pass
        if self.data_dir and os.path.isdir(self.data_dir):
            self._stop_server(mode="immediate")
        self._running = False
        if self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = self.data_dir = self.socket_dir = self.log_file = None

    def _stop_server(self, mode: str) -> None:
        pid = self._postmaster_pid()
        if pid is None:
            self._running = False
            return
        try:
            self._run([self._exe("pg_ctl"), "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", "60"],
                      timeout=90, check=False)
        except PostgresClusterError:
            pass
        # Belt and braces: make sure the postmaster (and so its children) is gone.
        if self._is_our_postmaster(pid):
            for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _pid_alive(pid):
                    break
        self._running = False

    def restart(self) -> None:
        """Stop the server process (keeping the data dir) and start it again on the same port."""
        if not self.data_dir:
            raise PostgresClusterError("cluster has not been started")
        self._stop_server(mode="fast")
        self._pg_ctl_start()

    # ------------------------------------------------------------------ databases
    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL for ``dbname`` on this cluster."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq/psycopg2 connection string for ``dbname``."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def _admin(self):
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                                connect_timeout=10)
        conn.autocommit = True
        return conn

    @staticmethod
    def _check_name(name: str) -> str:
        if not _VALID_DBNAME.match(name):
            raise ValueError(f"invalid database name {name!r} (use letters, digits, underscore)")
        return name

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; returns its SQLAlchemy URL."""
        self._check_name(name)
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Terminate connections to ``name`` and drop it (no error if missing)."""
        self._check_name(name)
        self.kill_connections(name)
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()

    def kill_connections(self, dbname: str, timeout: float = 10.0) -> int:
        """pg_terminate_backend every other backend connected to ``dbname``.

        Waits until they have gone; returns how many were terminated.
        """
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                )
                pids = [r[0] for r in cur.fetchall()]
                if pids:
                    cur.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) AS p", (pids,))
                    deadline = time.monotonic() + timeout
                    while True:
                        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s::int[])", (pids,))
                        if cur.fetchone()[0] == 0 or time.monotonic() > deadline:
                            break
                        time.sleep(0.02)
        finally:
            conn.close()
        return len(pids)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "PostgresCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self._running else "stopped"
        return f"<PostgresCluster {state} dir={self.base_dir}>"


# ---------------------------------------------------------------------- pytest plugin
def _is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_bindir() -> str:
    """The server bindir, else skip the test -- or fail it when CI=true."""
    bindir = find_bindir()
    if bindir is None:
        msg = (
            "PostgreSQL server binaries not found (install postgresql-15; looked at "
            "`pg_config --bindir`, initdb on PATH and /usr/lib/postgresql/*/bin)"
        )
        if _is_ci():
            pytest.fail(msg + " -- CI=true, so PostgreSQL tests must run", pytrace=False)
        pytest.skip(msg)
    return bindir


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole test session."""
    cluster = PostgresCluster(require_bindir())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, uniquely named database for one test; yields its SQLAlchemy URL."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_cluster.create_database(name)
    try:
        yield url
    finally:
        if postgres_cluster.running:
            postgres_cluster.drop_database(name)


# ---------------------------------------------------------------------- Dagster storage on the cluster
DAGSTER_POSTGRES_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dagster.postgres.yaml")


class DagsterPostgresHome:
    """A DAGSTER_HOME whose dagster.yaml is the project's dagster.postgres.yaml, pointed (through the
    DAGSTER_PG_* variables in ``env``) at a fresh database on the throwaway cluster."""

    def __init__(self, cluster: PostgresCluster, home: str, dbname: str) -> None:
        self.cluster = cluster
        self.home = home
        self.dbname = dbname
        self.url = cluster.url(dbname)  # SQLAlchemy URL of Dagster's database (for inspecting it)
        self.env = {
            "DAGSTER_HOME": home,
            "DAGSTER_PG_HOST": cluster.host,
            "DAGSTER_PG_PORT": str(cluster.port),
            "DAGSTER_PG_DB": dbname,
            "DAGSTER_PG_USER": cluster.user,
            "DAGSTER_PG_PASSWORD": "",  # the throwaway cluster trusts local connections
        }


@pytest.fixture
def dagster_postgres_home(postgres_cluster: PostgresCluster, tmp_path) -> Iterator[DagsterPostgresHome]:
    """A DAGSTER_HOME with dagster.postgres.yaml and its own database on the cluster (dropped after).

    The environment is not changed: set ``.env`` (monkeypatch or a subprocess's env) to use it.
    """
    name = f"dagster_{uuid.uuid4().hex[:16]}"
    postgres_cluster.create_database(name)
    home = tmp_path / "dagster_home_pg"
    home.mkdir()
    shutil.copyfile(DAGSTER_POSTGRES_YAML, home / "dagster.yaml")
    try:
        yield DagsterPostgresHome(postgres_cluster, str(home), name)
    finally:
        if postgres_cluster.running:
            postgres_cluster.drop_database(name)
