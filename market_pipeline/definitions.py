"""The market_pipeline code location: `defs` is what workspace.yaml loads."""

from dagster import Definitions

from market_pipeline import dagster_patches  # noqa: F401  (the polygon_api pool's one-holder claim)
from market_pipeline.assets import ohlcv_daily, symbol_stats, tracked_symbols
from market_pipeline.jobs import ohlcv_job, stats_job
from market_pipeline.resources import PolygonResource, WarehouseResource
from market_pipeline.schedules import refresh_schedules
from market_pipeline.sensors import (
    symbol_stats_automation_sensor,
    symbols_run_canceled_sensor,
    symbols_run_failure_sensor,
    tracked_symbols_sensor,
)

defs = Definitions(
    assets=[tracked_symbols, ohlcv_daily, symbol_stats],
    jobs=[ohlcv_job, stats_job],
    schedules=refresh_schedules,
    sensors=[tracked_symbols_sensor, symbols_run_failure_sensor, symbols_run_canceled_sensor, symbol_stats_automation_sensor],
    resources={"polygon": PolygonResource(), "warehouse": WarehouseResource()},
)
