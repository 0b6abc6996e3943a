"""Dagster's SQLite event log with pooled connections (dagster.yaml `event_log_storage`).

Dagster 1.13's `SqliteEventLogStorage` builds a new SQLAlchemy engine for every connection
(`NullPool`), opens the database file, runs the statement, commits, closes the file and disposes of
the engine; closing the last connection of a WAL database checkpoints it too. A materialization
costs three such connections (run shard, index shard, tag check), a check evaluation four, so a run
that records 10,000 symbol partitions spent most of its time opening and closing SQLite files
(issue 12: 70-95 ms of bookkeeping per partition).

This subclass keeps one small pool of open connections per database file: the index shard for
the process's lifetime, the run shards of the last few runs (least recently used closed first, so
a long-lived webserver does not hold a file per run it ever showed). Statements, transactions,
the schema and everything else are Dagster's own.

The live run view: the webserver learns of new events from a watchdog on the run's `<run_id>.db`
file, which fired when the closing connection checkpointed the write-ahead log into it. A pooled
connection does not close, so after each committed write to a run shard the file's modification
time is touched (no data changes), which the watchdog sees the same way.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

SQLITE_BUSY_TIMEOUT_SECONDS = 30  # as Dagster's: wait this long for another process's write lock
DEFAULT_OPEN_RUN_SHARDS = 8


def _durable_enough(dbapi_connection, _record) -> None:
    """WAL with synchronous=NORMAL (SQLite's advice for WAL): a commit is not an fsync; the log is
    synced at checkpoints. A killed process loses nothing committed; only an OS crash or power cut may
    lose the last events, and the database stays consistent. Dagster's default (FULL) syncs every event."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def default_base_dir() -> str:
    """Where Dagster's default SQLite storage keeps its event logs: $DAGSTER_HOME/history/runs."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise RuntimeError(
            "DAGSTER_HOME is not set: PooledSqliteEventLogStorage needs it (or a `base_dir` in dagster.yaml)"
        )
    return os.path.join(home, "history", "runs")


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` whose connections stay open between statements (see module docstring)."""

    def __init__(
        self,
        base_dir: str | None = None,
        inst_data: ConfigurableClassData | None = None,
        open_run_shards: int = DEFAULT_OPEN_RUN_SHARDS,
    ):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._open_run_shards = max(1, open_run_shards)
        self._tables: set[str] = set()
        super().__init__(base_dir or default_base_dir(), inst_data)

    @classmethod
    def config_type(cls):
        return {
            "base_dir": Field(StringSource, is_required=False, description="default $DAGSTER_HOME/history/runs"),
            "open_run_shards": Field(int, is_required=False, default_value=DEFAULT_OPEN_RUN_SHARDS),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    # ---- connections --------------------------------------------------------------------------
    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool,
                pool_size=1,
                max_overflow=4,
                # the storage's lock serialises the threads that use a connection
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            sa_event.listen(engine, "connect", _durable_enough)
            self._engines[shard] = engine
            runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
            for stale in runs[: max(0, len(runs) - self._open_run_shards)]:
                self._engines.pop(stale).dispose()
            return engine

    def _forget(self, shard: str) -> None:
        with self._engines_lock:
            engine = self._engines.pop(shard, None)
        if engine is not None:
            engine.dispose()

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def _notify_watchers(self, shard: str) -> None:
        """Touch the run's database file: the live run view's watchdog reads the new events."""
        try:
            os.utime(self.path_for_shard(shard))
        except FileNotFoundError:
            pass

    def store_event(self, event) -> None:
        super().store_event(event)
        if event.run_id:
            self._notify_watchers(event.run_id)

    def store_event_batch(self, events) -> None:
        for event in events:
            SqliteEventLogStorage.store_event(self, event)
        for run_id in {event.run_id for event in events if event.run_id}:
            self._notify_watchers(run_id)

    def has_table(self, table_name: str) -> bool:
        """Dagster asks on nearly every asset event; a table, once there, stays (tables are only added)."""
        if table_name in self._tables:
            return True
        with self._engine(INDEX_SHARD_NAME).connect() as conn:
            exists = bool(conn.dialect.has_table(conn, table_name))
        if exists:
            self._tables.add(table_name)
        return exists

    # ---- files going away ---------------------------------------------------------------------
    def delete_events(self, run_id: str) -> None:
        super().delete_events(run_id)
        self._forget(run_id)

    def wipe(self) -> None:
        with self._engines_lock:
            engines, self._engines = list(self._engines.items()), OrderedDict()
        for _, engine in engines:
            engine.dispose()
        self._tables.clear()
        super().wipe()

    def dispose(self) -> None:
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose()
        super().dispose()
