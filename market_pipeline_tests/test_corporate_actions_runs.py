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
from market_pipeline_tests.dagster_helpers import check_metadata, check_passed, latest_check_records

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
    assert check_passed(split["INTC"]) and check_metadata(split["INTC"])["splits_checked"] == 1
    # AAPL's unrecorded one: the as-traded close doubles overnight, the check names the date
    assert not check_passed(split["AAPL"])
    assert check_metadata(split["AAPL"])["unexplained_jump_dates"] == ["2023-03-20"]
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
