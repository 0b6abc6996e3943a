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

import atexit
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from dagster import DagsterEventType, Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy import create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

SQLITE_BUSY_TIMEOUT_SECONDS = 30  # as Dagster's: wait this long for another process's write lock
DEFAULT_OPEN_RUN_SHARDS = 8
DEFAULT_BATCH_EVENTS = 200
DEFAULT_BATCH_SECONDS = 0.25
# the events a run records per partition; everything else (step, run, log events) is written at once
BATCHED_EVENT_TYPES = frozenset({DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION})

_live: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for storage in list(_live):
        try:
            storage.flush()
        except Exception:
            pass


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
        batch_events: int = DEFAULT_BATCH_EVENTS,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
    ):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._open_run_shards = max(1, open_run_shards)
        self._tables: set[str] = set()
        self._batch_events = max(1, batch_events)
        self._batch_seconds = max(0.0, batch_seconds)
        self._buffer: list = []
        self._buffer_since = 0.0
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flush_stack: ExitStack | None = None
        self._local = threading.local()
        self._timer: threading.Timer | None = None
        super().__init__(base_dir or default_base_dir(), inst_data)
        _live.add(self)

    @classmethod
    def config_type(cls):
        return {
            "base_dir": Field(StringSource, is_required=False, description="default $DAGSTER_HOME/history/runs"),
            "open_run_shards": Field(int, is_required=False, default_value=DEFAULT_OPEN_RUN_SHARDS),
            "batch_events": Field(
                int, is_required=False, default_value=DEFAULT_BATCH_EVENTS,
                description="write materializations and check evaluations in batches of up to this many (1: one by one)",
            ),
            "batch_seconds": Field(
                float, is_required=False, default_value=DEFAULT_BATCH_SECONDS,
                description="a batch is written at the latest this long after its first event",
            ),
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
            busy = getattr(self._local, "tx", None) or {}
            for stale in [name for name in runs if name not in busy][: max(0, len(runs) - self._open_run_shards)]:
                self._engines.pop(stale).dispose()
            return engine

    def _forget(self, shard: str) -> None:
        with self._engines_lock:
            engine = self._engines.pop(shard, None)
        if engine is not None:
            engine.dispose()

    def _ready_engine(self, shard: str) -> Engine:
        engine = self._engine(shard)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        flushing = getattr(self._local, "tx", None)
        if flushing is not None:  # a statement of the batch being written: the batch's transaction
            if shard not in flushing:
                flushing[shard] = self._flush_stack.enter_context(self._ready_engine(shard).begin())
            yield flushing[shard]
            return
        if self._buffer:  # every read or write sees the buffered events first
            self.flush()
        with self._db_lock:
            with self._ready_engine(shard).connect() as conn:
                with conn.begin():
                    yield conn

    def _notify_watchers(self, shard: str) -> None:
        """Touch the run's database file: the live run view's watchdog reads the new events."""
        try:
            os.utime(self.path_for_shard(shard))
        except FileNotFoundError:
            pass

    # ---- writes: the per-partition events in batches ------------------------------------------
    def store_event(self, event) -> None:
        if self._batchable(event):
            with self._buffer_lock:
                self._buffer.append(event)
                if len(self._buffer) == 1:
                    self._buffer_since = time.monotonic()
                due = len(self._buffer) >= self._batch_events or time.monotonic() - self._buffer_since >= self._batch_seconds
            if due:
                self.flush()
            else:
                self._arm_timer()
            return
        self.flush()  # anything else (step and run events) is written at once, after what came before it
        super().store_event(event)
        if event.run_id:
            self._notify_watchers(event.run_id)

    def store_event_batch(self, events) -> None:
        with self._buffer_lock:
            self._buffer.extend(events)
        self.flush()

    def _batchable(self, event) -> bool:
        return bool(
            self._batch_events > 1
            and event.run_id
            and event.is_dagster_event
            and event.dagster_event_type in BATCHED_EVENT_TYPES
        )

    def flush(self) -> None:
        """Write the buffered events: Dagster's own statements for each, in one transaction per file."""
        with self._flush_lock:
            with self._buffer_lock:
                events, self._buffer = self._buffer, []
                timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            if not events:
                return
            try:
                with self._db_lock, ExitStack() as stack:
                    self._flush_stack, self._local.tx = stack, {}
                    try:
                        for event in events:
                            self._store_one(event)
                    finally:
                        self._local.tx = None
            except BaseException:
                with self._buffer_lock:  # nothing of the batch was committed: keep it for the next try
                    self._buffer[:0] = events
                raise
            for run_id in {event.run_id for event in events}:
                self._notify_watchers(run_id)

    def _store_one(self, event) -> None:
        SqliteEventLogStorage.store_event(self, event)

    def _arm_timer(self) -> None:
        with self._buffer_lock:
            if self._timer is not None or not self._buffer:
                return
            self._timer = threading.Timer(self._batch_seconds, self._timed_flush)
            self._timer.daemon = True
            self._timer.start()

    def _timed_flush(self) -> None:
        with self._buffer_lock:
            self._timer = None
        try:
            self.flush()
        except Exception:  # the next event or read tries again
            logging.getLogger(__name__).exception("could not write buffered Dagster events; retrying with the next event")

    def _store_asset_check_evaluation_planned(self, event, event_id) -> None:
        """Dagster's rows for a planned check (one per partition of the run), with the planned event
        serialised once instead of once per partition, inserted as executemany: Dagster re-serialises
        the event (which lists every partition of the run) for each row, so a run of N partitions costs
        N^2 (4 checks x 1,000 partitions: 10 s of a 1,000-symbol refresh)."""
        planned = event.dagster_event.event_specific_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        common = dict(
            asset_key=planned.asset_key.to_string(),
            check_name=planned.check_name,
            run_id=event.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
            evaluation_event=serialize_value(event),
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
        )
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**common, "partition": key} for key in keys])

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
        with self._buffer_lock:
            self._buffer = []
        with self._engines_lock:
            engines, self._engines = list(self._engines.items()), OrderedDict()
        for _, engine in engines:
            engine.dispose()
        self._tables.clear()
        super().wipe()

    def dispose(self) -> None:
        self.flush()
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose()
        super().dispose()
