"""Dagster's SQLite event log with pooled connections (dagster.yaml `event_log_storage`).

Dagster 1.13's `SqliteEventLogStorage` builds a new SQLAlchemy engine for every connection
(`NullPool`), opens the database file, runs the statement, commits, closes the file and disposes of
the engine; closing the last connection of a WAL database checkpoints it too. A materialization
costs three such connections (run shard, index shard, tag check), a check evaluation four, so a run
that records 10,000 symbol partitions spent most of its time opening and closing SQLite files
(70-95 ms of bookkeeping per partition).

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
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from dagster import DagsterEventType, DagsterInvariantViolationError, Field, StringSource
from dagster._core.definitions.partitions.subset import DefaultPartitionsSubset
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, AssetKeyTable, SqlEventLogStorageTable
from dagster._record import copy
from dagster._time import datetime_from_timestamp
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy import and_, bindparam, create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from market_pipeline.storage.home import note_temporary_home

SQLITE_BUSY_TIMEOUT_SECONDS = 30  # as Dagster's: wait this long for another process's write lock
DEFAULT_OPEN_RUN_SHARDS = 8
DEFAULT_BATCH_EVENTS = 200
DEFAULT_BATCH_SECONDS = 0.25
# the events a run records per partition (planned at its creation, materialised, checked); these and
# a run's log messages are written in batches, everything else (step and run events) at once
ASSET_ROW_EVENT_TYPES = frozenset({DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_MATERIALIZATION_PLANNED})
BATCHED_EVENT_TYPES = ASSET_ROW_EVENT_TYPES | {DagsterEventType.ASSET_CHECK_EVALUATION}

_live: weakref.WeakSet = weakref.WeakSet()

_CHECK_ROW = (
    AssetCheckExecutionsTable.c.asset_key == bindparam("k_asset_key"),
    AssetCheckExecutionsTable.c.check_name == bindparam("k_check_name"),
    AssetCheckExecutionsTable.c.run_id == bindparam("k_run_id"),
)
_CHECK_VALUES = {
    name: bindparam(name)
    for name in (
        "execution_status", "evaluation_event", "evaluation_event_timestamp", "evaluation_event_storage_id",
        "materialization_event_storage_id", "partition",
    )
}
# the row Dagster planned for an evaluation: (asset key, check, run, partition) is unique
_UPDATE_CHECK = (
    AssetCheckExecutionsTable.update()
    .where(and_(*_CHECK_ROW, AssetCheckExecutionsTable.c.partition == bindparam("k_partition")))
    .values(_CHECK_VALUES)
)
_UPDATE_CHECK_UNPARTITIONED = (
    AssetCheckExecutionsTable.update()
    .where(and_(*_CHECK_ROW, AssetCheckExecutionsTable.c.partition.is_(None)))
    .values(_CHECK_VALUES)
)


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


def runs_dir(home: str) -> str:
    """Where Dagster's default SQLite storage keeps the event logs of the instance in `home`."""
    return os.path.join(home, "history", "runs")


def _planned_per_partition(event, keys: list) -> list[str]:
    """The serialised planned-check event for each of `keys`, its subset narrowed to that key (a
    subset of explicit keys, as dynamic partitions have: serialised once with a placeholder key,
    which each row's key, JSON-escaped, replaces). Any other kind of subset (time windows: small
    whatever their length) is stored whole, as Dagster does."""
    planned = event.dagster_event.event_specific_data
    subset = planned.partitions_subset
    if not isinstance(subset, DefaultPartitionsSubset) or len(keys) < 2:
        return [serialize_value(event)] * len(keys)
    placeholder = f"market-pipeline-partition-{uuid.uuid4().hex}"
    narrowed = copy(planned, partitions_subset=subset.empty_subset().with_partition_keys([placeholder]))
    template = serialize_value(event._replace(dagster_event=event.dagster_event._replace(event_specific_data=narrowed)))
    if template.count(placeholder) != 1:  # cannot happen with a fresh uuid; never guess
        return [serialize_value(event)] * len(keys)
    head, tail = template.split(placeholder)
    return [head + json.dumps(key)[1:-1] + tail for key in keys]


def _record_text(serialized_event: str, storage_id: int) -> str:
    """serialize_value(EventLogRecord(storage_id, event)) from the event's own serialisation."""
    return f'{{"__class__": "EventLogRecord", "event_log_entry": {serialized_event}, "storage_id": {int(storage_id)}}}'


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
        self._asset_key_index_cols: bool | None = None  # columns are only added (by `dagster instance migrate`)
        self._record_text_ok: bool | None = None  # _record_text checked against Dagster's serialisation
        self._batch_events = max(1, batch_events)
        self._batch_seconds = max(0.0, batch_seconds)
        self._buffer: list = []
        self._buffer_since = 0.0
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flush_stack: ExitStack | None = None
        self._local = threading.local()
        self._timer: threading.Timer | None = None
        # without a base_dir the files live in the instance's own folder, which Dagster names when it
        # registers the instance (DAGSTER_HOME, or the temporary home `dagster dev` and `dg check defs`
        # make when DAGSTER_HOME is unset): Dagster's own storage is set up then
        self._deferred_inst_data = inst_data
        if base_dir is not None:
            super().__init__(base_dir, inst_data)
        _live.add(self)

    def register_instance(self, instance) -> None:
        if not hasattr(self, "_base_dir"):
            SqliteEventLogStorage.__init__(self, runs_dir(instance.root_directory), self._deferred_inst_data)
            note_temporary_home(instance.root_directory)
        super().register_instance(instance)

    @property
    def inst_data(self):
        return self._inst_data if hasattr(self, "_base_dir") else self._deferred_inst_data

    @classmethod
    def config_type(cls):
        return {
            "base_dir": Field(StringSource, is_required=False, description="default: history/runs in the instance's folder"),
            "open_run_shards": Field(int, is_required=False, default_value=DEFAULT_OPEN_RUN_SHARDS),
            "batch_events": Field(
                int, is_required=False, default_value=DEFAULT_BATCH_EVENTS,
                description="write materializations, check evaluations and run log messages in batches of up to this many (1: one by one)",
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
        """The per-partition events, and a run's log messages (a warning per symbol would otherwise
        end a batch at every symbol: each message written at once flushes the buffer before it)."""
        return bool(
            self._batch_events > 1
            and event.run_id
            and (not event.is_dagster_event or event.dagster_event_type in BATCHED_EVENT_TYPES)
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
                        self._store_events(events)
                    finally:
                        self._local.tx = None
            except BaseException:
                with self._buffer_lock:  # nothing of the batch was committed: keep it for the next try
                    self._buffer[:0] = events
                raise
            for run_id in {event.run_id for event in events}:
                self._notify_watchers(run_id)

    def _store_events(self, events) -> None:
        """The buffered events in order: each run of materializations and check evaluations set-based
        (`_store_set`), anything else through Dagster's own `store_event`."""
        same: list = []
        for event in events:
            if self._batchable(event):
                same.append(event)
                continue
            if same:
                self._store_set(same)
                same = []
            self._store_one(event)
        if same:
            self._store_set(same)

    def _store_one(self, event) -> None:
        SqliteEventLogStorage.store_event(self, event)

    def _store_set(self, events) -> None:
        """Per-partition events of runs (planned, materialised, checked) and log messages, written as
        Dagster's `store_event` writes them one by one (the same rows in the same tables, ids
        included), with a statement per table instead of several per event, and each event
        serialised once instead of up to three times:
        - the run shard's `event_logs`: one executemany per run (a log message goes only there);
        - the index shard's `event_logs`: one executemany returning the new ids, in order;
        - asset events: their indexed tags in one executemany; each asset key's `asset_keys` row
          written once with what the batch's successive updates would leave in it;
        - check evaluations: the row Dagster planned for each (asset key, check, run, partition)
          updated by one prepared statement; one with no planned row is inserted, as Dagster does.
        Everything runs inside the flush's transactions: the batch is stored whole or not at all."""
        rows = [self._event_to_row(event) for event in events]
        for run_id in dict.fromkeys(row["run_id"] for row in rows):
            with self.run_connection(run_id) as conn:
                conn.execute(SqlEventLogStorageTable.insert(), [row for row in rows if row["run_id"] == run_id])
        indexed = [(event, row) for event, row in zip(events, rows) if event.is_dagster_event]  # not log messages
        if not indexed:
            return
        events, rows = [event for event, _ in indexed], [row for _, row in indexed]
        with self.index_connection() as conn:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True),
                rows,
            )
            ids = [row[0] for row in inserted]
            assets = [
                (event, event_id, row["event"]) for event, event_id, row in zip(events, ids, rows)
                if event.dagster_event_type in ASSET_ROW_EVENT_TYPES and event.dagster_event.asset_key
            ]
            if assets:
                self._store_asset_event_tags(conn, [e for e, _, _ in assets], [i for _, i, _ in assets])
                for asset_key, values in self._asset_entries(conn, assets).items():
                    self._write_asset_entry(conn, asset_key, values)
            for event, event_id, row in zip(events, ids, rows):
                if event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                    self._record_check_evaluation(conn, event, event_id, row["event"])

    def _asset_entries(self, conn, assets) -> dict[str, dict]:
        """Each asset key's `asset_keys` values after the batch's events, applied in order as Dagster's
        one-by-one updates apply them. A materialization sets every column any event sets, so only
        the last materialization of a key and what follows it count (each materialization's value
        is a serialised record of the whole event: not built for the ones overwritten anyway)."""
        if not self._asset_key_index_cols:  # remembered once there (migrations only add columns)
            self._asset_key_index_cols = self._has_asset_key_index_cols_on_connection(conn)
        last_materialization = {
            event.dagster_event.asset_key: position
            for position, (event, _, _) in enumerate(assets)
            if event.dagster_event.is_step_materialization
        }
        entries: dict[str, dict] = {}
        for position, (event, event_id, serialized) in enumerate(assets):
            asset_key = event.dagster_event.asset_key
            if position < last_materialization.get(asset_key, -1):
                continue
            values = self._get_asset_entry_values(event, event_id, self._asset_key_index_cols, serialized)
            if values:
                entries.setdefault(asset_key.to_string(), {}).update(values)
        return entries

    def _get_asset_entry_values(self, event, event_id, has_asset_key_index_cols, serialized=None):
        """Dagster's values, with a materialization's `last_materialization` (the serialised
        EventLogRecord of the event) built around the event's JSON already made for its
        `event_logs` row instead of serialising the event again. The first time, the built text is
        compared with Dagster's own serialisation; should they ever differ (another Dagster), every
        later one is Dagster's own."""
        if serialized is None or not event.dagster_event.is_step_materialization or self._record_text_ok is False:
            return super()._get_asset_entry_values(event, event_id, has_asset_key_index_cols)
        values = {
            "last_materialization": _record_text(serialized, event_id),
            "last_run_id": event.run_id,
        }
        if has_asset_key_index_cols:
            values["last_materialization_timestamp"] = datetime_from_timestamp(event.timestamp)
        if self._record_text_ok is None:
            dagsters = super()._get_asset_entry_values(event, event_id, has_asset_key_index_cols)
            self._record_text_ok = dagsters == values
            return dagsters
        return values

    def _write_asset_entry(self, conn, asset_key: str, values: dict) -> None:
        updated = conn.execute(AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == asset_key))
        if updated.rowcount == 0:
            conn.execute(AssetKeyTable.insert().values(asset_key=asset_key, **values))

    def _record_check_evaluation(self, conn, event, event_id, serialized: str) -> None:
        """Dagster's `_update_asset_check_evaluation` with a prepared statement and the event's JSON
        already serialised for its `event_logs` row."""
        evaluation = event.dagster_event.event_specific_data
        target = evaluation.target_materialization_data
        values = dict(
            execution_status=(
                AssetCheckExecutionRecordStatus.SUCCEEDED.value
                if evaluation.passed
                else AssetCheckExecutionRecordStatus.FAILED.value
            ),
            evaluation_event=serialized,
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
            materialization_event_storage_id=target.storage_id if target else None,
            partition=evaluation.partition,
        )
        key = dict(k_asset_key=evaluation.asset_key.to_string(), k_check_name=evaluation.check_name, k_run_id=event.run_id)
        if evaluation.partition is None:
            updated = conn.execute(_UPDATE_CHECK_UNPARTITIONED, {**key, **values}).rowcount
        else:
            updated = conn.execute(_UPDATE_CHECK, {**key, "k_partition": evaluation.partition, **values}).rowcount
        if updated == 0:  # no planned row (Dagster's own path inserts one the same way)
            conn.execute(
                AssetCheckExecutionsTable.insert(),
                {"asset_key": key["k_asset_key"], "check_name": key["k_check_name"], "run_id": event.run_id, **values},
            )
        elif updated > 1:
            raise DagsterInvariantViolationError(
                f"Updated {updated} rows for asset check evaluation {evaluation.asset_check_key} "
                "as a result of duplicate AssetCheckPlanned events."
            )

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
        """Dagster's rows for a planned check, one per partition of the run, inserted as one
        executemany. Dagster stores in every row the whole planned event, whose subset lists every
        partition of the run: a run of N partitions wrote N copies of an N-key list per check
        (10,000 symbols, four checks: 100 KB a row, about 4 GB through the write-ahead log, and a
        file that never shrinks back), serialising each. Here each row's event is the same planned
        event narrowed to that row's partition, serialised once as a template. The run's own
        `event_logs` row keeps the whole subset."""
        planned = event.dagster_event.event_specific_data
        subset = planned.partitions_subset
        keys = subset.get_partition_keys() if subset else [None]
        common = dict(
            asset_key=planned.asset_key.to_string(),
            check_name=planned.check_name,
            run_id=event.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
        )
        events = _planned_per_partition(event, keys)
        with self.index_connection() as conn:
            conn.execute(
                AssetCheckExecutionsTable.insert(),
                [{**common, "partition": key, "evaluation_event": text} for key, text in zip(keys, events)],
            )

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
        self._asset_key_index_cols = None
        super().wipe()

    def dispose(self) -> None:
        self.flush()
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose()
        super().dispose()
