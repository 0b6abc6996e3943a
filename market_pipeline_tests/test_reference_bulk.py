"""Reference data in bulk, through real Dagster runs against the sandbox: a first run of new symbols
reads the list of tickers (one page per market here) instead of one lookup per symbol, and looks up
only what the active list does not return (a delisting, with its bound on the bars; a rename; an
unknown ticker); a list page that fails, loops, is cut short or malformed costs only the reference
(bars stored, the status says why, the next run tries again); the weekly refresh reads pages too,
with single lookups only for list dates (capped) and what the list cannot tell. Dates injected."""

import datetime as dt

import pytest

from market_pipeline.definitions import defs
from market_pipeline.reference.listing import LIST_DATE_PENDING
from market_pipeline.warehouse import BarStore
from market_pipeline.warehouse.reference import ReferenceStore
from market_pipeline_tests.dagster_helpers import materialization_metadata
from market_pipeline_tests.test_assets import track
from market_pipeline_tests.test_lifecycle_assets import at, run

UTC = dt.timezone.utc
MOMENT = dt.datetime(2024, 3, 8, 23, 30, tzinfo=UTC)
QUICK_RETRIES = {"polygon": {"config": {"max_attempts": 2, "backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05}}}
NEW = {
    "AAPL": "stock", "MSFT": "stock", "GOOGL": "stock", "AMZN": "stock", "NVDA": "stock", "TSLA": "stock",
    "META": "stock",  # FB's new ticker: its list row carries FB's composite FIGI
    "FB": "stock",  # renamed to META in 2022: not in the active list
    "TWTR": "stock",  # delisted 2022-10-27: not in the active list
    "DLX": "stock",  # delisted mid-history by the test
    "ZZZQ": "stock",  # unknown to Polygon
    "SPY": "stock",  # an ETF tracked as a stock
    "BTCUSD": "crypto", "ETHUSD": "crypto",
}


@pytest.fixture
def warehouse_url(request, sqlite_url):
    """SQLite, or a throwaway PostgreSQL database for the tests parametrized with "postgres"."""
    return request.getfixturevalue("postgres_url") if getattr(request, "param", "sqlite") == "postgres" else sqlite_url


def config(sandbox, resources=None) -> dict:
    out = at(MOMENT, sandbox)
    if resources:
        out["resources"] = resources
    return out


def refresh_weekly(instance, lookups=None) -> dict:
    run_config = {"ops": {"symbol_reference": {"config": {"list_date_lookups": lookups}}}} if lookups is not None else None
    result = defs.resolve_job_def("symbol_reference_job").execute_in_process(instance=instance, run_config=run_config)
    (mat,) = [e for e in result.get_asset_materialization_events()]
    return {k: v.value for k, v in mat.step_materialization_data.materialization.metadata.items()}


@pytest.mark.parametrize("warehouse_url", ["sqlite", "postgres"], indirect=True)
def test_first_run_reads_the_list_and_looks_up_only_what_it_lacks(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    sandbox.add_to_universe(["DLX"])
    sandbox.delist("DLX", "2024-02-20")
    registry = track(warehouse_url, instance, NEW, start="2024-02-01")
    sandbox.reset_counts()
    assert run(instance, list(NEW), config(sandbox)).success
    counts = sandbox.request_counts()
    # one list page per market; lookups for the three the active list lacks and the unknown one, and the
    # ticker-change probe of the two inactive stocks (rename or delisting?)
    assert counts["tickers"] == 2 and counts["ticker_detail"] == 4 and counts["ticker_events"] == 3
    assert counts["aggs_range"] == len(NEW) - 2  # FB and TWTR stopped trading before the start date
    assert counts["total"] == counts["aggs_range"] + 2 + 4 + 3 + counts["splits"] + counts["dividends"]

    refs = {s: r.record for s, r in ReferenceStore(warehouse_url).get_many().items()}
    assert set(refs) == set(NEW)
    aapl = refs["AAPL"]
    assert aapl.status == "ok" and aapl.list_date is None and aapl.status_text == LIST_DATE_PENDING
    assert aapl.composite_figi and aapl.type == "CS" and aapl.primary_exchange == "XNAS"
    assert refs["META"].status == "ok" and refs["META"].composite_figi == "BBG000MM2P62"
    assert refs["FB"].status == "renamed" and refs["FB"].renamed_to == "META" and refs["FB"].list_date == dt.date(2012, 5, 18)
    assert refs["TWTR"].status == "ok" and refs["TWTR"].delisted_on == dt.date(2022, 10, 27)
    assert refs["ZZZQ"].status == "not_found"
    assert refs["SPY"].status == "mismatch" and "--asset-class etf" in refs["SPY"].status_text
    assert refs["BTCUSD"].status == "ok" and refs["BTCUSD"].market == "crypto" and not refs["BTCUSD"].status_text  # no list date to wait for
    # the delisted ticker's own lookup bounds its bars at its last session
    assert refs["DLX"].delisted_on == dt.date(2024, 2, 20) and registry.get("DLX").delisted_on == dt.date(2024, 2, 20)
    assert BarStore(warehouse_url).summary()["DLX"][2] == dt.date(2024, 2, 20)
    meta = materialization_metadata(instance, "AAPL")
    assert meta["reference_status"] == "ok" and "weekly symbol_reference refresh" in meta["reference_status_text"]


def test_the_cheaper_way_per_market(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    track(warehouse_url, instance, {"AAPL": "stock", "SPY": "etf", "BTCUSD": "crypto"}, start="2024-02-01")
    sandbox.reset_counts()
    assert run(instance, ["AAPL", "SPY", "BTCUSD"], config(sandbox)).success
    counts = sandbox.request_counts()
    # two stocks and ETFs: one page answers both; one pair: its lookup costs what a page would, and has more
    assert counts["tickers"] == 1 and counts["ticker_detail"] == 1
    refs = ReferenceStore(warehouse_url)
    assert refs.get("AAPL").record.list_date is None and refs.get("SPY").record.status == "ok"
    assert refs.get("BTCUSD").record.status == "ok" and refs.get("BTCUSD").record.status_text in ("", None)


@pytest.mark.parametrize("fault", ["error", "truncated", "malformed", "ignore_bounds"])
def test_a_broken_list_costs_only_the_reference_and_the_next_run_retries(polygon_env, instance, warehouse_url, fault):
    sandbox = polygon_env
    stocks = {s: c for s, c in NEW.items() if c == "stock" and s not in ("FB", "TWTR", "DLX", "ZZZQ")}
    if fault == "ignore_bounds":  # a page of tickers before AAPL: asked to start at AAPL, it shows none of ours
        sandbox.add_to_universe([f"AA{a}{b}{c}" for a in "ABC" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"][:1100])
    registry = track(warehouse_url, instance, stocks, start="2024-02-01")
    sandbox.ticker_list_fault(fault)  # every list answer, until cleared
    sandbox.reset_counts()
    assert run(instance, list(stocks), config(sandbox, QUICK_RETRIES)).success
    assert sandbox.request_counts()["ticker_detail"] == 0  # no fallback to one lookup per symbol
    summary = BarStore(warehouse_url).summary()
    assert all(summary[s][2] == dt.date(2024, 3, 8) for s in stocks)  # every bar stored
    refs = ReferenceStore(warehouse_url)
    for symbol in stocks:
        record = refs.get(symbol).record
        assert record.status == "error" and record.ticker is None
        assert "list of stocks tickers could not be read" in record.status_text
        assert "the next run or the weekly symbol_reference refresh tries again" in record.status_text
    assert materialization_metadata(instance, "AAPL")["reference_status"] == "error"
    assert all(row.backfill_status == "completed" for row in registry.get_many(list(stocks)))

    sandbox.clear_ticker_list_faults()
    sandbox.reset_counts()
    assert run(instance, list(stocks), config(sandbox)).success  # a daily refresh: it tries again
    assert sandbox.request_counts()["tickers"] == 1
    assert all(refs.get(s).record.status in ("ok", "mismatch") for s in stocks)
    assert refs.get("AAPL").record.status_text == LIST_DATE_PENDING

    sandbox.reset_counts()
    assert run(instance, list(stocks), config(sandbox)).success  # nothing left to read
    assert sandbox.request_counts()["tickers"] == sandbox.request_counts()["ticker_detail"] == 0


def test_a_looping_next_url_is_never_followed(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    stocks = {"AAPL": "stock", "MSFT": "stock", "NVDA": "stock"}
    track(warehouse_url, instance, stocks, start="2024-02-01")
    sandbox.ticker_list_fault("loop")
    sandbox.reset_counts()
    assert run(instance, list(stocks), config(sandbox)).success
    assert sandbox.request_counts()["tickers"] == 1
    assert {s: r.record.status for s, r in ReferenceStore(warehouse_url).get_many().items()} == dict.fromkeys(stocks, "ok")


@pytest.mark.parametrize("warehouse_url", ["sqlite", "postgres"], indirect=True)
def test_weekly_refresh_in_pages_with_list_dates_capped(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    sandbox.now = lambda: MOMENT
    stocks = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "NFLX", "INTC", "JPM", "KO"]
    track(warehouse_url, instance, dict.fromkeys(stocks, "stock") | {"BTCUSD": "crypto", "ETHUSD": "crypto"})
    assert run(instance, stocks + ["BTCUSD", "ETHUSD"], config(sandbox)).success  # first run: from the list
    refs = ReferenceStore(warehouse_url)
    assert all(refs.get(s).record.list_date is None for s in stocks)

    sandbox.reset_counts()
    meta = refresh_weekly(instance, lookups=4)  # a small plan's cap: four list dates this week
    counts = sandbox.request_counts()
    assert counts["ticker_detail"] == 4 and counts["tickers"] == 2 and meta["requests"] == 6
    assert meta["single_lookups"] == 4 and meta["list_pages"] == 2 and meta["list_dates_pending"] == 6
    dated = [s for s in stocks if refs.get(s).record.list_date is not None]
    assert len(dated) == 4 and all(refs.get(s).record.status_text in ("", None) for s in dated)

    sandbox.reset_counts()
    meta = refresh_weekly(instance, lookups=4)  # the next week: four others
    assert sandbox.request_counts()["ticker_detail"] == 4 and meta["list_dates_pending"] == 2
    assert len([s for s in stocks if refs.get(s).record.list_date is not None]) == 8

    meta = refresh_weekly(instance)  # no pacing, no cap by default: the last two
    assert meta["list_dates_pending"] == 0
    sandbox.reset_counts()
    sandbox.delist("KO", "2024-03-01")
    meta = refresh_weekly(instance)  # steady state: pages, and one lookup for the ticker that left the list
    counts = sandbox.request_counts()
    assert counts["tickers"] == 2 and counts["ticker_detail"] == 1 and counts["ticker_events"] == 1
    assert refs.get("KO").record.delisted_on == dt.date(2024, 3, 1) and refs.get("AAPL").record.list_date is not None
    assert meta["status_ok"] == len(stocks) + 2 and meta["delisted"] == 1
