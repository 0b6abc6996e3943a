"""The `symbol_reference` asset and its weekly schedule against the sandbox, on SQLite and PostgreSQL:
mismatches on already-tracked symbols are reported (status, text, UI metadata), a reused ticker keeps
its stored identity, an unknown ticker gets a status; a refresh reads the list of tickers where it pays and
looks up only what the list cannot tell (delisted, unknown, reused, list dates)."""

import datetime as dt

import pytest
from dagster import AssetKey, RunRequest, build_schedule_context

from market_pipeline.definitions import defs
from market_pipeline.warehouse import SymbolRegistry
from market_pipeline.warehouse.reference import ReferenceStore

UTC = dt.timezone.utc


@pytest.fixture
def warehouse_url(any_warehouse_url):
    return any_warehouse_url


def refresh(instance):
    result = defs.resolve_job_def("symbol_reference_job").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    (mat,) = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("symbol_reference")]
    return {k: v.value for k, v in mat.step_materialization_data.materialization.metadata.items()}


def test_refresh_reports_mismatches_on_tracked_symbols(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    sandbox.now = lambda: dt.datetime(2019, 6, 3, 12, tzinfo=UTC)
    registry = SymbolRegistry(warehouse_url)
    registry.add(["SPY", "AAPL", "RUSE", "TWTR", "ZZZQ"], "stock")
    registry.add(["QQQ"], "etf")
    registry.add(["BTCUSD"], "crypto")
    refs = ReferenceStore(warehouse_url)
    meta = refresh(instance)
    first_figi = refs.get("RUSE").record.composite_figi
    assert refs.get("RUSE").record.status == "ok"

    sandbox.now = lambda: dt.datetime(2024, 6, 3, 12, tzinfo=UTC)
    sandbox.delist("X:BTCUSD", "2024-01-01")
    sandbox.reset_counts()
    meta = refresh(instance)
    counts = sandbox.request_counts()
    # one list page for the six stocks and ETFs (list dates known since the first refresh); lookups for
    # what the active list does not have (TWTR, ZZZQ), for the reused RUSE's new list date, and the lone pair
    assert counts["tickers"] == 1 and counts["ticker_detail"] == 4 and meta["requests"] == counts["total"] == 6
    assert meta["list_pages"] == 1 and meta["single_lookups"] == 4 and meta["list_dates_pending"] == 0
    assert counts["ticker_events"] == 1  # TWTR's first inactive answer: a delisting, not a rename

    records = {s: r.record for s, r in refs.get_many().items()}
    assert records["SPY"].status == "mismatch" and "ETF" in records["SPY"].status_text
    assert records["AAPL"].status == "ok" and records["QQQ"].status == "ok"
    assert records["ZZZQ"].status == "not_found"
    assert records["BTCUSD"].status == "mismatch" and "inactive" in records["BTCUSD"].status_text
    ruse = records["RUSE"]
    assert ruse.status == "mismatch" and "reused" in ruse.status_text and ruse.composite_figi == first_figi
    # the new security listed 2023-03-01: the stored one gets no bar request after 2023-02-28
    assert ruse.delisted_on == dt.date(2023, 2, 28) and registry.get("RUSE").delisted_on == dt.date(2023, 2, 28)
    assert records["TWTR"].status == "ok" and records["TWTR"].delisted_on == dt.date(2022, 10, 27)
    assert registry.get("TWTR").delisted_on == dt.date(2022, 10, 27)
    assert meta["status_mismatch"] == 3 and meta["status_not_found"] == 1 and meta["delisted"] == 2
    for symbol in ("SPY", "RUSE", "ZZZQ", "TWTR", "BTCUSD"):
        assert f"| {symbol} |" in meta["attention"]
    assert "| AAPL |" not in meta["attention"]

    sandbox.reset_counts()
    refresh(instance)  # the same delisting and reuse again: no second probe, no lookup for either
    counts = sandbox.request_counts()
    assert counts["ticker_events"] == 0 and counts["tickers"] == 1 and counts["ticker_detail"] == 2  # ZZZQ, BTCUSD
    assert refs.get("TWTR").record.delisted_on == dt.date(2022, 10, 27) and refs.get("RUSE").record.status == "mismatch"


def test_weekly_schedule_requests_one_run_per_tick():
    schedule = defs.get_schedule_def("symbol_reference_weekly")
    assert schedule.cron_schedule == "0 6 * * 6" and schedule.job_name == "symbol_reference_job"
    tick = dt.datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    (request,) = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick)).run_requests
    assert isinstance(request, RunRequest) and request.run_key == "symbol_reference_weekly:2026-11-21T06:00Z"
