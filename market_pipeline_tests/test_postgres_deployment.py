"""The production deployment on PostgreSQL, against the throwaway cluster: Dagster's own storage from
dagster.postgres.yaml, the bulk write path on both engines, the read paths served by the primary
key, a server restart between runs, a server that is down, and a connection killed mid-write."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.definitions import defs
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.reconcile import range_tags
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.engine import get_engine
from market_pipeline.warehouse.store import _pg_read_query
from market_pipeline_tests.dagster_helpers import (
    check_passed,
    latest_check_records,
    materialization_metadata,
    materializations,
    served,
)
from market_pipeline_tests.waiting import scaled

pytestmark = pytest.mark.postgres

VENV_BIN = Path(sys.executable).parent
WAIT_SECONDS = 120  # upper bound on waiting for another process on a quiet machine (a hang fails instead of blocking the suite)


# ---- helpers shared with test_concurrency -------------------------------------------------------

def counts(written) -> tuple[int, int, int]:
    """(rows upserted, inserted, changed) of an UpsertResult."""
    return written.rows_upserted, written.rows_inserted, written.rows_changed


def sandbox_env(sandbox, warehouse_url: str, dagster_home: str | Path) -> dict:
    """The environment of a `market-pipeline` process against the sandbox and this warehouse."""
    env = dict(os.environ)
    env.update(
        POLYGON_API_KEY=SANDBOX_API_KEY, POLYGON_BASE_URL=sandbox.url, POLYGON_REQUESTS_PER_MINUTE="0",
        MARKET_PIPELINE_DB_URL=warehouse_url, DAGSTER_HOME=str(dagster_home),
    )
    Path(dagster_home).mkdir(parents=True, exist_ok=True)
    return env


def start_cli(env: dict, *argv: str) -> subprocess.Popen:
    exe = VENV_BIN / "market-pipeline"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "market_pipeline.cli.main"]
    return subprocess.Popen(
        [*cmd, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=scaled(WAIT_SECONDS * 2))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"`market-pipeline` did not finish:\n{out}") from None
    return proc.returncode, out


def admin_connection(cluster, dbname: str, name: str):
    conn = psycopg2.connect(cluster.dsn(dbname), application_name=name, connect_timeout=10)
    return conn


def wait_for_waiting_writers(cluster, dbname: str, count: int, *, procs=(), exclude=(), query_like="%") -> list[int]:
    """Pids of `count` market_pipeline backends of `dbname` waiting on a lock (and running `query_like`)."""
    watcher = admin_connection(cluster, dbname, "test_watcher")
    watcher.autocommit = True
    deadline = time.monotonic() + scaled(WAIT_SECONDS)
    try:
        with watcher.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'market_pipeline' "
                    "AND wait_event_type = 'Lock' AND query LIKE %s ORDER BY backend_start",
                    (dbname, query_like),
                )
                pids = [pid for (pid,) in cur.fetchall() if pid not in exclude]
                if len(pids) >= count:
                    return pids
                for proc in procs:
                    if proc.poll() is not None:
                        raise AssertionError(f"a run ended before reaching its write:\n{proc.communicate()[0]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{count} writer(s) never waited on the lock (saw {pids})")
                time.sleep(0.05)
    finally:
        watcher.close()


def snapshot(url: str, symbol: str) -> list[tuple]:
    """Every stored column of a symbol's rows, fetched_at included (a rewrite with equal values shows)."""
    with get_engine(url).connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM ohlcv_daily WHERE symbol = :s ORDER BY date"), {"s": symbol}
        ).all()


def dbname_of(url: str) -> str:
    return sa.engine.make_url(url).database


def track(url: str, instance, symbols: dict, start: str = "2024-01-02") -> SymbolRegistry:
    registry = SymbolRegistry(url)
    for symbol, asset_class in symbols.items():
        registry.add([symbol], asset_class, start)
    if instance is not None:
        instance.add_dynamic_partitions(symbols_partitions.name, list(symbols))
    return registry


def run_in_process(instance, keys: list[str]):
    job = defs.resolve_job_def("ohlcv_daily_job")
    if len(keys) == 1:
        return job.execute_in_process(instance=instance, partition_key=keys[0], raise_on_error=False)
    return job.execute_in_process(instance=instance, tags=range_tags(keys), raise_on_error=False)


def assert_stored_exactly(url: str, symbol: str, asset_class: str, start: dt.date) -> None:
    """The warehouse holds exactly the served bars of `symbol`: one row per date, the served values."""
    expected = served(symbol, asset_class, start)
    with get_engine(url).connect() as conn:
        rows, dates = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT date) FROM ohlcv_daily WHERE symbol = :s"), {"s": symbol}
        ).one()
    assert rows == dates == len(expected)
    stored = BarStore(url).read_bars(symbol)
    assert [d.date() for d in stored["date"]] == [d.date() for d in expected["date"]]
    assert stored["close"].tolist() == expected["c"].tolist()
    assert stored["vwap"].tolist() == expected["vw"].tolist()


@pytest.fixture
def sandbox_polygon(monkeypatch, sandbox):
    monkeypatch.setenv("POLYGON_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("POLYGON_BASE_URL", sandbox.url)
    monkeypatch.setenv("POLYGON_REQUESTS_PER_MINUTE", "0")
    return sandbox


# ---- the bulk write path, both engines ------------------------------------------------------------
def frame_with_nulls(start: str, n: int) -> pd.DataFrame:
    close = 100.0 + np.arange(n) / 7
    frame = pd.DataFrame(
        {
            "date": pd.bdate_range(start, periods=n), "open": close - 0.5, "high": close + 1.0, "low": close - 1.0,
            "close": close, "volume": np.full(n, 1e9 + 0.25), "vwap": close,
            "transactions": pd.array(np.arange(n) + 2**40, dtype="Int64"),
        }
    )[list(BAR_COLUMNS)]
    frame.loc[1, "vwap"] = np.nan
    frame.loc[2, "transactions"] = pd.NA
    return frame


def test_bulk_write_round_trips_nulls_and_counts_changes(any_warehouse_url):
    store = BarStore(any_warehouse_url)
    frame = frame_with_nulls("2024-01-02", 40)
    assert counts(store.upsert_bars("X", frame.iloc[::-1])) == (40, 40, 0)  # any order in, date order stored
    back = store.read_bars("X")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["date"].dtype == "datetime64[ns]" and str(back["transactions"].dtype) == "Int64"
    assert pd.isna(back.loc[1, "vwap"]) and pd.isna(back.loc[2, "transactions"])

    revised = frame_with_nulls("2024-01-02", 45)  # 5 new dates
    revised.loc[1, "vwap"] = 101.0  # NULL -> value: a change
    revised.loc[3, "transactions"] = pd.NA  # value -> NULL: a change
    revised.loc[4, "close"] = 1.0  # a late correction
    assert counts(store.upsert_bars("X", revised)) == (45, 5, 3)
    assert counts(store.upsert_bars("X", revised)) == (45, 0, 0)  # NULL = NULL is no change
    pd.testing.assert_frame_equal(store.read_bars("X"), revised, check_dtype=False)
    window = store.read_bars("X", dt.date(2024, 1, 3), dt.date(2024, 1, 5))
    assert [d.date() for d in window["date"]] == [dt.date(2024, 1, 3), dt.date(2024, 1, 4), dt.date(2024, 1, 5)]
    assert store.read_bars("Y").empty and list(store.read_bars("Y").columns) == list(BAR_COLUMNS)


def test_bulk_write_does_not_touch_other_symbols(any_warehouse_url):
    store = BarStore(any_warehouse_url)
    store.upsert_bars("A", frame_with_nulls("2024-01-02", 30))
    before = store.read_bars("A")
    assert counts(store.upsert_bars("B", frame_with_nulls("2024-01-02", 30))) == (30, 30, 0)
    # 60 business days from 2023-12-01: 30 new, and the 30 stored ones (all from 2024-01-02) changed
    assert counts(store.upsert_bars("B", frame_with_nulls("2023-12-01", 60))) == (60, 30, 30)
    pd.testing.assert_frame_equal(store.read_bars("A"), before)
    assert store.summary()["A"][0] == 30


# ---- PostgreSQL read paths use the primary key ----------------------------------------------------
def test_read_paths_are_served_by_the_primary_key(postgres_url):
    store = BarStore(postgres_url)
    frame = frame_with_nulls("2010-01-01", 1000)
    for i in range(100):
        store.upsert_bars(f"S{i:03d}", frame)
    statements = []
    engine = store.engine

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE ohlcv_daily")
    statements.clear()
    store.refetch_start("S050", 3)
    store.summary(["S050"])
    sa.event.remove(engine, "before_cursor_execute", _capture)
    queries = [(s, p) for s, p in statements if "ohlcv_daily" in s]
    queries.append(_pg_read_query("S050", None, None))
    queries.append(_pg_read_query("S050", dt.date(2012, 1, 1), dt.date(2012, 6, 30)))
    assert len(queries) == 4
    with engine.connect() as conn:
        for statement, parameters in queries:
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            assert "ohlcv_daily_pkey" in plan and "Seq Scan" not in plan, plan
            assert "Sort" not in plan, plan  # the index order is the wanted order


# ---- Dagster's storage on PostgreSQL ----------------------------------------------------------------
def test_dagster_postgres_yaml_runs_a_full_materialisation(dagster_postgres_home, postgres_url, sandbox_polygon, monkeypatch):
    for key, value in dagster_postgres_home.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", postgres_url)
    symbols = {"AAPL": "stock", "BTCUSD": "crypto"}
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        registry = track(postgres_url, instance, symbols)
        result = run_in_process(instance, list(symbols))
        assert result.success
        for symbol, asset_class in symbols.items():
            assert registry.get(symbol).backfill_status == "completed"
            assert_stored_exactly(postgres_url, symbol, asset_class, dt.date(2024, 1, 2))
            assert len(materializations(instance, symbol)) == 1
            assert materialization_metadata(instance, symbol)["rows_inserted"] == len(served(symbol, asset_class, dt.date(2024, 1, 2)))
        for name in ("validation_rate", "date_gaps"):
            records = latest_check_records(instance, name)
            assert set(records) == set(symbols) and all(map(check_passed, records.values()))
        # the polygon_api pool lives in the shared storage with the configured default limit
        assert instance.event_log_storage.get_concurrency_info("polygon_api").slot_count == 1
        run_id = result.run_id

    # and it is all in PostgreSQL, where every other process and machine sees it
    with sa.create_engine(dagster_postgres_home.url).connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM runs WHERE run_id = :r"), {"r": run_id}).scalar() == "SUCCESS"
        assert conn.execute(
            sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r AND dagster_event_type = 'ASSET_MATERIALIZATION'"),
            {"r": run_id},
        ).scalar() == 6  # AAPL and BTCUSD's bars and returns, AAPL's corporate actions read first, their reference rows
        assert conn.execute(sa.text("SELECT count(*) FROM dynamic_partitions")).scalar() == 2


def test_dagster_postgres_yaml_matches_dagster_yaml_outside_storage():
    import yaml

    project = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((project / "dagster.yaml").read_text())
    pg = yaml.safe_load((project / "dagster.postgres.yaml").read_text())
    assert pg.pop("storage")["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    # the SQLite deployment's event log is the pooled, batching subclass of Dagster's (issue 12)
    assert base.pop("event_log_storage")["class"] == "PooledSqliteEventLogStorage"
    assert pg == base


# ---- connection handling ------------------------------------------------------------------------------
def test_a_server_restart_between_runs_is_survived(postgres_cluster, postgres_url, sandbox_polygon, instance, monkeypatch):
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", postgres_url)
    registry = track(postgres_url, instance, {"AAPL": "stock"})
    assert run_in_process(instance, ["AAPL"]).success
    postgres_cluster.restart()  # every pooled connection of this process is now dead
    sandbox_polygon.revise_bars("AAPL", served("AAPL", "stock", dt.date(2024, 1, 2))["date"].iloc[-2:], 1.5)
    result = run_in_process(instance, ["AAPL"])
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value in ("STEP_FAILURE", "STEP_UP_FOR_RETRY")]
    assert not retried  # the pool replaced its dead connections; no attempt failed
    assert materialization_metadata(instance, "AAPL")["rows_changed"] == 2
    assert registry.get("AAPL").backfill_status == "completed"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_a_run_fails_clearly_when_the_server_is_down(postgres_cluster, sandbox_polygon, instance, monkeypatch):
    down = f"postgresql+psycopg2://postgres@127.0.0.1:{_closed_port()}/warehouse"
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", down)
    instance.add_dynamic_partitions(symbols_partitions.name, ["AAPL"])
    result = run_in_process(instance, ["AAPL"])
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failures[0].step_failure_data.error.to_string()
    assert "OperationalError" in message and "Connection refused" in message and "127.0.0.1" in message
    assert sandbox_polygon.request_counts()["total"] == 0  # nothing was fetched that could not be stored


def test_a_connection_killed_mid_write_keeps_the_previous_rows_and_the_retry_completes(
    postgres_cluster, postgres_url, sandbox, tmp_path
):
    """The writer is blocked inside its merge (a test transaction holds one of the symbol's rows), its
    connection is terminated, and the symbol's committed rows are exactly what they were; the step
    retry (blocked again while we look) then completes the symbol once the row is released."""
    dbname = dbname_of(postgres_url)
    registry = track(postgres_url, None, {"SPY": "etf"})
    env = sandbox_env(sandbox, postgres_url, tmp_path / "dagster_home")
    code, out = finish(start_cli(env, "run", "SPY"))
    assert code == 0, out
    store = BarStore(postgres_url)
    before = store.read_bars("SPY")
    before_rows = snapshot(postgres_url, "SPY")
    assert len(before) == len(before_rows) == len(served("SPY", "etf", dt.date(2024, 1, 2)))

    # the next run re-fetches everything from an earlier start (new dates and existing ones) and
    # finds the last two sessions revised: a write of hundreds of rows, inserts and updates
    registry.add(["SPY"], "etf", "2023-06-01")
    revised_days = before["date"].iloc[-2:]
    sandbox.revise_bars("SPY", revised_days, 1.25)
    locked_day = before["date"].iloc[len(before) // 2].date()
    holder = admin_connection(postgres_cluster, dbname, "test_lock_holder")
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1 FROM ohlcv_daily WHERE symbol = 'SPY' AND date = %s FOR UPDATE", (locked_day,))
            assert cur.rowcount == 1
        proc = start_cli(env, "run", "SPY")
        (writer,) = wait_for_waiting_writers(
            postgres_cluster, dbname, 1, procs=[proc], query_like="%INSERT INTO ohlcv_daily%"
        )
        with holder.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (writer,))
            assert cur.fetchone()[0]
        # the step retry comes back and waits on the same row: the killed write left nothing behind
        wait_for_waiting_writers(
            postgres_cluster, dbname, 1, procs=[proc], exclude={writer}, query_like="%INSERT INTO ohlcv_daily%"
        )
        assert snapshot(postgres_url, "SPY") == before_rows
        row = registry.get("SPY")
        assert row.backfill_status == "in_progress" and "terminat" in (row.backfill_error or "")
    finally:
        holder.rollback()
        holder.close()
    code, out = finish(proc)
    assert code == 0, out
    assert "1 of 1 symbol(s) completed" in out
    row = registry.get("SPY")
    assert row.backfill_status == "completed" and row.backfill_error is None
    assert row.history_from == dt.date(2023, 6, 1)
    expected = served("SPY", "etf", dt.date(2023, 6, 1))
    after = store.read_bars("SPY")
    assert len(snapshot(postgres_url, "SPY")) == len(after) == len(expected)
    assert [d.date() for d in after["date"]] == [d.date() for d in expected["date"]]
    unrevised = ~after["date"].isin(revised_days)
    assert after.loc[unrevised, "close"].tolist() == expected.loc[unrevised.to_numpy(), "c"].tolist()
    old = before.set_index("date")["close"]
    for day in revised_days:
        assert after.set_index("date").loc[day, "close"] != old.loc[day]
