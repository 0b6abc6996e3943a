"""Every check evaluation a run records names the materialization it checks, so Dagster counts it as
the partition's current check (its per-partition check status); the ohlcv_daily checks and the
daily_returns check alike, whether the run just materialized the partitions (their storage ids
looked up without reading the events back) or runs the checks alone on stored data. And the last
bars on a partition's materialization are the stored ones."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetKey

from market_pipeline.defs.bars.checks import materialization_targets
from market_pipeline.devtools import runner
from market_pipeline_tests.test_see_data import latest, track

CHECKS = [
    AssetCheckKey(AssetKey("ohlcv_daily"), name) for name in ("validation_rate", "date_gaps", "freshness", "split_consistency")
] + [AssetCheckKey(AssetKey("daily_returns"), "unexplained_returns")]


def current(instance) -> dict:
    out = {}
    for info in instance.event_log_storage.get_asset_check_partition_info(CHECKS):
        out[(info.check_key.asset_key.to_user_string(), info.check_key.name, info.partition_key)] = (
            info.is_current, info.latest_target_materialization_storage_id, info.latest_materialization_storage_id,
        )
    return out


def test_every_check_evaluation_is_current_for_its_partition(polygon_env, warehouse_url, instance):
    track(warehouse_url, instance, {"MSFT": "stock", "AAPL": "stock"})
    first = runner.materialize_symbols(instance, ["MSFT", "AAPL"])
    assert first.ok
    seen = current(instance)
    assert len(seen) == 2 * len(CHECKS)
    for key, (is_current, target, latest_id) in seen.items():
        assert is_current and target == latest_id is not None, key

    # the targets found by storage id are those the events say
    symbols = ["MSFT", "AAPL"]
    for asset in ("ohlcv_daily", "daily_returns"):
        by_events = materialization_targets(instance, symbols, AssetKey(asset))
        by_ids = materialization_targets(instance, symbols, AssetKey(asset), first.run_ids[-1], {s: 0.0 for s in symbols})
        for symbol in symbols:
            assert by_ids[symbol].storage_id == by_events[symbol].storage_id
            assert by_ids[symbol].run_id == by_events[symbol].run_id == first.run_ids[-1]

    # a second run: the checks point at its materializations, not the first run's
    assert runner.materialize_symbols(instance, ["MSFT", "AAPL"]).ok
    again = current(instance)
    for key, (is_current, target, latest_id) in again.items():
        assert is_current and target == latest_id and latest_id > seen[key][2], key
    assert len(latest(instance, "ohlcv_daily", "MSFT")["last_bars"].records) == 10
