"""The `symbol_stats` asset: per-symbol record counts, date range, validation rate and gaps."""

import datetime as dt

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from market_pipeline.defs.bars.checks import CheckSettings
from market_pipeline.defs.metadata import chart_markdown
from market_pipeline.defs.resources import WarehouseResource
from market_pipeline.defs.schemas import SYMBOL_STATS, table_metadata
from market_pipeline.quality.report import all_table_rows
from market_pipeline.reference.freshness import evaluate_freshness
from market_pipeline.warehouse.stats_table import replace_stats

MAX_ROWS_SHOWN = 500

# Recompute after ohlcv_daily partitions update (once no run of them is in progress). Eager minus
# "any deps missing": a newly added symbol without bars yet must not hold the table back.
AFTER_BARS_UPDATE = AutomationCondition.eager().without(~AutomationCondition.any_deps_missing())


def _markdown(rows: list[dict]) -> str:
    header = "| symbol | class | bars | first | last | validation rate | gaps | status |\n|---|---|---:|---|---|---:|---:|---|"
    lines = [header]
    for r in rows[:MAX_ROWS_SHOWN]:
        rate = "" if r["validation_rate"] is None else f"{r['validation_rate']:.4f}"
        lines.append(
            f"| {r['symbol']} | {r['asset_class']} | {r['record_count']} | {r['first_date'] or ''} | "
            f"{r['last_date'] or ''} | {rate} | {r['gaps_detected']} | {r['backfill_status']} |"
        )
    if len(rows) > MAX_ROWS_SHOWN:
        lines.append(f"\n{len(rows) - MAX_ROWS_SHOWN} more rows in the `symbol_stats` table.")
    return "\n".join(lines)


@asset(
    deps=[AssetDep("ohlcv_daily", partition_mapping=AllPartitionMapping())],
    group_name="market_data",
    kinds={"sql", "pandas"},
    automation_condition=AFTER_BARS_UPDATE,
    metadata=table_metadata("symbol_stats", SYMBOL_STATS),
    description=(
        "The `symbol_stats` table: per tracked symbol its record count, first and last date, validation "
        "rate and gaps (the same numbers as the ohlcv_daily checks), backfill status and last backfill."
    ),
)
def symbol_stats(context: AssetExecutionContext, config: CheckSettings, warehouse: WarehouseResource) -> MaterializeResult:
    registry, store = warehouse.registry(), warehouse.bars()
    rows = all_table_rows(registry, store, config)
    replace_stats(store.engine, rows)
    rated = [r["validation_rate"] for r in rows if r["validation_rate"] is not None]
    chart = _chart(rows, {row.symbol: row.delisted_on for row in registry.list(include_inactive=True)})
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "symbols": len(rows),
            "bars": sum(r["record_count"] for r in rows),
            "symbols_with_gaps": sum(1 for r in rows if r["gaps_detected"]),
            "min_validation_rate": min(rated) if rated else None,
            "table": MetadataValue.md(_markdown(rows)),
            "chart": chart_markdown(chart, "validation rate and freshness"),
        }
    )


def _chart(rows: list[dict], delisted: dict):
    """Validation rate and sessions behind of every symbol, worst first. Never raises."""
    from market_pipeline.charts import Chart, stats_chart

    try:
        now = dt.datetime.now(dt.timezone.utc)
        behind = [
            evaluate_freshness(r["symbol"], r["asset_class"], r["last_date"], now, delisted_on=delisted.get(r["symbol"])).missing_count
            for r in rows
        ]
    except Exception as exc:
        return Chart(None, f"freshness could not be computed ({type(exc).__name__}: {exc})")
    return stats_chart([r["symbol"] for r in rows], [r["validation_rate"] for r in rows], behind)
