"""Engines and schema migrations for the warehouse (SQLite by default, PostgreSQL in production).

Every upgrade runs in ONE database transaction, the whole chain of revisions included, on SQLite as
on PostgreSQL: a process killed mid-upgrade leaves the schema as it was, never half-made. (pysqlite
opens a transaction only before INSERT/UPDATE/DELETE, so CREATE TABLE statements would each commit
on their own; `migration_transaction` turns that off and issues its own `BEGIN IMMEDIATE`, which
also makes concurrent first uses of one SQLite file wait for each other.)

A warehouse left half-made by an older version that migrated without a transaction (some tables of
the first revision, no revision recorded) is recognised by comparing those tables with the first
revision's schema and repaired on the next upgrade: the empty half-made tables are dropped and the
whole chain runs again. Anything else that stops an upgrade is a `WarehouseSchemaError` naming why.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_engines: dict[str, sa.Engine] = {}
_upgraded: set[str] = set()
_lock = threading.Lock()


class WarehouseConfigError(ValueError):
    """A warehouse URL that cannot be used; the message says how to fix it."""


class WarehouseSchemaError(RuntimeError):
    """The warehouse's schema cannot be brought to head; the message names the cause and the fix.
    Nothing was changed (an upgrade is one transaction)."""


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


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*=\s*(?:None|[\"']([^\"']+)[\"'])", re.M)


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration's revision, read from the `revision` and `down_revision` lines of the
    migration files: the one no other file revises. (Alembic's own ScriptDirectory imports every
    migration module, pandas and the column blocks with them: about 0.5 s a read-only command does
    not need to pay. A test checks both agree.)"""
    revisions, revised = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            if value:
                (revisions if name == "revision" else revised).add(value)
    heads = revisions - revised
    if len(heads) != 1:
        raise WarehouseSchemaError(f"the warehouse migrations in {MIGRATIONS_DIR} have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def _recorded_revision(conn: sa.Connection) -> str | None:
    """The revision the warehouse records in Alembic's `alembic_version` table (None: no table or
    no row), read with one query rather than through Alembic's MigrationContext."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    rows = [row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    if len(rows) > 1:
        raise WarehouseSchemaError(f"the warehouse records {len(rows)} schema revisions ({sorted(rows)}); expected one")
    return rows[0] if rows else None


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return _recorded_revision(conn)


@contextmanager
def migration_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection inside one real transaction, DDL included, committed when the block ends
    without an error and rolled back otherwise. On SQLite: pysqlite's own transaction handling
    off (it would let each CREATE TABLE commit by itself) and `BEGIN IMMEDIATE` (the write lock
    at once: a second migrator waits here, then finds the schema at head)."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            with conn.begin():
                yield conn
            return
        dbapi = conn.connection.driver_connection
        saved = dbapi.isolation_level
        dbapi.isolation_level = None  # no open transaction yet: nothing is committed by this
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        finally:
            if conn.in_transaction():
                conn.rollback()
            dbapi.isolation_level = saved


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Apply the Alembic migrations up to `revision` in one transaction (a no-op when already there),
    first repairing a warehouse half-made by an older version (`repair_half_made`). Returns the
    revision. Raises WarehouseSchemaError, naming the cause, when the schema cannot be upgraded."""
    if revision == "head" and current_revision(engine) == head_revision():
        return head_revision()
    from alembic import command

    cfg = _alembic_config()
    try:
        with migration_transaction(engine) as conn:
            repair_half_made(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except WarehouseSchemaError:
        raise
    except sa.exc.OperationalError as exc:
        # another process may have migrated the same file at the same moment
        if current_revision(engine) != head_revision():
            raise _schema_error(engine, exc) from exc
    except sa.exc.DBAPIError as exc:
        raise _schema_error(engine, exc) from exc
    return current_revision(engine)


def _schema_error(engine: sa.Engine, exc: sa.exc.DBAPIError) -> Exception:
    """The upgrade's failure as a WarehouseSchemaError naming its cause; a warehouse that cannot be
    reached (or written: disk full, read-only) keeps its DBAPIError, which callers report as such."""
    from market_pipeline.warehouse.faults import describe, unusable

    if unusable(exc):
        return exc
    try:
        current = current_revision(engine)
    except sa.exc.DBAPIError:
        current = "unknown"
    return WarehouseSchemaError(
        f"the warehouse schema could not be upgraded from revision {current} to {head_revision()}: {describe(exc)}; "
        "nothing was changed. If this database holds tables of another application under the same names, "
        "point MARKET_PIPELINE_DB_URL at a database of its own"
    )


# ---- warehouses half-made by older versions ---------------------------------------------------
@lru_cache(maxsize=1)
def first_revision_schema() -> dict[str, tuple]:
    """table -> its shape (see `_shape`) as the first revision creates it, read back from a
    scratch in-memory SQLite database that revision was run on."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    (base,) = script.get_bases()
    scratch = sa.create_engine("sqlite://")
    try:
        with scratch.begin() as conn:
            with Operations.context(MigrationContext.configure(conn)):
                script.get_revision(base).module.upgrade()
            inspector = sa.inspect(conn)
            return {table: _shape(inspector, table) for table in inspector.get_table_names()}
    finally:
        scratch.dispose()


def _shape(inspector, table: str) -> tuple:
    """What identifies a table whatever the database: its columns (name, nullable) in order and
    its primary key."""
    columns = tuple((c["name"], bool(c["nullable"])) for c in inspector.get_columns(table))
    key = tuple(inspector.get_pk_constraint(table).get("constrained_columns") or ())
    return columns, key


def half_made_tables(conn: sa.Connection) -> list[str]:
    """The first revision's tables present in a warehouse that records no revision: what an
    older version killed during its very first upgrade left behind (empty: [] for a new or a
    complete warehouse). Raises WarehouseSchemaError when such tables differ from the first
    revision's or hold rows: then they were not left by an interrupted upgrade."""
    if _recorded_revision(conn) is not None:
        return []
    expected = first_revision_schema()
    inspector = sa.inspect(conn)
    present = sorted(set(inspector.get_table_names()) & set(expected))
    where = conn.engine.url.render_as_string(hide_password=True)
    for table in present:
        if _shape(inspector, table) != expected[table]:
            raise WarehouseSchemaError(
                f"the warehouse {where} has a table {table} but no schema revision recorded, and its columns are "
                "not those market_pipeline creates: it was not made by market_pipeline; point "
                "MARKET_PIPELINE_DB_URL at a new database (or move that table away)"
            )
        rows = conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar()
        if rows:
            raise WarehouseSchemaError(
                f"the warehouse {where} has a table {table} with {rows} row(s) but no schema revision recorded: "
                "it was not left by an interrupted upgrade, and is not repaired automatically; record its "
                "revision with `alembic stamp` if it is a market_pipeline warehouse, or point MARKET_PIPELINE_DB_URL "
                "at a new database"
            )
    return present


def repair_half_made(conn: sa.Connection) -> list[str]:
    """Drop the empty tables an interrupted first upgrade of an older version left (`half_made_tables`),
    inside the caller's transaction, so the upgrade that follows creates them again. Returns them."""
    tables = half_made_tables(conn)
    if tables:
        import logging

        logging.getLogger("market_pipeline.warehouse").warning(
            "the warehouse was left half-made by an interrupted first upgrade (tables %s, no revision "
            "recorded): recreating its schema", ", ".join(tables),
        )
        for table in tables:
            conn.execute(sa.text(f"DROP TABLE {conn.dialect.identifier_preparer.quote(table)}"))
    return tables
