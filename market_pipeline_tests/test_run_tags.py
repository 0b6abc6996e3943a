"""Every run of the bars carries `market_pipeline/asset=ohlcv_daily`, whatever launched it: the CLI,
a schedule, the sensor (runs of `ohlcv_daily_job`), and the UI's Materialize, backfills and
*Execute checks* (runs of Dagster's implicit `__ASSET_JOB`, tagged by the op as it starts). The UI's
backfills and the sensor through a live daemon: test_full_stack.py."""

from __future__ import annotations

import datetime as dt

from dagster import AssetCheckKey, AssetKey

from market_pipeline.definitions import defs
from market_pipeline.defs.bars.run_start import ASSET_TAG
from market_pipeline.devtools import runner
from market_pipeline.warehouse import SymbolRegistry
from market_pipeline_tests.test_schedules import execute, seed, the_request
from market_pipeline_tests.test_sensor import evaluate as sensor_tick

TAG = {ASSET_TAG: "ohlcv_daily"}


def tagged(instance, run_id) -> bool:
    return instance.get_run_by_id(run_id).tags.get(ASSET_TAG) == "ohlcv_daily"


def test_cli_schedule_and_sensor_runs_carry_the_tag(polygon_env, instance, warehouse_url):
    registry = SymbolRegistry(warehouse_url)
    registry.add(["AAPL"], "stock", "2025-06-02")
    # the sensor's backfill request, run as the daemon launches it
    (request,) = sensor_tick(instance, warehouse_url).run_requests
    sensor_run = defs.resolve_job_def(request.job_name or "ohlcv_daily_job").execute_in_process(
        instance=instance, tags=request.tags, partition_key=request.partition_key, raise_on_error=False
    )
    assert sensor_run.success and tagged(instance, sensor_run.run_id)
    # `market-pipeline run`
    outcome = runner.materialize_symbols(instance, ["AAPL"])
    assert outcome.ok and all(tagged(instance, run_id) for run_id in outcome.run_ids)
    # a schedule tick's run
    tick = dt.datetime.now(dt.timezone.utc)
    seed(warehouse_url, instance, {"MSFT": "stock"}, history_start=tick.date() - dt.timedelta(days=30),
         target=tick.date())
    scheduled = execute(instance, the_request("stocks_daily_refresh", instance, warehouse_url, tick))
    assert tagged(instance, scheduled.run_id)
    assert defs.resolve_job_def("ohlcv_daily_job").run_tags[ASSET_TAG] == "ohlcv_daily"


def test_the_uis_asset_job_runs_are_tagged_as_they_start(polygon_env, instance, warehouse_url):
    """What the UI launches: Dagster's implicit asset job with a selection (Materialize, a backfill's
    runs, *Execute checks*), created with no tag of ours."""
    SymbolRegistry(warehouse_url).add(["SPY"], "etf", "2025-06-02")
    instance.add_dynamic_partitions("symbols", ["SPY"])
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.name == "__ASSET_JOB" and ASSET_TAG not in job.run_tags
    materialized = job.execute_in_process(
        instance=instance, partition_key="SPY", asset_selection=[AssetKey("ohlcv_daily")],
        tags={"dagster/backfill": "abcdefgh"},
    )
    assert materialized.success and tagged(instance, materialized.run_id)
    checks_only = job.get_subset(
        asset_selection=set(), asset_check_selection={AssetCheckKey(AssetKey("ohlcv_daily"), "validation_rate")}
    )
    checked = checks_only.execute_in_process(instance=instance, partition_key="SPY")
    assert checked.success and tagged(instance, checked.run_id)
