"""Seeing the data: charts and sample rows on the materializations, daily_returns downstream of the
bars, an honest catalog, and check outcomes wherever a run reports. Real Dagster runs against the
sandbox, real SQLite."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, MarkdownMetadataValue, RunsFilter, TableMetadataValue, TextMetadataValue
from dagster._core.storage.event_log.base import AssetRecordsFilter

from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.devtools import runner
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.engine import get_engine
from market_pipeline_tests.dagster_helpers import check_passed, latest_check_records
from market_pipeline_tests.test_main_job import fresh_home  # noqa: F401  (a fixture: a fresh project home)

START = "2022-12-01"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def track(url, instance, symbols: dict[str, str]) -> None:
    registry = SymbolRegistry(url)
    for symbol, asset_class in symbols.items():
        registry.add([symbol], asset_class, START)
    instance.add_dynamic_partitions(symbols_partitions.name, list(symbols))


def latest(instance, asset: str, partition: str) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return dict(records[0].asset_materialization.metadata)


def png_in(markdown: str) -> bytes:
    found = re.search(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert found, markdown[:300]
    return base64.b64decode(found.group(1))


def view_returns(url: str, symbol: str) -> pd.DataFrame:
    """Daily returns computed by hand from the adjusted views."""
    with get_engine(url).connect() as conn:
        total = conn.execute(sa.text("SELECT date, close FROM ohlcv_daily_total_return WHERE symbol = :s ORDER BY date"), {"s": symbol}).all()
        split = conn.execute(sa.text("SELECT date, close FROM ohlcv_daily_adjusted WHERE symbol = :s ORDER BY date"), {"s": symbol}).all()
    tr = np.array([c for _, c in total])
    sp = np.array([c for _, c in split])
    return pd.DataFrame({
        "date": pd.to_datetime([str(d) for d, _ in total][1:]),
        "total_return": tr[1:] / tr[:-1] - 1,
        "log_return": np.log(tr[1:] / tr[:-1]),
        "split_adjusted_return": sp[1:] / sp[:-1] - 1,
    })


def assert_returns_match_views(url: str, symbol: str) -> pd.DataFrame:
    from market_pipeline import read_returns

    stored = read_returns(symbol, url=url).loc[symbol].reset_index()
    expected = view_returns(url, symbol)
    assert stored["date"].tolist() == expected["date"].tolist()
    for column in ("total_return", "log_return", "split_adjusted_return"):
        assert np.allclose(stored[column], expected[column], rtol=1e-12, atol=1e-15), column
    return stored


def test_partition_materialization_shows_a_chart_and_its_last_bars(polygon_env, warehouse_url, instance):
    from PIL import Image

    track(warehouse_url, instance, {"MSFT": "stock", "BTCUSD": "crypto"})
    first = runner.materialize_symbols(instance, ["MSFT", "BTCUSD"])
    assert first.ok
    store = BarStore(warehouse_url)
    for symbol in ("MSFT", "BTCUSD"):
        metadata = latest(instance, "ohlcv_daily", symbol)
        png = png_in(metadata["chart"].value)
        assert png.startswith(PNG_SIGNATURE) and 2_000 < len(png) < 60_000
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
            assert image.size == (720, 380)
        records = metadata["last_bars"].records
        stored = store.read_bars(symbol).tail(10).iloc[::-1]  # newest first
        assert [r.data["date"] for r in records] == [d.date().isoformat() for d in stored["date"]]
        for column in ("open", "high", "low", "close", "volume", "vwap"):
            assert [r.data[column] for r in records] == stored[column].tolist(), column
        assert [r.data["transactions"] for r in records] == [int(t) for t in stored["transactions"]]

    # a run that changes no bar draws no new chart, and says which run's materialization holds the last one
    second = runner.materialize_symbols(instance, ["MSFT", "BTCUSD"])
    assert second.ok
    note = latest(instance, "ohlcv_daily", "MSFT")["chart"].value
    assert note.startswith("No new chart: no bar changed in this run.") and first.run_ids[0][:8] in note
    assert len(latest(instance, "ohlcv_daily", "MSFT")["last_bars"].records) == 10


def test_charts_are_bounded_and_never_fail_a_materialization(polygon_env, warehouse_url, instance, monkeypatch):
    from market_pipeline.charts import render, symbol_chart

    monkeypatch.setenv("MARKET_PIPELINE_CHARTS_PER_RUN", "1")
    track(warehouse_url, instance, {"AAPL": "stock", "SPY": "etf"})
    assert runner.materialize_symbols(instance, ["AAPL", "SPY"]).ok
    charts = [latest(instance, "ohlcv_daily", s)["chart"].value for s in ("AAPL", "SPY")]
    assert sum(c.startswith("![") for c in charts) == 1
    assert any("drew the 1 charts it may (MARKET_PIPELINE_CHARTS_PER_RUN)" in c for c in charts)

    # a plotting error leaves a one-line note instead of the image; the run and its bars go on
    def broken(*args, **kwargs):
        raise RuntimeError("no canvas")

    monkeypatch.setattr(render, "_symbol_png", broken)
    monkeypatch.setenv("MARKET_PIPELINE_CHARTS_PER_RUN", "200")
    track(warehouse_url, instance, {"INTC": "stock"})
    assert runner.materialize_symbols(instance, ["INTC"]).ok
    assert latest(instance, "ohlcv_daily", "INTC")["chart"].value == "No chart: the chart could not be drawn (RuntimeError: no canvas)"
    # no bars at all: a note, not an image
    empty = symbol_chart("XYZ", pd.DataFrame({"date": [], "close": [], "volume": []}), quarantined=[pd.Timestamp("2024-01-02").date()])
    assert empty.png is None and empty.note == "XYZ has no stored bars (1 quarantined)"


def test_daily_returns_follow_the_total_return_view_through_a_late_split_and_dividend(polygon_env, warehouse_url, instance):
    polygon_env.add_split("AAPL", "2023-03-20", 2, 1, recorded=False)  # in the prices, not listed yet
    track(warehouse_url, instance, {"AAPL": "stock", "BTCUSD": "crypto"})
    assert runner.materialize_symbols(instance, ["AAPL", "BTCUSD"]).ok
    for symbol in ("AAPL", "BTCUSD"):
        assert_returns_match_views(warehouse_url, symbol)
        assert latest(instance, "daily_returns", symbol)["recomputed"].value == "the whole history: no returns kept yet"
    # the unrecorded split doubles the price overnight: a return no recorded event explains, listed
    unexplained = latest_check_records(instance, "unexplained_returns", "daily_returns")
    assert not check_passed(unexplained["AAPL"]) and check_passed(unexplained["BTCUSD"])
    listed = unexplained["AAPL"].event.dagster_event.event_specific_data.metadata["unexplained_returns"]
    assert [r.data["date"] for r in listed.records] == ["2023-03-20"]
    for symbol in ("AAPL", "BTCUSD"):  # a return for every bar after the first
        assert latest(instance, "daily_returns", symbol)["dagster/partition_row_count"].value == len(BarStore(warehouse_url).read_bars(symbol)) - 1
    _assert_check_metadata_is_text_or_tables(instance)

    # the provider lists the split late, and a dividend: AAPL's factors change, its history is recomputed
    polygon_env.record_split("AAPL", "2023-03-20")
    polygon_env.add_dividend("AAPL", "2023-06-12", 0.4)
    last_btc = BarStore(warehouse_url).read_bars("BTCUSD")["date"].iloc[-1]
    polygon_env.revise_bars("X:BTCUSD", [last_btc], 1.01)  # a late correction inside the re-fetch window
    with get_engine(warehouse_url).connect() as conn:
        btc_before = dict(conn.execute(sa.text("SELECT date, computed_at FROM daily_returns WHERE symbol = 'BTCUSD'")).all())
    assert runner.materialize_symbols(instance, ["AAPL", "BTCUSD"]).ok
    assert latest(instance, "daily_returns", "AAPL")["recomputed"].value == "the whole history: its adjustment factors changed"
    stored = assert_returns_match_views(warehouse_url, "AAPL")
    on = stored.set_index("date")
    assert abs(on.loc["2023-03-20", "total_return"]) < 0.2  # the split is adjusted away now
    ex = on.loc["2023-06-12"]  # the dividend counts in the total return, not in the price's: 1 + r = (1 + r_split) / (1 - D/C)
    share = 0.4 / _close_before(warehouse_url, "AAPL", "2023-06-12")
    assert 1 + ex["total_return"] == pytest.approx((1 + ex["split_adjusted_return"]) / (1 - share), rel=1e-9)
    assert check_passed(latest_check_records(instance, "unexplained_returns", "daily_returns")["AAPL"])
    # BTCUSD's factors did not change: only the days of the run's fetch window were recomputed
    assert latest(instance, "daily_returns", "BTCUSD")["recomputed"].value.startswith("from ")
    assert latest(instance, "daily_returns", "BTCUSD")["recomputed"].value.endswith(": new or revised bars")
    with get_engine(warehouse_url).connect() as conn:
        btc_after = dict(conn.execute(sa.text("SELECT date, computed_at FROM daily_returns WHERE symbol = 'BTCUSD'")).all())
    rewritten = [d for d, at in btc_after.items() if btc_before.get(d) != at]
    assert 0 < len(rewritten) <= 4 and len(btc_after) > 1000
    assert_returns_match_views(warehouse_url, "BTCUSD")


def _close_before(url: str, symbol: str, day: str) -> float:
    with get_engine(url).connect() as conn:
        return conn.execute(
            sa.text("SELECT close FROM ohlcv_daily WHERE symbol = :s AND date < :d ORDER BY date DESC LIMIT 1"), {"s": symbol, "d": day}
        ).scalar()


def _assert_check_metadata_is_text_or_tables(instance) -> None:
    """No numeric entry (Dagster would plot it across partitions), no empty list or text."""
    for asset, name in (("ohlcv_daily", "validation_rate"), ("ohlcv_daily", "date_gaps"), ("ohlcv_daily", "freshness"),
                        ("ohlcv_daily", "split_consistency"), ("daily_returns", "unexplained_returns")):
        for partition, record in latest_check_records(instance, name, asset).items():
            metadata = record.event.dagster_event.event_specific_data.metadata
            assert metadata, (asset, name, partition)
            for key, value in metadata.items():
                assert isinstance(value, (TextMetadataValue, TableMetadataValue, MarkdownMetadataValue)), (name, key, value)
                assert (value.records if isinstance(value, TableMetadataValue) else value.value), (name, key)
            if not check_passed(record) and name == "split_consistency":
                assert "days_chart" in metadata and png_in(metadata["days_chart"].value).startswith(PNG_SIGNATURE)


def test_run_and_stats_print_check_outcomes_and_fail_on_check_exits_3(polygon_env, fresh_home, warehouse_url, capsys):
    from market_pipeline.cli.main import main

    polygon_env.add_split("AAPL", "2023-03-20", 2, 1, recorded=False)
    SymbolRegistry(warehouse_url).add(["AAPL", "MSFT"], "stock", START)
    assert main(["run", "--fail-on-check", "error"]) == 3  # split_consistency fails with ERROR
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("AAPL ", "MSFT "))}
    aapl_checks = "split_consistency FAILED (ERROR): 2023-03-20; unexplained_returns FAILED: 2023-03-20"
    assert lines["AAPL"].endswith(aapl_checks)
    assert lines["MSFT"].endswith("checks ok")
    summary = [line for line in out.splitlines() if line.startswith("check results: ")]
    assert summary == ["check results: 1 symbol(s) ok, 1 with a failed check (1 ERROR, 1 WARN): AAPL split_consistency "
                       "FAILED (ERROR): 2023-03-20; unexplained_returns FAILED: 2023-03-20"]
    # the run's last log line in the UI says the same
    instance = DagsterInstance.get()
    run = instance.get_runs(filters=RunsFilter(job_name="ohlcv_daily_job"), limit=1)[0]
    messages = [e.user_message for e in instance.all_logs(run.run_id) if e.dagster_event is None]
    assert messages[-1] == summary[0]
    assert main(["run"]) == 0  # by default the exit code says whether every bar was stored
    capsys.readouterr()
    assert main(["stats"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-1] == "CHECKS"
    assert [line for line in table if line.startswith("AAPL ")][0].endswith(aapl_checks)
    assert main(["stats", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)
    aapl, msft = checks["AAPL"]["checks"], checks["MSFT"]["checks"]
    assert set(msft) == {"validation_rate", "date_gaps", "freshness", "split_consistency", "unexplained_returns"}
    assert all(c["passed"] for c in msft.values())
    assert aapl["split_consistency"] == {**aapl["split_consistency"], "passed": False, "severity": "ERROR", "summary": "2023-03-20", "asset": "ohlcv_daily"}

    # the split is listed late; MSFT's last bar is revised to +80% (a large move, not a split): a WARN only
    polygon_env.record_split("AAPL", "2023-03-20")
    last = BarStore(warehouse_url).read_bars("MSFT")["date"].iloc[-1]
    polygon_env.revise_bars("MSFT", [last], 1.8)
    assert main(["run", "--fail-on-check", "error"]) == 0
    out = capsys.readouterr().out
    assert f"check results: 1 symbol(s) ok, 1 with a failed check (0 ERROR, 1 WARN): MSFT unexplained_returns FAILED: {last.date()}" in out
    assert main(["run", "--fail-on-check", "warn"]) == 3
    capsys.readouterr()

    # the returns of what was stored, on the command line
    assert main(["returns", "AAPL", "--start", "2023-03-17", "--end", "2023-03-21", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["returns"]
    assert [r["date"] for r in rows] == ["2023-03-17", "2023-03-20", "2023-03-21"]
    assert rows[1]["total_return"] == pytest.approx(view_returns(warehouse_url, "AAPL").set_index("date").loc["2023-03-20", "total_return"])
    assert main(["returns", "NOPE"]) == 2
    assert "no stored returns for NOPE" in capsys.readouterr().err
    assert main(["returns", "AAPL", "--start", "2023-13-01"]) == 2
    assert "is not a date" in capsys.readouterr().err


def test_symbol_reference_is_materialized_by_the_first_run(fresh_home, capsys, monkeypatch):
    """`make run` on a fresh machine: the demo set's reference rows are written by the bars' run,
    and the catalog shows symbol_reference materialized."""
    from market_pipeline.cli.main import main

    monkeypatch.delenv("MARKET_PIPELINE_DB_URL", raising=False)
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "check results: all 5 symbol(s) ok" in out
    records = DagsterInstance.get().fetch_materializations(AssetKey("symbol_reference"), limit=10).records
    assert len(records) == 1
    metadata = records[0].asset_materialization.metadata
    assert metadata["symbols_written"].value == "5"
    assert sorted(r.data["symbol"] for r in metadata["written"].records) == ["AAPL", "BTCUSD", "ETHUSD", "MSFT", "SPY"]


def test_every_warehouse_asset_names_its_table_and_describes_its_columns():
    from market_pipeline.definitions import defs

    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert {"tracked_symbols", "ohlcv_daily", "daily_returns", "corporate_actions", "symbol_reference", "symbol_stats",
            "ohlcv_daily_adjusted", "ohlcv_daily_total_return"} <= {k for k, s in specs.items() if "sql" in s.kinds}
    for key, spec in specs.items():
        if "sql" not in spec.kinds:
            continue
        assert spec.metadata.get("dagster/table_name"), key
        columns = spec.metadata["dagster/column_schema"].columns
        assert columns and all(c.description for c in columns), key
    # lineage: tracked_symbols -> ohlcv_daily -> daily_returns, corporate_actions -> daily_returns
    assert {d.asset_key.to_user_string() for d in specs["daily_returns"].deps} == {"ohlcv_daily", "corporate_actions"}
    assert "tracked_symbols" in {d.asset_key.to_user_string() for d in specs["ohlcv_daily"].deps}


def test_the_weekly_corporate_actions_sweep_recomputes_the_returns_it_changes(polygon_env, warehouse_url, instance):
    from dagster import materialize

    from market_pipeline.defs.corporate_actions.assets import corporate_actions
    from market_pipeline.defs.resources import PolygonResource, WarehouseResource

    track(warehouse_url, instance, {"INTC": "stock", "MSFT": "stock"})
    assert runner.materialize_symbols(instance, ["INTC", "MSFT"]).ok
    first = latest(instance, "daily_returns", "MSFT")
    polygon_env.withdraw_split("INTC", "2023-03-20")  # the provider takes INTC's split back
    result = materialize([corporate_actions], instance=instance, resources={"polygon": PolygonResource(), "warehouse": WarehouseResource()})
    assert result.success
    assert latest(instance, "daily_returns", "INTC")["recomputed"].value == "the whole history: its adjustment factors changed"
    assert_returns_match_views(warehouse_url, "INTC")
    assert latest(instance, "daily_returns", "MSFT") == first  # its factors did not change: not touched
