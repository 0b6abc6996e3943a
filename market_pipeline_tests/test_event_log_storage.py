"""Dagster's event log as the project configures it (dagster.yaml: PooledSqliteEventLogStorage): pooled
connections and per-partition events written in batches, with everything Dagster and the UI read from
it unchanged: materializations, check executions, the live run view of another process."""

from __future__ import annotations

import threading
import uuid
import time

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSpec,
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    DynamicPartitionsDefinition,
    Output,
    instance_for_test,
    Definitions,
    multi_asset,
    AssetSpec,
)
from dagster._core.storage.event_log.base import AssetRecordsFilter

from market_pipeline.storage import PooledSqliteEventLogStorage
from market_pipeline.storage.config import project_event_log_storage
from market_pipeline_tests.waiting import scaled

KEY = AssetKey("many")
PARTS = DynamicPartitionsDefinition(name="parts")
SYMBOLS = [f"S{i:03d}" for i in range(120)]


@multi_asset(
    specs=[AssetSpec(KEY, skippable=True)],
    check_specs=[AssetCheckSpec("positive", asset=KEY, partitions_def=PARTS)],  # as ohlcv_daily's checks
    partitions_def=PARTS,
    can_subset=True,
)
def many(context):
    """A materialization and a check evaluation per partition, as ohlcv_daily records them, and now
    and then a warning (as ohlcv_daily logs a symbol Polygon's reference does not know)."""
    for key in context.partition_keys:
        if int(key[1:]) % 3 == 0:
            context.log.warning(f"{key}: reference not_found")
        yield AssetMaterialization(asset_key=KEY, partition=key, metadata={"n": int(key[1:])})
        yield AssetCheckEvaluation(asset_key=KEY, check_name="positive", passed=int(key[1:]) % 7 != 0, partition=key)
    yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(
        next(iter(context.selected_asset_check_keys))
    ))


@multi_asset(
    specs=[AssetSpec(KEY)],
    check_specs=[AssetCheckSpec("positive", asset=KEY, partitions_def=PARTS)],
    partitions_def=PARTS,
    can_subset=True,
    name="half",
)
def half(context):
    """Records the first half of its partitions, then fails."""
    for key in context.partition_keys[: len(context.partition_keys) // 2]:
        yield AssetMaterialization(asset_key=KEY, partition=key)
    raise RuntimeError("the source went away")


def _overrides(home, **config):
    overrides = project_event_log_storage(home)
    overrides["event_log_storage"]["config"].update(config)
    return overrides


def _run(instance, run_id: str | None = None):
    """One run over every partition (a partition range, as a backfill run of ohlcv_daily)."""
    instance.add_dynamic_partitions("parts", SYMBOLS)
    job = Definitions(assets=[many]).resolve_implicit_global_asset_job_def()
    tags = {"dagster/asset_partition_range_start": SYMBOLS[0], "dagster/asset_partition_range_end": SYMBOLS[-1]}
    return job.execute_in_process(instance=instance, tags=tags, **({"run_id": run_id} if run_id else {}))


def test_project_dagster_yaml_configures_the_pooled_storage(tmp_path, monkeypatch):
    """An instance made from the project's dagster.yaml (what `make dev`, the daemon and the run
    workers use) writes its events through PooledSqliteEventLogStorage, under DAGSTER_HOME."""
    from market_pipeline import settings

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((settings.project_dir() / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.get()
    try:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert instance.event_log_storage._base_dir == str(home / "history" / "runs")
    finally:
        instance.dispose()


def test_every_event_of_a_run_is_stored_and_read_back(tmp_path):
    """Batched writes lose nothing: each partition's materialization and check execution are recorded,
    in order, and the run's own reads (retries, check targets) see them at once."""
    home = tmp_path / "h"
    home.mkdir()
    with instance_for_test(temp_dir=str(home), overrides=_overrides(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        result = _run(instance)
        assert result.success
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=KEY), limit=1000).records
        assert sorted(r.partition_key for r in records) == SYMBOLS
        assert {r.partition_key: r.asset_materialization.metadata["n"].value for r in records}["S041"] == 41
        logs = instance.all_logs(result.run_id)
        ids = [e.dagster_event.partition for e in logs if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION]
        assert ids == SYMBOLS  # in the order the op recorded them
        executions = instance.event_log_storage.get_asset_check_execution_history(
            __import__("dagster").AssetCheckKey(KEY, "positive"), limit=1000
        )
        by_partition = {e.partition: e.status.value for e in executions}
        assert len(by_partition) == len(SYMBOLS)
        assert by_partition["S007"] == "FAILED" and by_partition["S008"] == "SUCCEEDED"
        assert not any(status == "PLANNED" for status in by_partition.values())


def test_another_process_sees_the_events_while_the_run_goes_on(tmp_path):
    """The live run view: the webserver's storage (another storage object on the same files) is told
    of new events by a watchdog on the run's database file; with pooled connections and batches it
    still receives every event of the run, through to its end."""
    home = tmp_path / "live"
    home.mkdir()
    overrides = _overrides(home)
    with instance_for_test(temp_dir=str(home), overrides=overrides) as writer:
        viewer = PooledSqliteEventLogStorage(base_dir=str(home / "history" / "runs"))
        seen: list = []
        done = threading.Event()
        run_id = str(uuid.uuid4())

        def on_event(entry, cursor):
            seen.append(entry)
            if entry.dagster_event_type == DagsterEventType.RUN_SUCCESS:
                done.set()

        viewer.watch(run_id, None, on_event)
        try:
            assert _run(writer, run_id=run_id).success
            assert done.wait(30), f"the watcher saw {len(seen)} event(s) and not the run's end"
        finally:
            viewer.end_watch(run_id, on_event)
            viewer.dispose()
        partitions = [e.dagster_event.partition for e in seen if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION]
        assert partitions == SYMBOLS


def test_buffered_events_reach_other_readers_without_a_further_event(tmp_path):
    """A batch is written at the latest `batch_seconds` after its first event, even when nothing else
    happens (a run waiting on the network): another reader sees it then."""
    home = tmp_path / "timer"
    home.mkdir()
    base = str(home / "history" / "runs")
    with instance_for_test(temp_dir=str(home), overrides=_overrides(home, batch_seconds=0.2)) as instance:
        storage = instance.event_log_storage
        assert _run(instance).success
        # a partition's events buffered by hand, as a long run leaves them between two symbols
        run_id = instance.get_runs(limit=1)[0].run_id
        last = [e for e in instance.all_logs(run_id) if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION][-1]
        moved = last._replace(run_id=run_id, timestamp=time.time())
        storage.store_event(moved)
        assert storage._buffer, "a materialization waits for its batch"
        reader = PooledSqliteEventLogStorage(base_dir=base)
        try:
            deadline = time.monotonic() + scaled(10)
            count = lambda: len(reader.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records)
            while count() < len(SYMBOLS) + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert count() == len(SYMBOLS) + 1
            assert not storage._buffer
        finally:
            reader.dispose()


def test_a_failed_batch_write_keeps_its_events_for_the_next_try(tmp_path, monkeypatch):
    """A batch that cannot be written (the database locked past the timeout, a lost disk) is not
    dropped: its events stay buffered, in order, and the next write stores them."""
    home = tmp_path / "fail"
    home.mkdir()
    with instance_for_test(temp_dir=str(home), overrides=_overrides(home, batch_seconds=60)) as instance:
        storage = instance.event_log_storage
        assert _run(instance).success
        run_id = instance.get_runs(limit=1)[0].run_id
        events = [e for e in instance.all_logs(run_id) if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION][:3]
        before = len(instance.all_logs(run_id))
        for event in events:
            storage.store_event(event._replace(timestamp=time.time()))
        # the fault comes after the batch's rows went into the run shard and the index shard's event_logs
        original = PooledSqliteEventLogStorage._write_asset_entry

        def broken(self, conn, asset_key, values):
            raise RuntimeError("disk I/O error")

        monkeypatch.setattr(PooledSqliteEventLogStorage, "_write_asset_entry", broken)
        with pytest.raises(RuntimeError, match="disk I/O error"):
            storage.flush()
        assert len(storage._buffer) == 3
        monkeypatch.setattr(PooledSqliteEventLogStorage, "_write_asset_entry", original)
        storage.flush()
        assert len(instance.all_logs(run_id)) == before + 3  # each once: the failed batch was rolled back


WIDE_PARTS = DynamicPartitionsDefinition(name="wide_parts")


@multi_asset(
    specs=[AssetSpec(AssetKey("wide"), skippable=True)],
    check_specs=[AssetCheckSpec("wide_check", asset=AssetKey("wide"), partitions_def=WIDE_PARTS)],
    partitions_def=WIDE_PARTS,
    can_subset=True,
)
def wide(context):
    yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(
        next(iter(context.selected_asset_check_keys))
    ))


def test_a_check_planned_over_thousands_of_partitions_is_recorded(tmp_path):
    """A daily refresh of 5,000 symbols plans each check over 5,000 partitions: one PLANNED row per
    partition (the storage writes them itself, serialising the plan once instead of per row)."""
    from dagster import AssetCheckKey

    keys = [f"W{i:05d}" for i in range(5000)]
    home = tmp_path / "wide"
    home.mkdir()
    with instance_for_test(temp_dir=str(home), overrides=_overrides(home)) as instance:
        instance.add_dynamic_partitions("wide_parts", keys)
        job = Definitions(assets=[wide]).resolve_implicit_global_asset_job_def()
        tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
        result = job.execute_in_process(instance=instance, tags=tags)
        assert result.success
        rows = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(AssetKey("wide"), "wide_check"), limit=10_000)
        assert sorted(r.partition for r in rows if r.run_id == result.run_id) == keys
        # each row's planned event names its own partition, not the run's 5,000 (a row is not 5,000 keys long)
        for row in rows[:3] + rows[-3:]:
            planned = row.event.dagster_event.event_specific_data
            assert list(planned.partitions_subset.get_partition_keys()) == [row.partition]
            assert planned.check_name == "wide_check" and row.event.run_id == result.run_id
        # the run's own log keeps the whole plan
        (whole,) = [
            e for e in instance.all_logs(result.run_id)
            if e.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
        ]
        assert len(whole.dagster_event.event_specific_data.partitions_subset.get_partition_keys()) == 5000


def _dump(path) -> dict[str, list[tuple]]:
    """Every row of a Dagster SQLite event-log file, table by table, in id order, without the columns
    the database fills from its clock."""
    import sqlite3

    out = {}
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        for table in sorted(tables):
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            kept = [c for c in columns if c not in ("create_timestamp", "updated_timestamp", "migration_completed")]
            quoted = ", ".join('"' + c + '"' for c in kept)
            out[table] = db.execute(f'SELECT {quoted} FROM "{table}" ORDER BY rowid').fetchall()
    return out


def test_batched_writes_store_exactly_the_rows_dagster_writes_one_by_one(tmp_path):
    """The same events of three runs (materializations with an indexed data-version tag, check
    evaluations, a check with no planned row, planned partitions, a run that failed half-way, step
    events between them) replayed into
    Dagster's one-by-one path (batch_events=1) and into the set-based batches: every table of the
    run shards and of the index shard holds the same rows, ids included."""
    home = tmp_path / "src"
    home.mkdir()
    with instance_for_test(temp_dir=str(home), overrides=_overrides(home)) as instance:
        runs = [_run(instance).run_id, _run(instance).run_id]
        job = Definitions(assets=[half]).resolve_implicit_global_asset_job_def()
        tags = {"dagster/asset_partition_range_start": SYMBOLS[0], "dagster/asset_partition_range_end": SYMBOLS[-1]}
        failed = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        assert not failed.success
        runs.append(failed.run_id)
        events = [e for run_id in runs for e in instance.all_logs(run_id)]
        assert any(e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED for e in events)
        assert sum(not e.is_dagster_event and "not_found" in e.user_message for e in events) == 2 * len(SYMBOLS) // 3
    tagged = []
    for event in events:
        if event.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION:
            data = event.dagster_event.event_specific_data
            materialization = data.materialization._replace(tags={"dagster/data_version": event.dagster_event.partition})
            event = event._replace(
                dagster_event=event.dagster_event._replace(event_specific_data=data._replace(materialization=materialization))
            )
        tagged.append(event)
    # an evaluation whose run planned no row for it: inserted, as Dagster does
    from dagster._record import copy

    stray = next(e for e in tagged if e.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluation = copy(stray.dagster_event.event_specific_data, partition="S999")
    tagged.append(stray._replace(dagster_event=stray.dagster_event._replace(event_specific_data=evaluation)))

    dumps = []
    for name, config in (("one_by_one", {"batch_events": 1}), ("batched", {"batch_events": 50})):
        base = tmp_path / name
        storage = PooledSqliteEventLogStorage(base_dir=str(base), **config)
        try:
            for event in tagged:
                storage.store_event(event)
            storage.flush()
        finally:
            storage.dispose()
        dumps.append({path.name: _dump(path) for path in sorted(base.glob("*.db"))})
    one_by_one, batched = dumps
    assert sorted(one_by_one) == sorted(batched) and len(one_by_one) == 4  # three run shards and the index
    for name in one_by_one:
        assert one_by_one[name] == batched[name], name
    index = batched["index.db"]
    assert len(index["asset_event_tags"]) == 2 * len(SYMBOLS) + len(SYMBOLS) // 2
    assert sum("S999" in row for row in index["asset_check_executions"]) == 1  # the evaluation without a plan


def test_a_planned_row_names_its_partition_whatever_characters_it_holds():
    """The per-partition planned events are cut from one serialised template: keys with quotes,
    backslashes, colons or non-ASCII letters come back exactly, each in its own row's event."""
    from dagster import AssetCheckKey
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
    from dagster._core.definitions.partitions.subset import DefaultPartitionsSubset
    from dagster._core.events import DagsterEvent
    from dagster._core.events.log import EventLogEntry
    from dagster._serdes import deserialize_value

    from market_pipeline.storage.sqlite_event_log import _planned_per_partition

    keys = ['BRK.B', 'X:BTCUSD', 'A"B', "C\\D", "Émile", "line\nbreak", "{}[]"]
    planned = AssetCheckEvaluationPlanned(
        asset_key=KEY, check_name="positive", partitions_subset=DefaultPartitionsSubset(set(keys))
    )
    event = EventLogEntry(
        error_info=None, level=10, user_message="", run_id="r1", timestamp=time.time(),
        dagster_event=DagsterEvent(DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value, "job", event_specific_data=planned),
    )
    texts = _planned_per_partition(event, keys)
    assert len(texts) == len(keys)
    for key, text in zip(keys, texts):
        back = deserialize_value(text, EventLogEntry).dagster_event.event_specific_data
        assert list(back.partitions_subset.get_partition_keys()) == [key]
        assert back.asset_check_key == AssetCheckKey(KEY, "positive")


def test_the_latest_materialization_record_is_built_as_dagster_serialises_it(tmp_path):
    """`asset_keys.last_materialization` is built around the event's JSON already made for its row;
    the text is Dagster's own serialisation of the EventLogRecord, checked the first time."""
    from dagster._core.event_api import EventLogRecord
    from dagster._serdes import serialize_value

    home = tmp_path / "rec"
    home.mkdir()
    with instance_for_test(temp_dir=str(home), overrides=_overrides(home)) as instance:
        result = _run(instance)
        storage = instance.event_log_storage
        assert storage._record_text_ok is True
        last = [e for e in instance.all_logs(result.run_id) if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION][-1]
        record = instance.fetch_materializations(AssetRecordsFilter(asset_key=KEY), limit=1).records[0]
        assert record.event_log_entry.dagster_event.partition == last.dagster_event.partition == SYMBOLS[-1]
        with storage.index_connection() as conn:
            (text,) = conn.exec_driver_sql("SELECT last_materialization FROM asset_keys").one()
        assert text == serialize_value(EventLogRecord(storage_id=record.storage_id, event_log_entry=record.event_log_entry))
