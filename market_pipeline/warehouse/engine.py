"""Engines and schema migrations for the warehouse (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_engines: dict[str, sa.Engine] = {}
_upgraded: set[str] = set()
_lock = threading.Lock()


class WarehouseConfigError(ValueError):
    """A warehouse URL that cannot be used; the message says how to fix it."""


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` as psycopg2 URLs (SQLAlchemy 2.1 would pick psycopg 3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def _make_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise WarehouseConfigError(
            "MARKET_PIPELINE_DB_URL is not a database URL: use sqlite:///path/to/file.sqlite or "
            "postgresql+psycopg2://user:password@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database or ""
        if parsed.query.get("uri") == "true" and path.startswith("file:"):
            path = path[len("file:"):]  # sqlite:///file:/path?mode=ro&uri=true: a SQLite URI (read-only)
        if path and path != ":memory:" and parsed.query.get("mode") != "ro":
            _sqlite_folder(Path(path))
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    if backend == "postgresql":
        # defaults for libpq; the same keys in the URL's query string win
        defaults = {
            "connect_timeout": 10,  # an unreachable server fails the connection in 10 s, not minutes
            "application_name": "market_pipeline",
            # a server or network that dies under an open connection (mid-write) is noticed within
            # about a minute instead of leaving the run blocked on a dead socket
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        return sa.create_engine(
            url,
            # a pooled connection the server dropped (restart, failover, idle timeout) is detected
            # and replaced when checked out, so a run after a server restart just works
            pool_pre_ping=True,
            pool_recycle=1800,  # and none outlives proxies or firewalls that cut idle connections
            pool_size=5,
            max_overflow=5,
            connect_args={k: v for k, v in defaults.items() if k not in parsed.query},
        )
    raise WarehouseConfigError(
        f"unsupported warehouse database {backend!r}: use sqlite:/// or postgresql+psycopg2://"
    )


def _cached_engine(url: str) -> sa.Engine:
    """The process's one engine for a normalised `url` (the caller holds `_lock`)."""
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = _make_engine(url)
    return engine


def open_engine(url: str) -> sa.Engine:
    """The process's engine for `url`, without migrating (read-only use)."""
    url = normalize_url(url)
    with _lock:
        return _cached_engine(url)


def _sqlite_folder(path: Path) -> None:
    """Create the folder of a SQLite warehouse only inside the project's home folder (the default
    warehouse); anywhere else it must exist, so a mistyped path never creates an empty warehouse."""
    from market_pipeline import settings

    folder = path.expanduser().resolve().parent
    if folder.is_dir():
        return
    home = settings.home_dir()
    if folder == home or home in folder.parents:
        folder.mkdir(parents=True, exist_ok=True)
        return
    raise WarehouseConfigError(
        f"MARKET_PIPELINE_DB_URL: the folder {folder} of the SQLite warehouse does not exist: create it "
        f"(mkdir -p {folder}) or point MARKET_PIPELINE_DB_URL at an existing folder"
    )


def get_engine(url: str) -> sa.Engine:
    """One engine per URL per process, with the schema upgraded to head on first use."""
    url = normalize_url(url)
    with _lock:
        engine = _cached_engine(url)
        if url not in _upgraded:
            upgrade(engine)
            _upgraded.add(url)
    return engine


def dispose_engine(url: str) -> None:
    url = normalize_url(url)
    with _lock:
        engine = _engines.pop(url, None)
        _upgraded.discard(url)
    if engine is not None:
        engine.dispose()


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Apply the Alembic migrations up to `revision`; a no-op when already there. Returns the revision."""
    if revision == "head" and current_revision(engine) == head_revision():
        return head_revision()
    cfg = _alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except sa.exc.OperationalError:
        # another process may have migrated the same SQLite file at the same moment
        if current_revision(engine) != head_revision():
            raise
    return current_revision(engine)
