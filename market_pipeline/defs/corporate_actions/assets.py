"""The `corporate_actions` asset (splits and dividends in the warehouse) and the adjusted views.

Lineage: tracked_symbols -> corporate_actions -> ohlcv_daily_adjusted / ohlcv_daily_total_return
(views over ohlcv_daily and the maintained adjustment_factors).

The asset re-reads the whole corporate-action lists of every tracked stock and ETF (batched,
`ticker.any_of`), or with `lookback_days` only every ticker's recent events. `market-pipeline run`,
UI backfills and the daily schedules do the same read inside the `ohlcv_daily` op before fetching
bars, and record a `corporate_actions` materialization there too. Its metadata lists the events
new, changed and withdrawn since the last read.
"""


import datetime as dt

from dagster import AssetExecutionContext, AssetSpec, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from market_pipeline.defs.resources import PolygonResource, WarehouseResource
from market_pipeline.refresh.corporate_actions import CorporateActionsResult, refresh_corporate_actions
from market_pipeline.warehouse.corporate_actions import CorporateActionStore

CORPORATE_ACTIONS = "corporate_actions"


class CorporateActionsConfig(Config):
    symbols: list[str] | None = Field(
        default=None, description="read the whole lists of these symbols (default: every tracked stock and ETF)"
    )
    lookback_days: int | None = Field(
        default=None,
        description="read only events dated in the last N days, of every ticker (a constant number of requests); "
        "default: whole lists (events absent from them are marked withdrawn)",
    )


def result_metadata(result: CorporateActionsResult) -> dict:
    """Materialization metadata: what changed since the last read (json lists, readable in the UI)."""
    out = {}
    for key, value in result.metadata().items():
        out[key] = MetadataValue.json(value) if isinstance(value, list) else value
    return out


@asset(
    name=CORPORATE_ACTIONS,
    deps=["tracked_symbols"],
    group_name="market_data",
    kinds={"polygon", "sql"},
    pool="polygon_api",
    description=(
        "Splits and cash dividends of the tracked stocks and ETFs: the `splits` and `dividends` tables "
        "(first/last seen, status active/duplicate/withdrawn/invalid with a reason) and the maintained "
        "`adjustment_factors` behind the adjusted views."
    ),
)
def corporate_actions(
    context: AssetExecutionContext, config: CorporateActionsConfig, polygon: PolygonResource, warehouse: WarehouseResource
) -> MaterializeResult:
    store = CorporateActionStore(warehouse.resolved_url())
    since = None
    if config.lookback_days is not None:
        since = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=config.lookback_days)
    with polygon.get_client(logger=context.log) as client:
        result = refresh_corporate_actions(client, store, config.symbols, since=since, log=context.log)
    if not result.ok:
        raise Failure(description=result.error, metadata=result_metadata(result))
    changes = result.outcome.metadata() if result.outcome else {}
    context.log.info(
        f"{len(result.symbols)} symbol(s), {result.requests} request(s): {len(changes.get('new', []))} new, "
        f"{len(changes.get('changed', []))} changed, {len(changes.get('withdrawn', []))} withdrawn event(s)"
    )
    return MaterializeResult(metadata=result_metadata(result))


_VIEW_DEPS = ["ohlcv_daily", CORPORATE_ACTIONS]

ohlcv_daily_adjusted = AssetSpec(
    "ohlcv_daily_adjusted",
    deps=_VIEW_DEPS,
    group_name="market_data",
    kinds={"sql"},
    description=(
        "View: ohlcv_daily split-adjusted to today's share basis (prices and vwap x the product of "
        "split_from/split_to of every split after the bar, volume divided by it). Always current: "
        "a late or withdrawn split changes it with no bar re-fetched."
    ),
)

ohlcv_daily_total_return = AssetSpec(
    "ohlcv_daily_total_return",
    deps=_VIEW_DEPS,
    group_name="market_data",
    kinds={"sql"},
    description=(
        "View: ohlcv_daily split-adjusted, then dividend-adjusted: prices before each ex-date x "
        "(1 - cash / the as-traded close of the session before)."
    ),
)
