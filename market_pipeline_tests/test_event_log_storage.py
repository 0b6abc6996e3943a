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
    """A materialization and a check evaluation per partition, as ohlcv_daily records them."""
    for key in context.partition_keys:
        yield AssetMaterialization(asset_key=KEY, partition=key, metadata={"n": int(key[1:])})
        yield AssetCheckEvaluation(asset_key=KEY, check_name="positive", passed=int(key[1:]) % 7 != 0, partition=key)
    yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(
        next(iter(context.selected_asset_check_keys))
    ))


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
            deadline = time.monotonic() + 10
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
        original = PooledSqliteEventLogStorage._store_one
        calls = {"n": 0}

        def broken(self, event):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("disk I/O error")
            return original(self, event)

        monkeypatch.setattr(PooledSqliteEventLogStorage, "_store_one", broken)
        with pytest.raises(RuntimeError, match="disk I/O error"):
            storage.flush()
        assert len(storage._buffer) == 3
        monkeypatch.setattr(PooledSqliteEventLogStorage, "_store_one", original)
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
