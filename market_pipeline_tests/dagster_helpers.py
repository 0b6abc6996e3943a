"""Reading what a run recorded in a Dagster instance, as the UI does."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from dagster._core.storage.event_log.base import AssetRecordsFilter

from market_pipeline.calendars import latest_completed_session
from market_pipeline.sandbox import as_traded_bars
from market_pipeline.polygon.tickers import polygon_ticker
from market_pipeline_tests import waiting

OHLCV = AssetKey("ohlcv_daily")


def served(symbol: str, asset_class: str, start: dt.date) -> pd.DataFrame:
    """The bars the sandbox serves for a symbol from `start`: sessions that have ended, up to now."""
    return as_traded_bars(polygon_ticker(symbol, asset_class), start, latest_completed_session(asset_class))


def latest_check_records(instance: DagsterInstance, check_name: str, asset: str = "ohlcv_daily") -> dict:
    """partition -> the latest execution record of that check on `asset` (not merely planned)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(asset), check_name), limit=10_000
    )
    latest: dict = {}
    for record in records:  # most recent first
        if record.status.value in ("SUCCEEDED", "FAILED") and record.partition not in latest:
            latest[record.partition] = record
    return latest


def check_passed(record) -> bool:
    return record.event.dagster_event.event_specific_data.passed


def check_metadata(record) -> dict:
    data = record.event.dagster_event.event_specific_data
    return {k: v.value for k, v in data.metadata.items()}


def materializations(instance: DagsterInstance, partition: str | None = None) -> list:
    flt = AssetRecordsFilter(asset_key=OHLCV, asset_partitions=[partition] if partition else None)
    return list(instance.fetch_materializations(flt, limit=10_000).records)


def materialization_metadata(instance: DagsterInstance, partition: str) -> dict:
    record = materializations(instance, partition)[0]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5, progress=None):
    """Poll `predicate` until it returns something truthy (returned); `timeout` is stretched by the
    machine's load, and restarts whenever `progress()` changes (market_pipeline_tests.waiting)."""
    return waiting.wait_for(predicate, timeout, what, poll, progress)
