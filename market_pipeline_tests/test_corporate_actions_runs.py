"""Corporate actions through real Dagster runs against the sandbox: the read before the bars, a late
split changing the views on the next run with no history re-fetched, split_consistency, the asset."""

import pytest
import sqlalchemy as sa
from dagster import AssetKey, materialize

from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.corporate_actions.assets import corporate_actions
from market_pipeline.defs.resources import PolygonResource, WarehouseResource
from market_pipeline.devtools import runner
from market_pipeline.warehouse import SymbolRegistry
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.engine import get_engine
from market_pipeline.warehouse.reader import read_bars
from market_pipeline_tests.dagster_helpers import (
    check_metadata,
    check_passed,
    latest_check_records,
    materialization_metadata,
)

START = "2022-12-01"


def track(url, instance, symbols: dict[str, str]):
    registry = SymbolRegistry(url)
    for symbol, asset_class in symbols.items():
        registry.add([symbol], asset_class, START)
    instance.add_dynamic_partitions(symbols_partitions.name, list(symbols))
    return registry


def ca_materializations(instance):
    return instance.fetch_materializations(AssetKey("corporate_actions"), limit=100).records


def close_on(url, view, symbol, day):
    with get_engine(url).connect() as conn:
        return conn.execute(
            sa.text(f"SELECT close FROM {view} WHERE symbol = :s AND date = :d"), {"s": symbol, "d": day}
        ).scalar()


def test_late_split_changes_the_views_on_the_next_run_without_refetching_history(polygon_env, warehouse_url, instance):
    polygon_env.add_split("AAPL", "2023-03-20", 2, 1, recorded=False)  # happened, not recorded yet
    track(warehouse_url, instance, {"AAPL": "stock", "INTC": "stock", "BTCUSD": "crypto"})
    outcome = runner.materialize_symbols(instance, ["AAPL", "INTC", "BTCUSD"])
    assert outcome.ok
    counts = polygon_env.request_counts()
    assert counts["splits"] == 1 and counts["dividends"] == 1  # one batch for both stocks, before the bars
    assert counts["aggs_range"] == 3
    first = ca_materializations(instance)
    assert len(first) == 1
    metadata = first[0].asset_materialization.metadata
    assert "INTC split" in " ".join(metadata["new"].value)
    # INTC's recorded reverse split: the views are adjusted, the check passes
    split = latest_check_records(instance, "split_consistency")
    assert check_passed(split["INTC"]) and check_metadata(split["INTC"])["splits_checked"] == "1"
    # AAPL's unrecorded one: the as-traded close doubles overnight, the check names the date
    assert not check_passed(split["AAPL"])
    assert split["AAPL"].event.dagster_event.event_specific_data.severity.value == "ERROR"
    assert check_metadata(split["AAPL"])["unexplained_jump_dates"] == "2023-03-20"
    assert check_passed(split["BTCUSD"])
    before_raw = close_on(warehouse_url, "ohlcv_daily", "AAPL", "2023-03-17")
    assert close_on(warehouse_url, "ohlcv_daily_adjusted", "AAPL", "2023-03-17") == pytest.approx(before_raw)
    with get_engine(warehouse_url).connect() as conn:
        fetched = dict(conn.execute(sa.text("SELECT date, fetched_at FROM ohlcv_daily WHERE symbol = 'AAPL'")).all())

    # the provider records the split; the next run picks it up with no history re-fetched
    polygon_env.record_split("AAPL", "2023-03-20")
    polygon_env.reset_counts()
    assert runner.materialize_symbols(instance, ["AAPL"]).ok
    counts = polygon_env.request_counts()
    assert counts["splits"] == 1 and counts["dividends"] == 1
    assert counts["aggs_range"] + counts["grouped_stocks"] <= 4  # the re-fetch window only
    assert close_on(warehouse_url, "ohlcv_daily_adjusted", "AAPL", "2023-03-17") == pytest.approx(2 * before_raw)
    assert close_on(warehouse_url, "ohlcv_daily", "AAPL", "2023-03-17") == before_raw
    with get_engine(warehouse_url).connect() as conn:
        refetched = dict(conn.execute(sa.text("SELECT date, fetched_at FROM ohlcv_daily WHERE symbol = 'AAPL'")).all())
    changed = [d for d, at in refetched.items() if fetched.get(d) != at]
    assert len(changed) <= 4 and all(str(d) > "2023-03-20" for d in changed)  # only the newest sessions
    latest = ca_materializations(instance)[0].asset_materialization.metadata
    assert [e for e in latest["new"].value if e.startswith("AAPL split")]
    assert check_passed(latest_check_records(instance, "split_consistency")["AAPL"])  # passes again
    # read_bars gives the adjusted history: today's basis across the split
    frame = read_bars("AAPL", start="2023-03-17", end="2023-03-20", adjustment="splits", url=warehouse_url)
    closes = frame["close"].tolist()
    assert 0.7 < closes[1] / closes[0] < 1.4


def test_failed_corporate_actions_read_keeps_views_and_says_why(polygon_env, warehouse_url, instance):
    track(warehouse_url, instance, {"INTC": "stock"})
    assert runner.materialize_symbols(instance, ["INTC"]).ok
    adjusted = close_on(warehouse_url, "ohlcv_daily_adjusted", "INTC", "2023-03-17")
    polygon_env.withdraw_split("INTC", "2023-03-20")
    polygon_env.fail_next(6, status=503)  # every attempt of the splits read
    assert runner.materialize_symbols(instance, ["INTC"]).ok  # the bars are still refreshed
    row = SymbolRegistry(warehouse_url).get("INTC")
    assert row.corporate_actions_status == "failed" and "503" in row.corporate_actions_error
    assert close_on(warehouse_url, "ohlcv_daily_adjusted", "INTC", "2023-03-17") == adjusted  # unchanged
    # the asset's whole-list sweep then sees the withdrawal
    result = materialize(
        [corporate_actions], instance=instance,
        resources={"polygon": PolygonResource(), "warehouse": WarehouseResource()},
    )
    assert result.success
    metadata = ca_materializations(instance)[0].asset_materialization.metadata
    assert [e for e in metadata["withdrawn"].value if e.startswith("INTC split")]
    assert [s.status for s in CorporateActionStore(warehouse_url).splits("INTC")] == ["withdrawn"]
    assert SymbolRegistry(warehouse_url).get("INTC").corporate_actions_status == "ok"
    raw = close_on(warehouse_url, "ohlcv_daily", "INTC", "2023-03-17")
    assert close_on(warehouse_url, "ohlcv_daily_adjusted", "INTC", "2023-03-17") == pytest.approx(raw)


def test_upgrade_refetches_adjusted_bars_as_traded_once(polygon_env, warehouse_url, instance):
    """A warehouse written by the previous version: at revision 0001, MSFT's bars fetched with
    adjusted=true (split-adjusted for its 2025-12-01 2-for-1). The upgrade marks them; the next run
    re-fetches them as traded with one request; the adjusted view then equals adjusted=true."""
    import datetime as dt

    from market_pipeline.polygon.client import PolygonClient
    from market_pipeline.sandbox import SANDBOX_API_KEY
    from market_pipeline.warehouse import BarStore
    from market_pipeline.warehouse.engine import dispose_engine, normalize_url, upgrade
    from market_pipeline.warehouse.store import clock_at

    url = normalize_url(warehouse_url)
    engine = sa.create_engine(url)
    upgrade(engine, "0001")
    with PolygonClient(SANDBOX_API_KEY, polygon_env.url, 0) as client:
        client._adjusted = lambda asset_class: "true"  # what the previous version asked for
        old = client.daily_bars("MSFT", "stock", dt.date(2025, 6, 2), dt.date(2026, 3, 31))
    stamp = dt.datetime(2026, 4, 1)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO tracked_symbols (symbol, asset_class, active, start_date, backfill_status, history_from, "
            "created_at, updated_at) VALUES ('MSFT', 'stock', :t, :d, 'completed', :d, :n, :n)"),
            {"t": True, "d": dt.date(2025, 6, 2), "n": stamp})
        conn.execute(
            sa.text("INSERT INTO ohlcv_daily (symbol, date, open, high, low, close, volume, vwap, transactions, "
                    "fetched_at) VALUES ('MSFT', :date, :open, :high, :low, :close, :volume, :vwap, :transactions, :n)"),
            [{**r, "date": r["date"].date(), "transactions": int(r["transactions"]), "n": stamp}
             for r in old.to_dict("records")],
        )
    engine.dispose()
    dispose_engine(url)
    BarStore(url).summary()  # first use: upgraded to head, MSFT marked 'adjusted'
    assert SymbolRegistry(url).get("MSFT").bars_basis == "adjusted"
    instance.add_dynamic_partitions(symbols_partitions.name, ["MSFT"])
    polygon_env.reset_counts()
    assert runner.materialize_symbols(instance, ["MSFT"]).ok
    assert polygon_env.request_counts()["aggs_range"] == 1  # the whole history, once
    log = [e.path for e in polygon_env.request_log() if e.endpoint == "aggs_range"]
    assert "/2025-06-02/" in log[0] and "adjusted=false" in log[0]
    assert SymbolRegistry(url).get("MSFT").bars_basis == "as_traded"
    assert "re-fetched as traded" in materialization_metadata(instance, "MSFT")["note"]  # visible in the UI
    # the re-fetch kept every value it replaced, in its transaction: the history before it reads back
    with get_engine(url).connect() as conn:
        kept = conn.execute(sa.text("SELECT count(*) FROM ohlcv_revisions WHERE symbol = 'MSFT'")).scalar()
    assert materialization_metadata(instance, "MSFT")["bars_revised"] == kept > 100
    with clock_at(dt.datetime(2026, 4, 2)):
        held = read_bars(["MSFT"], url=url, as_of="2026-04-01T12:00:00Z")
    assert held["close"].tolist() == old["close"].tolist() and held["volume"].tolist() == old["volume"].tolist()
    raw = close_on(url, "ohlcv_daily", "MSFT", "2025-11-28")
    adjusted = close_on(url, "ohlcv_daily_adjusted", "MSFT", "2025-11-28")
    expected = float(old.loc[old["date"] == "2025-11-28", "close"].item())
    assert raw == pytest.approx(2 * expected, abs=1e-3) and adjusted == pytest.approx(expected, abs=1e-3)
    assert runner.materialize_symbols(instance, ["MSFT"]).ok  # the next run: the re-fetch window only
    assert polygon_env.request_counts()["aggs_range"] == 2
