"""A big run's charts drawn in a worker process: the same images as drawn in the run's process, every
materialization recorded with its chart (and before the checks that judge it), and a worker that
dies costs no chart."""

from __future__ import annotations

import logging
import os
import signal

import pandas as pd
from dagster import AssetKey
from dagster._core.storage.event_log.base import AssetRecordsFilter

from market_pipeline.charts.process import ChartProcess, draw_symbol_chart
from market_pipeline.defs.bars import views
from market_pipeline.devtools import runner
from market_pipeline_tests.dagster_helpers import check_passed, latest_check_records
from market_pipeline_tests.test_see_data import PNG_SIGNATURE, latest, png_in, track
from market_pipeline_tests.waiting import wait_for


def inputs(symbol: str = "ZAA", n: int = 300) -> dict:
    dates = pd.bdate_range("2023-01-02", periods=n)
    close = 100 + (pd.Series(range(n)) % 17).to_numpy(dtype="float64")
    bars = pd.DataFrame({"date": dates, "close": close, "volume": 1000.0 + close})
    return dict(symbol=symbol, bars=bars, adjusted_close=None, splits=[(dates[100].date(), "2-for-1")],
                dividends=[dates[50].date()], quarantined=[], missing=[], subtitle="drawn for: new history")


def test_the_worker_draws_what_the_run_would_and_a_dead_worker_costs_no_chart(caplog):
    here = draw_symbol_chart(inputs())
    assert here.drawn
    with ChartProcess(timeout=30.0) as process, caplog.at_level(logging.WARNING):
        wait_for(lambda: process.ready, 60, "the chart process to start")
        future = process.draw(inputs())
        assert future is not None
        assert process.chart(future, inputs()).png == here.png and process.drawn == 1
        (pid,) = list(process._pool._processes)
        os.kill(pid, signal.SIGKILL)
        future = process.draw(inputs())  # submitted to a pool whose worker is dead, or refused
        chart = process.chart(future, inputs()) if future is not None else draw_symbol_chart(inputs())
        assert chart.png == here.png and process.drawn == 1
        wait_for(lambda: not process.ready, 60, "the pool to be given up")
        assert process.draw(inputs()) is None
    assert any("the chart process stopped" in r.getMessage() for r in caplog.records)


def test_a_big_run_records_every_materialization_with_its_chart_before_its_checks(polygon_env, warehouse_url, instance, monkeypatch):
    monkeypatch.setattr(views, "CHART_PROCESS_FROM", 3)
    ready = ChartProcess.draw

    def draw_when_started(self, chart_inputs):  # the worker takes a second to start: make it draw them all
        wait_for(lambda: self.ready, 60, "the chart process to start")
        return ready(self, chart_inputs)

    monkeypatch.setattr(ChartProcess, "draw", draw_when_started)
    symbols = {"AAPL": "stock", "MSFT": "stock", "SPY": "etf", "BTCUSD": "crypto"}
    track(warehouse_url, instance, symbols)
    result = runner.materialize_symbols(instance, list(symbols))
    assert result.ok
    checks = {name: latest_check_records(instance, name) for name in ("validation_rate", "date_gaps")}
    for symbol in symbols:
        assert png_in(latest(instance, "ohlcv_daily", symbol)["chart"].value).startswith(PNG_SIGNATURE)
        (materialized,) = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("ohlcv_daily"), asset_partitions=[symbol]), limit=1
        ).records
        for name, records in checks.items():  # each check judged the materialization with the chart
            record = records[symbol]
            target = record.event.dagster_event.event_specific_data.target_materialization_data
            assert check_passed(record) and target.storage_id == materialized.storage_id, (symbol, name)
    logs = [e.message for e in instance.all_logs(result.run_ids[0]) if e.message]
    assert any("charts: 4 drawn" in m and "4 of them in the chart process" in m for m in logs), [m for m in logs if "charts:" in m]
