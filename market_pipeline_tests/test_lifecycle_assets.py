"""The symbol lifecycle through real Dagster execution against the sandbox, on SQLite and PostgreSQL:
a delisting mid-history (no requests after it, no gaps counted after it, status delisted), the
freshness check on a fresh, a stale and a delisted symbol, and FB -> META with every bar kept.
Every date is injected (the sandbox's `now`, the op's `as_of`); nothing reads the wall clock."""

import datetime as dt
import json

import pytest

from market_pipeline.devtools import runner
from market_pipeline.definitions import defs
from market_pipeline.reference import parse_ticker_details
from market_pipeline.defs.bars.reconcile import range_tags
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.reference import ReferenceStore
from market_pipeline_tests.dagster_helpers import check_metadata, check_passed, latest_check_records, materialization_metadata
from market_pipeline_tests.test_assets import track
from market_pipeline_tests.test_registry_cli import cli

UTC = dt.timezone.utc


@pytest.fixture
def warehouse_url(any_warehouse_url):
    return any_warehouse_url


def at(moment: dt.datetime, sandbox) -> dict:
    """The sandbox serves up to `moment` and the run evaluates as of it."""
    sandbox.now = lambda: moment
    return {"ops": {"ohlcv_daily": {"config": {"as_of": moment.isoformat()}}}}


def run(instance, keys, run_config, checks_only=False):
    job = defs.resolve_job_def("ohlcv_daily_job")
    if checks_only:
        job = job.get_subset(asset_check_selection=set(defs.resolve_asset_graph().asset_check_keys), asset_selection=set())
    tags = range_tags(keys) if len(keys) > 1 else None
    kwargs = {"partition_key": keys[0]} if len(keys) == 1 else {"tags": tags}
    return job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False, **kwargs)


def refresh_references(instance):
    result = defs.resolve_job_def("symbol_reference_job").execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    return result


def test_delisting_mid_history(polygon_env, instance, warehouse_url, capsys, monkeypatch):
    sandbox = polygon_env
    sandbox.add_to_universe(["DLX"])
    registry = track(warehouse_url, instance, {"DLX": "stock"}, start="2022-01-03")
    assert run(instance, ["DLX"], at(dt.datetime(2022, 3, 10, 23, 30, tzinfo=UTC), sandbox)).success
    assert BarStore(warehouse_url).summary()["DLX"][2] == dt.date(2022, 3, 10)
    assert sandbox.request_counts()["ticker_detail"] == 1  # reference fetched on its first run
    assert materialization_metadata(instance, "DLX")["reference_status"] == "ok"

    # Polygon delists it after 2022-03-15; the weekly reference refresh notices
    sandbox.delist("DLX", "2022-03-15")
    later = at(dt.datetime(2022, 6, 1, 23, 30, tzinfo=UTC), sandbox)
    refresh_references(instance)
    assert registry.get("DLX").delisted_on == dt.date(2022, 3, 15)

    sandbox.reset_counts()
    assert run(instance, ["DLX"], later).success
    store = BarStore(warehouse_url)
    count, first, last = store.summary()["DLX"]
    assert last == dt.date(2022, 3, 15) and sandbox.request_counts()["aggs_range"] == 1
    gaps = latest_check_records(instance, "date_gaps")["DLX"]
    assert check_passed(gaps) and check_metadata(gaps)["gaps_detected"] == "0"
    assert check_metadata(gaps)["last_expected"] == "2022-03-15"  # not 2022-06-01
    fresh = latest_check_records(instance, "freshness")["DLX"]
    assert check_passed(fresh) and check_metadata(fresh)["freshness"] == "delisted"
    assert registry.get("DLX").status == "delisted"

    # history complete up to the delisting: no more requests, stored history stays
    sandbox.reset_counts()
    assert run(instance, ["DLX"], later).success
    assert sandbox.request_counts()["total"] == 0
    assert store.summary()["DLX"] == (count, first, last)
    assert "delisted" in materialization_metadata(instance, "DLX")["note"]

    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", warehouse_url)
    code, out, _ = cli(capsys, "symbols", "list", "--json")
    (row,) = json.loads(out)
    assert code == 0 and row["status"] == "delisted" and row["backfill_status"] == "completed" and row["delisted_on"] == "2022-03-15"
    code, out, _ = cli(capsys, "stats", "--json")
    stats = json.loads(out)["DLX"]
    assert stats["status"] == "delisted" and stats["gaps_detected"] == 0 and stats["freshness"]["state"] == "delisted"


def test_freshness_check_fresh_then_stale(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    track(warehouse_url, instance, {"AAPL": "stock", "BTCUSD": "crypto"}, start="2024-02-01")
    friday_evening = dt.datetime(2024, 3, 9, 1, 0, tzinfo=UTC)  # Fri 2024-03-08 20:00 New York
    assert run(instance, ["AAPL", "BTCUSD"], at(friday_evening, sandbox)).success
    records = latest_check_records(instance, "freshness")
    assert check_passed(records["AAPL"]) and check_metadata(records["AAPL"])["freshness"] == "fresh"
    assert check_metadata(records["AAPL"])["last_stored"] == "2024-03-08"
    assert check_passed(records["BTCUSD"])

    # four days later nothing was refreshed: stale, WARN, naming the missing sessions
    tuesday_evening = {"ops": {"ohlcv_daily": {"config": {"as_of": "2024-03-13T01:00:00+00:00"}}}}
    sandbox.reset_counts()
    assert run(instance, ["AAPL", "BTCUSD"], tuesday_evening, checks_only=True).success
    assert sandbox.request_counts()["total"] == 0
    records = latest_check_records(instance, "freshness")
    stale = records["AAPL"]
    assert not check_passed(stale) and stale.event.dagster_event.event_specific_data.severity.value == "WARN"
    assert check_metadata(stale)["missing_sessions"] == "2024-03-11, 2024-03-12"
    assert "2024-03-11, 2024-03-12" in stale.event.dagster_event.event_specific_data.description
    assert check_metadata(records["BTCUSD"])["sessions_missing"] == "3"  # UTC days 03-09 .. 03-11 (03-12 not published yet)


def test_fb_renamed_to_meta_keeps_every_bar(polygon_env, instance, warehouse_url, capsys, monkeypatch):
    sandbox = polygon_env
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", warehouse_url)
    registry = track(warehouse_url, instance, {"FB": "stock"}, start="2022-05-02")
    config = at(dt.datetime(2022, 8, 1, 23, 30, tzinfo=UTC), sandbox)
    assert run(instance, ["FB"], config).success
    store = BarStore(warehouse_url)
    fb_bars = store.read_bars("FB")
    assert fb_bars["date"].max().date() == dt.date(2022, 6, 8)  # FB's last session
    meta = materialization_metadata(instance, "FB")
    assert meta["reference_status"] == "renamed" and meta["renamed_to"] == "META"
    assert "symbols rename FB META" in meta["reference_status_text"]

    code, out, err = cli(capsys, "symbols", "rename", "FB", "META")
    assert code == 0, err
    added, deleted = runner.reconcile_partitions(instance, registry)
    assert added == ["META"] and deleted == ["FB"]
    sandbox.reset_counts()
    assert run(instance, ["META"], config).success
    assert sandbox.request_counts()["aggs_range"] == 1 and sandbox.request_counts()["ticker_detail"] == 0
    history = store.read_bars("META")
    kept = history[history["date"] <= "2022-06-08"].reset_index(drop=True)
    assert kept.equals(fb_bars)  # every FB bar, unchanged, once
    assert history["date"].is_unique and history["date"].max().date() == dt.date(2022, 8, 1)
    assert store.read_bars("FB").empty
    gaps = latest_check_records(instance, "date_gaps")["META"]
    assert check_passed(gaps) and check_metadata(gaps)["gaps_detected"] == "0"
    assert ReferenceStore(warehouse_url).aliases() == {"FB": "META"}


def test_symbol_delisted_before_its_start_date_is_never_fetched(polygon_env, warehouse_url):
    from market_pipeline.polygon.client import PolygonClient
    from market_pipeline.refresh.ingest import refresh_symbol
    from market_pipeline.sandbox import SANDBOX_API_KEY

    registry = SymbolRegistry(warehouse_url)
    registry.add(["TWTR"], "stock", "2024-01-02")
    ReferenceStore(warehouse_url).save(
        parse_ticker_details(
            {"results": {"ticker": "TWTR", "name": "Twitter", "market": "stocks", "type": "CS", "active": False,
                         "composite_figi": "BBG000H6HNW3", "delisted_utc": "2022-10-27T00:00:00Z"}}, "TWTR", "stock"))
    store = BarStore(warehouse_url)
    with PolygonClient(SANDBOX_API_KEY, polygon_env.url, 0) as client:
        for _ in range(2):
            result = refresh_symbol(client, store, registry, registry.get("TWTR"), run_id="r", today=dt.date(2024, 6, 3))
            assert result.status == "completed" and result.requests == 0 and "before 2024-01-02" in result.note
    assert polygon_env.request_counts()["total"] == 0 and store.read_bars("TWTR").empty
    assert registry.get("TWTR").status == "delisted"
