"""Issue 15 through real Dagster runs against a hostile sandbox: a refused next_url, broken
pagination, a trickling body, unusable bars (quarantined) and empty answers; the warehouse is
compared with what a clean run stores."""

import datetime as dt

import pytest

from market_pipeline.calendars import latest_completed_session
from market_pipeline.definitions import defs
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.polygon.validate_bars import SetAside
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.quarantine import QuarantineStore
from market_pipeline_tests.dagster_helpers import materialization_metadata, served

START = dt.date(2024, 1, 2)
FAST = {"resources": {"polygon": {"config": {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05, "max_attempts": 2}}}}


def track(url, instance, symbols: dict, start=START.isoformat()):
    registry = SymbolRegistry(url)
    for symbol, asset_class in symbols.items():
        registry.add([symbol], asset_class, start)
    instance.add_dynamic_partitions(symbols_partitions.name, list(symbols))
    return registry


def run(instance, key, run_config=FAST):
    job = defs.resolve_job_def("ohlcv_daily_job")
    return job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False, run_config=run_config)


def stored_dates(url, symbol):
    return [d.date() for d in BarStore(url).read_bars(symbol)["date"]]


def clean_dates(symbol, asset_class, start=START):
    return [d.date() for d in served(symbol, asset_class, start)["date"]]


def test_a_next_url_to_another_host_fails_the_symbol_and_stores_nothing(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    registry = track(warehouse_url, instance, {"AAPL": "stock"})
    sandbox.page_size = 100
    sandbox.next_url_origin("AAPL", "http://evilpolygon.io")
    assert not run(instance, "AAPL").success
    row = registry.get("AAPL")
    assert row.backfill_status == "failed" and "refused a next_url on http://evilpolygon.io" in row.backfill_error
    assert stored_dates(warehouse_url, "AAPL") == []
    assert sandbox.request_counts()["aggs_range"] == 1  # final: neither retried by the client nor by Dagster
    sandbox.next_url_origin("AAPL", None)
    assert run(instance, "AAPL").success
    assert stored_dates(warehouse_url, "AAPL") == clean_dates("AAPL", "stock")


@pytest.mark.parametrize("kind", ["self_loop", "cursor_cycle", "endless"])
def test_broken_pagination_fails_and_keeps_the_previous_rows(polygon_env, instance, warehouse_url, kind):
    sandbox = polygon_env
    registry = track(warehouse_url, instance, {"MSFT": "stock"})
    assert run(instance, "MSFT").success
    before = BarStore(warehouse_url).read_bars("MSFT")
    # a start date further back: the next run fetches the whole history again, and pagination breaks
    registry.add(["MSFT"], "stock", "2023-06-01")
    sandbox.page_size = 100
    sandbox.paginate_badly("MSFT", kind)
    config = {"resources": {"polygon": {"config": {"max_pages": 30}}}}
    assert not run(instance, "MSFT", config).success
    row = registry.get("MSFT")
    assert row.backfill_status == "failed" and "pagination did not end" in row.backfill_error
    assert BarStore(warehouse_url).read_bars("MSFT").equals(before)  # nothing of the broken fetch stored
    sandbox.paginate_badly("MSFT", None)
    assert run(instance, "MSFT").success
    assert stored_dates(warehouse_url, "MSFT") == clean_dates("MSFT", "stock", dt.date(2023, 6, 1))


def test_a_trickling_body_fails_clearly_after_the_retries(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    registry = track(warehouse_url, instance, {"SPY": "etf"})
    sandbox.trickle_next(100, bytes_per_second=300)
    config = {"resources": {"polygon": {"config": {**FAST["resources"]["polygon"]["config"], "request_deadline_seconds": 0.3}}}}
    assert not run(instance, "SPY", config).success
    row = registry.get("SPY")
    assert row.backfill_status == "failed" and "did not finish within its 0.3s deadline" in row.backfill_error
    assert stored_dates(warehouse_url, "SPY") == []
    sandbox.clear_wire_faults()
    assert run(instance, "SPY").success
    assert stored_dates(warehouse_url, "SPY") == clean_dates("SPY", "etf")


def test_unusable_bars_are_quarantined_and_the_rest_stored(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    registry = track(warehouse_url, instance, {"AAPL": "stock"})
    bad = {
        dt.date(2024, 3, 8): "infinite_high",
        dt.date(2024, 3, 11): "negative_infinite_low",
        dt.date(2024, 3, 12): "infinite_volume",
        dt.date(2024, 3, 13): "nan_in_close",
        dt.date(2024, 3, 14): "missing_close",
        dt.date(2024, 3, 15): "utc_midnight_t",
    }
    for day, kind in bad.items():
        sandbox.corrupt_bars("AAPL", [day], kind)
    sandbox.serve_future_bars("AAPL", 2)
    assert run(instance, "AAPL").success
    expected = [d for d in clean_dates("AAPL", "stock") if d not in bad]
    assert stored_dates(warehouse_url, "AAPL") == expected  # a clean run's bars, less the 6 unusable ones
    quarantined = QuarantineStore(warehouse_url).list("AAPL")
    assert len(quarantined) == 8
    reasons = sorted((q.date, q.reason.split(" (")[0]) for q in quarantined if q.date <= dt.date(2024, 3, 15))
    assert reasons == [
        (dt.date(2024, 3, 8), "non-finite or non-numeric high"),
        (dt.date(2024, 3, 11), "non-finite or non-numeric low"),
        (dt.date(2024, 3, 12), "non-finite or non-numeric volume"),
        (dt.date(2024, 3, 13), "non-finite or non-numeric close"),
        # a stock bar at 00:00 UTC on 2024-03-15 is 20:00 New York time the day before
        (dt.date(2024, 3, 14), "missing close"),
        (dt.date(2024, 3, 14), "t=1710460800000"),
    ]
    raw_high = next(q.raw for q in quarantined if q.date == dt.date(2024, 3, 8))
    assert '"h":Infinity' in raw_high  # the raw values as they came
    # after the last completed session: within the dates asked (up to today), or after them
    future = [q for q in quarantined if "after the last completed session" in q.reason or q.reason == "outside the requested range"]
    assert len(future) == 2 and all(q.date > latest_completed_session("stock") for q in future)
    assert {q.run_id for q in quarantined} == {registry.get("AAPL").last_run_id}
    assert registry.get("AAPL").quarantined_bars == 8
    assert materialization_metadata(instance, "AAPL")["quarantined"] == 8
    # the same bad bars again: no duplicate quarantine row; the count is the last fetch's
    registry.add(["AAPL"], "stock", "2024-01-01")
    assert run(instance, "AAPL").success
    assert len(QuarantineStore(warehouse_url).list("AAPL")) == 8
    sandbox.clear_knobs()
    sandbox.serve_future_bars("AAPL", 0)
    assert run(instance, "AAPL").success
    assert registry.get("AAPL").quarantined_bars == 0


def test_a_new_symbol_with_no_bars_at_all_fails_naming_the_range(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    registry = track(warehouse_url, instance, {"AAPL": "stock"})
    sandbox.serve_empty("AAPL")
    assert not run(instance, "AAPL").success
    row = registry.get("AAPL")
    assert row.backfill_status == "failed"
    assert row.backfill_error.startswith("no bars from Polygon for AAPL 2024-01-02..")
    sandbox.serve_empty("AAPL", False)
    assert run(instance, "AAPL").success and stored_dates(warehouse_url, "AAPL") == clean_dates("AAPL", "stock")


def test_quarantine_rows_are_not_duplicated(any_warehouse_url):
    store = QuarantineStore(any_warehouse_url)
    bars = [SetAside(dt.date(2024, 3, 8), '{"h":Infinity}', "non-finite high"), SetAside(None, '"x"', "not a bar object")]
    assert store.record("AAPL", bars, "run-1") == 2
    store.record("AAPL", bars, "run-2")
    rows = store.list("AAPL")
    assert len(rows) == 2 and {r.run_id for r in rows} == {"run-2"}
    assert {r.date for r in rows} == {dt.date(2024, 3, 8), None}


def test_grouped_daily_sets_aside_a_bad_row_and_stores_the_others(polygon_env, warehouse_url):
    from market_pipeline.defs.resources import PolygonResource
    from market_pipeline.refresh.grouped import refresh_grouped

    sandbox = polygon_env
    registry = SymbolRegistry(warehouse_url)
    registry.add(["AAPL", "MSFT"], "stock", "2024-03-01")
    days = [dt.date(2024, 3, 11), dt.date(2024, 3, 12), dt.date(2024, 3, 13)]
    sandbox.corrupt_bars("AAPL", [days[1]], "infinite_volume")
    sandbox.corrupt_bars("MSFT", [days[2]], "utc_midnight_t")  # a range-endpoint t in a grouped row
    windows = [(registry.get(s), days[0]) for s in ("AAPL", "MSFT")]
    with PolygonResource().get_client() as client:
        results = list(refresh_grouped(client, BarStore(warehouse_url), registry, windows, days, days[-1], run_id="r1"))
    assert [(r.symbol, r.status, r.quarantined) for r in results] == [("AAPL", "completed", 1), ("MSFT", "completed", 1)]
    assert stored_dates(warehouse_url, "AAPL") == [days[0], days[2]]
    assert stored_dates(warehouse_url, "MSFT") == [days[0], days[1]]
    reasons = {q.symbol: q.reason for q in QuarantineStore(warehouse_url).list()}
    assert reasons["AAPL"].startswith("non-finite or non-numeric volume")
    assert "not a session boundary" in reasons["MSFT"] and "16:00 America/New_York" in reasons["MSFT"]
    assert registry.get("AAPL").quarantined_bars == 1
