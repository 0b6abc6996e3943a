"""symbol_stats (asset and table) and `market-pipeline stats`: the same numbers as the checks."""

import datetime as dt
import json

import pytest

from dagster import AssetKey

from market_pipeline.cli.main import main
from market_pipeline.definitions import defs
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.engine import get_engine
from market_pipeline.warehouse.stats_table import read_stats
from market_pipeline_tests.dagster_helpers import check_metadata, latest_check_records
from market_pipeline_tests.test_assets import run, track


def test_stats_asset_table_and_cli_agree_with_checks(polygon_env, instance, warehouse_url, capsys):
    track(warehouse_url, instance, {"AAPL": "stock", "MSFT": "stock", "BTCUSD": "crypto"})
    polygon_env.drop_bars("MSFT", [dt.date(2024, 7, 5), dt.date(2024, 7, 8)])
    polygon_env.corrupt_bars("X:BTCUSD", [dt.date(2024, 2, 3)], "negative_volume")
    assert run(instance, ["AAPL", "MSFT", "BTCUSD"]).success
    SymbolRegistry(warehouse_url).add(["EMPTY"], "stock")  # tracked, never fetched

    result = defs.resolve_job_def("symbol_stats_job").execute_in_process(instance=instance)
    assert result.success
    table = {row["symbol"]: row for row in read_stats(get_engine(warehouse_url))}
    assert set(table) == {"AAPL", "MSFT", "BTCUSD", "EMPTY"}
    assert table["MSFT"]["gaps_detected"] == 2 and table["AAPL"]["gaps_detected"] == 0
    assert table["EMPTY"]["record_count"] == 0 and table["EMPTY"]["first_date"] is None
    assert table["BTCUSD"]["record_count"] == BarStore(warehouse_url).summary()["BTCUSD"][0]

    gaps = latest_check_records(instance, "date_gaps")
    rates = latest_check_records(instance, "validation_rate")
    assert int(check_metadata(gaps["MSFT"])["gaps_detected"]) == table["MSFT"]["gaps_detected"]
    assert float(check_metadata(rates["BTCUSD"])["validation_rate"]) == pytest.approx(table["BTCUSD"]["validation_rate"], abs=1e-6)
    assert table["BTCUSD"]["validation_rate"] < 1.0

    event = instance.get_latest_materialization_event(AssetKey("symbol_stats"))
    metadata = event.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == 4
    assert "| MSFT | stock |" in metadata["table"].value

    assert main(["stats", "--json", "MSFT", "EMPTY", "btc-usd"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["MSFT"]["gaps_detected"] == 2
    assert stats["MSFT"]["date_range"]["start"] == "2024-01-02"
    assert stats["EMPTY"].pop("freshness")["state"] == "empty"
    assert stats["EMPTY"] == {
        "record_count": 0, "date_range": {"start": None, "end": None}, "validation_rate": None,
        "gaps_detected": 0, "asset_class": "stock", "status": "pending", "checks": {},
    }
    assert stats["BTCUSD"]["validation_rate"] == table["BTCUSD"]["validation_rate"]
    assert main(["stats"]) == 0 and "MSFT" in capsys.readouterr().out


def test_stats_are_requested_after_bars_update(polygon_env, instance, warehouse_url):
    from dagster import evaluate_automation_conditions

    track(warehouse_url, instance, {"AAPL": "stock", "NEWCO": "stock"})
    first = evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0  # nothing has changed yet
    assert run(instance, ["AAPL"]).success  # NEWCO still has no bars: it must not hold stats back
    after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert after.total_requested == 1
    assert after.get_num_requested(AssetKey("symbol_stats")) == 1
    defs.resolve_job_def("symbol_stats_job").execute_in_process(instance=instance)
    quiet = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert quiet.total_requested == 0
