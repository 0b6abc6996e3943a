"""What a real Dagster run says about the revisions it made: the ohlcv_daily partition's materialization
counts the bars it revised (and names their dates), the corporate_actions materialization lists each
changed event with its old and new state, and the history before the run reads as it was."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from dagster import AssetKey

from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.devtools import runner
from market_pipeline.warehouse import SymbolRegistry
from market_pipeline.warehouse.engine import get_engine
from market_pipeline.warehouse.reader import read_bars
from market_pipeline.warehouse.revisions import as_datetime
from market_pipeline_tests.dagster_helpers import materialization_metadata

START = "2025-06-02"


def test_a_run_counts_the_bars_it_revised_and_lists_the_events_it_changed(polygon_env, warehouse_url, instance):
    SymbolRegistry(warehouse_url).add(["MSFT"], "stock", START)
    instance.add_dynamic_partitions(symbols_partitions.name, ["MSFT"])
    assert runner.materialize_symbols(instance, ["MSFT"]).ok
    assert materialization_metadata(instance, "MSFT")["bars_revised"] == 0
    with get_engine(warehouse_url).connect() as conn:
        last = [str(d)[:10] for d in conn.execute(sa.text("SELECT date FROM ohlcv_daily WHERE symbol = 'MSFT' ORDER BY date DESC LIMIT 2")).scalars()]
        written = max(  # the first run's last write: its bars, then the factors recomputed on them
            as_datetime(conn.execute(sa.text(f"SELECT max({column}) FROM {table}")).scalar())
            for table, column in (("ohlcv_insertions", "stored_at"), ("adjustment_factor_changes", "changed_at"))
        )
    first = read_bars(["MSFT"], adjustment="total_return", url=warehouse_url)
    dividend, ex_date, cash = next(d for d in polygon_env.dividend_ids("MSFT") if d[1] >= START and d[1] <= last[0])
    polygon_env.revise_bars("MSFT", last, 1.02)
    polygon_env.correct_dividend(dividend, round(cash + 0.05, 2))

    assert runner.materialize_symbols(instance, ["MSFT"]).ok
    metadata = materialization_metadata(instance, "MSFT")
    assert metadata["bars_revised"] == 2 and metadata["rows_changed"] == 2
    assert metadata["revised_dates"].startswith(", ".join(sorted(last))) and "market-pipeline revisions MSFT" in metadata["revised_dates"]
    (latest, *_) = instance.fetch_materializations(AssetKey("corporate_actions"), limit=1).records
    table = latest.asset_materialization.metadata["changed_events"].value
    rows = [r.data for r in table.records]
    changed = next(r for r in rows if r["provider_id"] == dividend)
    assert changed["change"] == "changed" and changed["date"] == ex_date
    assert changed["old_event"] == f"{cash:g} USD" and changed["event"] == f"{round(cash + 0.05, 2):g} USD"
    assert changed["old_status"] == "active" and changed["status"] == "active"
    assert {c.name for c in table.schema.columns} >= {"old_event", "old_status"}
    # the history the first run left, read as of an instant between the runs
    pd.testing.assert_frame_equal(
        read_bars(["MSFT"], adjustment="total_return", url=warehouse_url, as_of=written.isoformat() + "+00:00"), first, check_exact=True
    )
