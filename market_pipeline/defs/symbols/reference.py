"""The `symbol_reference` asset, its job and its weekly schedule: what Polygon says each tracked
symbol is (name, type, exchange, FIGIs, listing, delisting, renames), and the mismatches to act on."""


import datetime as dt
from collections import Counter

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    asset,
    define_asset_job,
    schedule,
)

from market_pipeline.polygon.reference import refresh_references
from market_pipeline.defs.resources import PolygonResource, WarehouseResource
from market_pipeline.defs.schemas import SYMBOL_REFERENCE, table_metadata

POLYGON_POOL = "polygon_api"
MAX_ROWS_SHOWN = 500


def attention_md(records) -> str:
    rows = [r for r in records if r.status != "ok" or r.delisted_on]
    if not rows:
        return "Every tracked symbol matches Polygon's reference data."
    lines = ["| symbol | class | status | delisted | says |", "|---|---|---|---|---|"]
    for r in rows[:MAX_ROWS_SHOWN]:
        text = (r.status_text or "").replace("|", "/")
        lines.append(f"| {r.symbol} | {r.asset_class} | {r.status} | {r.delisted_on or ''} | {text} |")
    if len(rows) > MAX_ROWS_SHOWN:
        lines.append(f"\n{len(rows) - MAX_ROWS_SHOWN} more in the `symbol_reference` table.")
    return "\n".join(lines)


@asset(
    name="symbol_reference",
    deps=["tracked_symbols"],
    group_name="market_data",
    kinds={"polygon", "sql"},
    pool=POLYGON_POOL,
    metadata=table_metadata("symbol_reference", SYMBOL_REFERENCE),
    description=(
        "The `symbol_reference` table: per active tracked symbol, Polygon's reference data (name, type, "
        "primary exchange, composite and share-class FIGI, list date, active flag, delisting date) and a "
        "status: ok, mismatch (asset class, reused ticker, inactive crypto pair), renamed, not_found, "
        "incomplete, unknown_type or error. Fetched on a symbol's first run and refreshed weekly "
        "(one request per symbol, paced); a delisting stops the symbol's bar requests."
    ),
)
def symbol_reference(context: AssetExecutionContext, polygon: PolygonResource, warehouse: WarehouseResource) -> MaterializeResult:
    rows = warehouse.registry().list()
    with polygon.get_client(logger=context.log) as client:
        records = refresh_references(client, warehouse.references(), rows, log=context.log)
        requests = client.stats.requests
    counts = Counter(r.status for r in records)
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(records),
            "requests": requests,
            **{f"status_{status}": n for status, n in sorted(counts.items())},
            "delisted": sum(1 for r in records if r.delisted_on and r.active is False and r.asset_class != "crypto"),
            "attention": MetadataValue.md(attention_md(records)),
        }
    )


reference_job = define_asset_job(
    "symbol_reference_job",
    selection=AssetSelection.assets("symbol_reference"),
    description="Refresh Polygon's reference data of every active tracked symbol.",
)


@schedule(
    name="symbol_reference_weekly",
    cron_schedule="0 6 * * 6",
    execution_timezone="UTC",
    job=reference_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Saturdays 06:00 UTC: refresh every active symbol's reference data (delistings, renames, mismatches).",
)
def symbol_reference_weekly(context):
    tick = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
    return RunRequest(
        run_key=f"symbol_reference_weekly:{tick.astimezone(dt.timezone.utc):%Y-%m-%dT%H:%MZ}",
        tags={"market_pipeline/trigger": "symbol_reference_weekly"},
    )
