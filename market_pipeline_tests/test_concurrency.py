"""Concurrent writers on the PostgreSQL warehouse: real `market-pipeline run` processes materialising
the same symbol at the same moment, several runs over different symbols sharing Dagster's storage on
PostgreSQL (and so the `polygon_api` pool), and threads writing through one BarStore on both engines."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading

import pytest
import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance, RunsFilter

from market_pipeline.warehouse import BarStore
from market_pipeline.warehouse.engine import get_engine
from market_pipeline_tests.dagster_helpers import materialization_metadata, served
from market_pipeline_tests.test_postgres_deployment import (
    VENV_BIN,
    admin_connection,
    assert_stored_exactly,
    dbname_of,
    finish,
    frame_with_nulls,
    sandbox_env,
    start_cli,
    track,
    wait_for_waiting_writers,
)
from market_pipeline_tests.waiting import scaled

START = dt.date(2024, 1, 2)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_materialising_the_same_symbol_at_once(postgres_cluster, postgres_url, sandbox, tmp_path):
    """Both runs fetch, then reach the write together (held at the door by a table lock that blocks
    writes but not reads, then let go at once): one row per date, both runs succeed, the status is
    `completed`, and between them they report each date inserted exactly once."""
    dbname = dbname_of(postgres_url)
    registry = track(postgres_url, None, {"AAPL": "stock"}, START.isoformat())
    homes = [tmp_path / "dagster_a", tmp_path / "dagster_b"]
    gate = admin_connection(postgres_cluster, dbname, "test_gate")
    try:
        with gate.cursor() as cur:
            cur.execute("LOCK TABLE ohlcv_daily IN SHARE MODE")
        # the second process names the warehouse with a bare postgresql:// URL (rewritten to psycopg2)
        urls = [postgres_url, postgres_url.replace("postgresql+psycopg2://", "postgresql://")]
        procs = [start_cli(sandbox_env(sandbox, url, home), "run", "AAPL") for url, home in zip(urls, homes)]
        # one waits to write the table, the other for the symbol (its first writer holds it)
        wait_for_waiting_writers(postgres_cluster, dbname, 2, procs=procs)
    finally:
        gate.rollback()
        gate.close()
    for proc in procs:
        code, out = finish(proc)
        assert code == 0, out
        assert "1 of 1 symbol(s) completed" in out

    assert_stored_exactly(postgres_url, "AAPL", "stock", START)
    row = registry.get("AAPL")
    assert row.backfill_status == "completed" and row.backfill_error is None and row.history_from == START
    inserted = []
    for home in homes:
        with DagsterInstance.from_config(str(home)) as instance:
            meta = materialization_metadata(instance, "AAPL")
            assert meta["rows_upserted"] == meta["dagster/partition_row_count"] == len(served("AAPL", "stock", START))
            inserted.append(meta["rows_inserted"])
    assert sorted(inserted) == [0, len(served("AAPL", "stock", START))]


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_runs_over_different_symbols_share_dagster_storage_on_postgres(
    dagster_postgres_home, postgres_url, sandbox, monkeypatch
):
    """Three `market-pipeline run` processes against one Dagster storage on PostgreSQL (the project's
    dagster.postgres.yaml) and the PostgreSQL warehouse: all succeed, every symbol is stored exactly,
    and the `polygon_api` pool let one ohlcv_daily op at a time call Polygon across the processes."""
    symbols = {"AAPL": "stock", "SPY": "etf", "BTCUSD": "crypto"}
    sandbox.latency_ms = 300  # slow responses keep each op holding the pool for a while
    for key, value in dagster_postgres_home.env.items():
        monkeypatch.setenv(key, value)
    with DagsterInstance.get() as instance:
        registry = track(postgres_url, instance, symbols, START.isoformat())  # partitions made up front
    env = sandbox_env(sandbox, postgres_url, dagster_postgres_home.home)
    env.update(dagster_postgres_home.env)
    # the deployment step of README "Running at scale": create the pool once, before runs race to
    # create it from `default_limit` (Dagster 1.13 can then fail one of them on PostgreSQL)
    subprocess.run(
        [str(VENV_BIN / "dagster"), "instance", "concurrency", "set", "polygon_api", "1"],
        env=env, check=True, capture_output=True, timeout=scaled(120),
    )
    procs = [start_cli(env, "run", symbol) for symbol in symbols]
    for proc in procs:
        code, out = finish(proc)
        assert code == 0, out

    for symbol, asset_class in symbols.items():
        assert_stored_exactly(postgres_url, symbol, asset_class, START)
        assert registry.get(symbol).backfill_status == "completed"
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(job_name="ohlcv_daily_job"))
        assert len(runs) == 3 and all(r.is_success for r in runs)
        windows = []
        for run in runs:
            records = {
                kind: [
                    r.event_log_entry.timestamp
                    for r in instance.get_records_for_run(run.run_id, of_type=kind).records
                    if r.event_log_entry.step_key == "ohlcv_daily"
                ]
                for kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS)
            }
            windows.append((min(records[DagsterEventType.STEP_START]), max(records[DagsterEventType.STEP_SUCCESS])))
        windows.sort()
        for (_, end), (start, _) in zip(windows, windows[1:]):
            assert start >= end, windows  # never two ops inside the pool at once
        assert instance.event_log_storage.get_concurrency_info("polygon_api").slot_count == 1


@pytest.mark.parametrize("writers_per_symbol", [1, 3])
def test_threads_writing_through_one_store(any_warehouse_url, writers_per_symbol):
    """Six threads upsert at once (different symbols, or three per symbol): no error, no deadlock,
    one row per date, and the symbol's new dates are reported inserted exactly once."""
    store = BarStore(any_warehouse_url)
    store.upsert_bars("WARM", frame_with_nulls("2024-01-02", 5))  # migrations done before the race
    symbols = [f"T{i // writers_per_symbol}" for i in range(6)]
    barrier = threading.Barrier(len(symbols))
    results, errors = {}, []

    def write(i: int, symbol: str) -> None:
        try:
            barrier.wait(timeout=scaled(60))
            results[i] = store.upsert_bars(symbol, frame_with_nulls("2020-01-01", 1500))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(symbols)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(120))
    assert not errors and len(results) == len(symbols)
    with get_engine(any_warehouse_url).connect() as conn:
        counts = dict(
            conn.execute(
                sa.text("SELECT symbol, count(DISTINCT date) FROM ohlcv_daily WHERE symbol LIKE 'T%' GROUP BY symbol")
            ).all()
        )
        rows = conn.execute(sa.text("SELECT count(*) FROM ohlcv_daily WHERE symbol LIKE 'T%'")).scalar()
    assert counts == {s: 1500 for s in set(symbols)} and rows == 1500 * len(set(symbols))
    for symbol in set(symbols):
        mine = [results[i] for i, s in enumerate(symbols) if s == symbol]
        assert sum(r.rows_inserted for r in mine) == 1500 and all(r.rows_changed == 0 for r in mine)
