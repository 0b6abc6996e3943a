"""ohlcv_daily and its checks through real Dagster execution: a real instance, the sandbox over
HTTP and a real warehouse. Single partitions, batched runs, failures, retries, check-only runs."""

import datetime as dt

import pandas as pd
import pytest
from dagster import AssetCheckKey

from market_pipeline.definitions import defs
from market_pipeline.defs.bars.assets import FULL_REFETCH_TAG
from market_pipeline.defs.bars.checks import OHLCV_KEY
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.reconcile import range_tags
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline_tests.dagster_helpers import (
    check_metadata,
    check_passed,
    latest_check_records,
    materialization_metadata,
    materializations,
    served,
)

MIXED = {"AAPL": "stock", "BRK.B": "stock", "SPY": "etf", "BTCUSD": "crypto", "ETHUSD": "crypto"}


@pytest.fixture
def warehouse_url(any_warehouse_url) -> str:
    """Every test here runs on SQLite and on PostgreSQL (polygon_env points the runs at this URL too)."""
    return any_warehouse_url


def track(url, instance, symbols: dict, start: str | None = "2024-01-02"):
    registry = SymbolRegistry(url)
    for symbol, asset_class in symbols.items():
        registry.add([symbol], asset_class, start)
    instance.add_dynamic_partitions(symbols_partitions.name, list(symbols))
    return registry


def run(instance, keys, **kw):
    job = defs.resolve_job_def("ohlcv_daily_job")
    if len(keys) == 1:
        return job.execute_in_process(instance=instance, partition_key=keys[0], raise_on_error=False, **kw)
    return job.execute_in_process(instance=instance, tags=range_tags(keys), raise_on_error=False, **kw)


def test_single_partition_stores_exactly_the_served_bars(polygon_env, instance, warehouse_url):
    registry = track(warehouse_url, instance, {"AAPL": "stock"})
    result = run(instance, ["AAPL"])
    assert result.success
    stored = BarStore(warehouse_url).read_bars("AAPL")
    expected = served("AAPL", "stock", dt.date(2024, 1, 2))
    assert [d.date() for d in stored["date"]] == [d.date() for d in expected["date"]]
    assert stored["close"].tolist() == expected["c"].tolist()
    row = registry.get("AAPL")
    assert row.backfill_status == "completed" and row.backfill_error is None and row.last_backfill is not None
    meta = materialization_metadata(instance, "AAPL")
    assert meta["dagster/partition_row_count"] == len(expected) == meta["rows_fetched"]
    assert meta["dagster/row_count"] == len(expected)  # the table holds only AAPL so far
    assert meta["dagster/table_name"] == "ohlcv_daily"
    assert meta["first_date"] == "2024-01-02" and meta["requests"] == 1
    for name in ("validation_rate", "date_gaps"):
        record = latest_check_records(instance, name)["AAPL"]
        assert check_passed(record)


def test_row_counts_are_the_partitions_and_the_tables(polygon_env, instance, warehouse_url):
    """The catalog's "Row count" is the table's (all symbols); each partition's own count has its own key."""
    track(warehouse_url, instance, MIXED)
    assert run(instance, list(MIXED)).success
    summary = BarStore(warehouse_url).summary()
    table_rows = sum(n for n, _, _ in summary.values())
    counts = {s: materialization_metadata(instance, s) for s in MIXED}
    for symbol, meta in counts.items():
        assert meta["dagster/partition_row_count"] == summary[symbol][0]
    # the last symbol stored sees the whole table; every count lies between its own rows and the total
    assert max(meta["dagster/row_count"] for meta in counts.values()) == table_rows
    assert all(summary[s][0] <= meta["dagster/row_count"] <= table_rows for s, meta in counts.items())
    spec_meta = defs.resolve_assets_def("ohlcv_daily").specs_by_key[OHLCV_KEY].metadata
    assert spec_meta["dagster/table_name"] == "ohlcv_daily"
    columns = [c.name for c in spec_meta["dagster/column_schema"].columns]
    assert columns[:2] == ["symbol", "date"] and "vwap" in columns


def test_check_metadata_has_no_plotted_per_symbol_numbers(polygon_env, instance, warehouse_url):
    """Dagster plots numeric check metadata across evaluations of every partition: none is numeric."""
    from dagster import FloatMetadataValue, IntMetadataValue

    track(warehouse_url, instance, {"AAPL": "stock", "BTCUSD": "crypto"})
    assert run(instance, ["AAPL", "BTCUSD"]).success
    for name in ("validation_rate", "date_gaps"):
        for symbol, record in latest_check_records(instance, name).items():
            metadata = record.event.dagster_event.event_specific_data.metadata
            numeric = [k for k, v in metadata.items() if isinstance(v, (IntMetadataValue, FloatMetadataValue))]
            assert numeric == [], (name, symbol, numeric)
            assert check_passed(record) and "severity" not in metadata  # a pass does not read as a warning
            assert metadata["symbol"].value == symbol


def test_no_did_not_yield_message(polygon_env, instance, warehouse_url):
    """Every check the op declares is accounted for: no "did not yield or return expected outputs" line."""
    track(warehouse_url, instance, {"AAPL": "stock", "SPY": "etf"})
    for keys in (["AAPL"], ["AAPL", "SPY"]):
        result = run(instance, keys)
        assert result.success
        messages = [e.message or "" for e in instance.all_logs(result.run_id)]
        assert not [m for m in messages if "did not yield" in m], keys
    checks_only = defs.resolve_job_def("ohlcv_daily_job").get_subset(
        asset_check_selection={AssetCheckKey(OHLCV_KEY, "date_gaps")}, asset_selection=set()
    )
    result = checks_only.execute_in_process(instance=instance, tags=range_tags(["AAPL", "SPY"]), raise_on_error=False)
    assert result.success
    assert not [e for e in instance.all_logs(result.run_id) if "did not yield" in (e.message or "")]


def test_full_refetch_tag_fetches_the_whole_history_again(polygon_env, instance, warehouse_url):
    track(warehouse_url, instance, {"AAPL": "stock"})
    assert run(instance, ["AAPL"]).success
    assert run(instance, ["AAPL"]).success
    window = materialization_metadata(instance, "AAPL")
    assert window["rows_fetched"] <= 4  # the re-fetch window only
    assert run(instance, ["AAPL"], tags={FULL_REFETCH_TAG: "true"}).success
    full = materialization_metadata(instance, "AAPL")
    assert full["fetch_from"] == "2024-01-02" and full["rows_fetched"] == full["dagster/partition_row_count"]


def test_batched_run_mixed_classes_records_each_partition(polygon_env, instance, warehouse_url):
    registry = track(warehouse_url, instance, MIXED)
    result = run(instance, list(MIXED))
    assert result.success
    store = BarStore(warehouse_url)
    summary = store.summary()
    for symbol, asset_class in MIXED.items():
        assert registry.get(symbol).backfill_status == "completed"
        assert len(materializations(instance, symbol)) == 1
        first_day = store.read_bars(symbol)["date"].iloc[0].date()
        assert first_day == (dt.date(2024, 1, 2) if asset_class != "crypto" else dt.date(2024, 1, 2))
    # crypto has a bar every day, stocks only on sessions
    assert summary["BTCUSD"][0] > summary["AAPL"][0]
    weekend = store.read_bars("BTCUSD", dt.date(2024, 1, 6), dt.date(2024, 1, 7))
    assert len(weekend) == 2 and store.read_bars("AAPL", dt.date(2024, 1, 6), dt.date(2024, 1, 7)).empty
    for name in ("validation_rate", "date_gaps"):
        records = latest_check_records(instance, name)
        assert set(records) == set(MIXED), name
        assert all(check_passed(r) for r in records.values())
        assert all(r.run_id == result.run_id for r in records.values())


def test_rerun_refetches_window_without_duplicates(polygon_env, instance, warehouse_url):
    track(warehouse_url, instance, {"SPY": "etf"})
    assert run(instance, ["SPY"]).success
    count = BarStore(warehouse_url).summary()["SPY"][0]
    polygon_env.reset_counts()
    assert run(instance, ["SPY"]).success
    assert BarStore(warehouse_url).summary()["SPY"][0] == count
    meta = materialization_metadata(instance, "SPY")
    assert meta["rows_fetched"] == 3 and meta["rows_inserted"] == 0  # the last 3 stored sessions
    assert polygon_env.request_counts()["aggs_range"] == 1


def test_failing_symbol_does_not_block_the_batch(polygon_env, instance, warehouse_url):
    registry = track(warehouse_url, instance, {"AAPL": "stock", "MSFT": "stock", "SPY": "etf"})
    registry.add(["MSFT"], "stock", "1990-01-02")  # older than the plan allows
    polygon_env.history_limit_days = 365 * 5
    result = run(instance, ["AAPL", "MSFT", "SPY"])
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "MSFT" in failure.step_failure_data.error.message
    msft = registry.get("MSFT")
    assert msft.backfill_status == "failed" and "403" in msft.backfill_error and "NOT_AUTHORIZED" in msft.backfill_error
    assert registry.get("AAPL").backfill_status == "completed" and registry.get("SPY").backfill_status == "completed"
    assert {m.partition_key for m in materializations(instance)} == {"AAPL", "SPY"}
    assert polygon_env.request_counts()["aggs_range"] == 3  # a final 403 is not retried by Dagster either


def test_transient_failure_is_retried_without_duplicates(polygon_env, instance, warehouse_url):
    track(warehouse_url, instance, {"AAPL": "stock", "SPY": "etf"})
    polygon_env.fail_next(1, status=503)
    result = run(
        instance, ["AAPL", "SPY"],
        run_config={"resources": {"polygon": {"config": {"max_attempts": 1}}}},
    )
    assert result.success  # the step retry re-ran the symbol that failed
    assert {m.partition_key for m in materializations(instance)} == {"AAPL", "SPY"}
    assert len(materializations(instance)) == 2  # the one that succeeded first was not redone
    summary = BarStore(warehouse_url).summary()
    assert summary["AAPL"][0] == summary["SPY"][0]


def test_checks_fail_on_corrupted_and_missing_bars(polygon_env, instance, warehouse_url):
    track(warehouse_url, instance, {"AAPL": "stock", "MSFT": "stock"})
    polygon_env.drop_bars("MSFT", [dt.date(2024, 7, 5)])
    march = [dt.date(2024, 3, d) for d in (1, 4, 5, 6, 7, 8, 11, 12, 13, 14)]  # 10 sessions of ~725
    polygon_env.corrupt_bars("MSFT", march, "high_below_low")
    assert run(instance, ["AAPL", "MSFT"]).success
    rates = latest_check_records(instance, "validation_rate")
    gaps = latest_check_records(instance, "date_gaps")
    assert check_passed(rates["AAPL"]) and check_passed(gaps["AAPL"])
    assert not check_passed(rates["MSFT"]) and not check_passed(gaps["MSFT"])
    failures = {r.data["name"]: r.data["value"] for r in check_metadata(rates["MSFT"])["failures"].records}
    assert failures["high_ge_low"] == 10
    assert rates["MSFT"].event.dagster_event.event_specific_data.severity.value == "WARN"  # 0.986: above 0.95
    assert check_metadata(gaps["MSFT"])["gaps_detected"] == "1"
    assert "severity" in check_metadata(gaps["MSFT"]) and "severity" not in check_metadata(gaps["AAPL"])


def test_checks_only_run_on_stored_bars(polygon_env, instance, warehouse_url):
    track(warehouse_url, instance, {"AAPL": "stock", "SPY": "etf"})
    assert run(instance, ["AAPL", "SPY"]).success
    polygon_env.reset_counts()
    job = defs.resolve_job_def("ohlcv_daily_job")
    checks_only = job.get_subset(asset_check_selection=set(defs.resolve_asset_graph().asset_check_keys), asset_selection=set())
    result = checks_only.execute_in_process(instance=instance, tags=range_tags(["AAPL", "SPY"]), raise_on_error=False)
    assert result.success
    assert polygon_env.request_counts()["total"] == 0
    for name in ("validation_rate", "date_gaps"):
        records = latest_check_records(instance, name)
        assert {records[s].run_id for s in ("AAPL", "SPY")} == {result.run_id}


def test_stored_errors_never_hold_the_key(polygon_env, instance, warehouse_url, monkeypatch):
    secret = "pk_live_0123456789SECRET"
    monkeypatch.setenv("POLYGON_API_KEY", secret)  # not a key the sandbox knows: 401
    registry = track(warehouse_url, instance, {"AAPL": "stock"})
    result = run(instance, ["AAPL"])
    assert not result.success
    row = registry.get("AAPL")
    assert row.backfill_status == "failed" and "401" in row.backfill_error and "Unknown API Key" in row.backfill_error
    assert secret not in row.backfill_error
    for record in instance.get_records_for_run(result.run_id, limit=10_000).records:
        assert secret not in str(record.event_log_entry)
    assert all(secret not in entry.path for entry in polygon_env.request_log())


def test_whole_history_checks_use_the_bars_just_stored(sandbox, warehouse_url):
    """After a whole-history fetch the checks skip reading the rows back: the frame they use must be
    exactly what the warehouse holds (values, NULL vwap/transactions, order); after a re-fetch of the
    window, the stored rows are more than the bars written, so the checks read them."""
    from market_pipeline.refresh.ingest import refresh_symbol
    from market_pipeline.polygon.client import PolygonClient
    from market_pipeline.sandbox import SANDBOX_API_KEY
    registry, store = SymbolRegistry(warehouse_url), BarStore(warehouse_url)
    registry.add(["AAPL"], "stock", "2024-01-02")
    registry.add(["BTCUSD"], "crypto", "2024-01-02")
    with PolygonClient(SANDBOX_API_KEY, sandbox.url, 0) as client:
        for symbol in ("AAPL", "BTCUSD"):
            first = refresh_symbol(client, store, registry, registry.get(symbol), run_id="r1")
            assert first.status == "completed" and first.stored_bars is not None
            pd.testing.assert_frame_equal(first.stored_bars, store.read_bars(symbol), check_dtype=False)
            again = refresh_symbol(client, store, registry, registry.get(symbol), run_id="r2")
            assert again.status == "completed" and again.rows_fetched < again.rows_stored
            assert again.stored_bars is None
