"""The `symbol_reference` asset, its job and its weekly schedule: what Polygon says each tracked
symbol is (name, type, exchange, FIGIs, listing, delisting, renames), and the mismatches to act on."""


import datetime as dt
from collections import Counter

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    asset,
    define_asset_job,
    schedule,
)

from pydantic import Field

from market_pipeline import settings
from market_pipeline.polygon.reference_list import needs_list_date, refresh_references
from market_pipeline.defs.resources import PolygonResource, WarehouseResource
from market_pipeline.defs.schemas import SYMBOL_REFERENCE, table_metadata

POLYGON_POOL = "polygon_api"
MAX_ROWS_SHOWN = 500
LIST_DATE_MINUTES = 60  # by default a refresh spends at most an hour of the plan's rate on list dates


class ReferenceConfig(Config):
    list_date_lookups: int | None = Field(
        default=None,
        ge=0,
        description=(
            "single-ticker lookups for list dates (stocks and ETFs read from the list of tickers, which has "
            f"none) a refresh may send; default: {LIST_DATE_MINUTES} minutes of the plan's rate "
            "(POLYGON_REQUESTS_PER_MINUTE x 60: 300 on the free plan), no limit without pacing"
        ),
    )

    def lookups(self, requests_per_minute: int) -> int | None:
        if self.list_date_lookups is not None:
            return self.list_date_lookups
        return requests_per_minute * LIST_DATE_MINUTES if requests_per_minute > 0 else None


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
        "incomplete, unknown_type or error. Fetched on a symbol's first run and refreshed weekly, from "
        "pages of Polygon's list of tickers (up to 1,000 a page) where they cost fewer requests than one "
        "lookup per symbol; the list has no list date, filled in by single-ticker lookups (at most an hour "
        "of the plan's rate a refresh). A delisting stops the symbol's bar requests."
    ),
)
def symbol_reference(
    context: AssetExecutionContext, config: ReferenceConfig, polygon: PolygonResource, warehouse: WarehouseResource
) -> MaterializeResult:
    rows = warehouse.registry().list()
    rpm = polygon.requests_per_minute if polygon.requests_per_minute is not None else settings.requests_per_minute()
    cap = config.lookups(rpm)
    with polygon.get_client(logger=context.log) as client:
        records = refresh_references(client, warehouse.references(), rows, list_date_lookups=cap, log=context.log)
        requests, by_endpoint = client.stats.requests, dict(client.stats.by_endpoint)
    counts = Counter(r.status for r in records)
    pending = sum(1 for r in records if r.asset_class != "crypto" and needs_list_date(r))
    context.log.info(
        f"{len(records)} symbol(s): {by_endpoint.get('reference_list', 0)} list page(s), "
        f"{by_endpoint.get('reference', 0)} single-ticker lookup(s), {requests} request(s) in all; "
        f"{pending} list date(s) still to look up" + (f" (at most {cap} a refresh)" if cap is not None else "")
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(records),
            "requests": requests,
            "list_pages": by_endpoint.get("reference_list", 0),
            "single_lookups": by_endpoint.get("reference", 0),
            "list_dates_pending": pending,
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
