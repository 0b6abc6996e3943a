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

from market_pipeline.defs.metadata import table
from market_pipeline.defs.returns.records import returns_after_actions
from market_pipeline.defs.resources import PolygonResource, WarehouseResource
from market_pipeline.defs.schemas import CORPORATE_ACTIONS_TABLES, adjusted_view, table_metadata
from market_pipeline.defs.schemas import CORPORATE_ACTIONS as CORPORATE_ACTIONS_SCHEMA
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
    """Materialization metadata: what changed since the last read, as a table of the events
    (`changed_events`) and lists of their labels (empty lists left out)."""
    out = {}
    for key, value in result.metadata().items():
        if isinstance(value, list):
            if value:
                out[key] = MetadataValue.json(value)
        else:
            out[key] = value
    events = changed_events(result.outcome) if result.outcome is not None else []
    if events:
        out["changed_events"] = table(events, descriptions=EVENT_COLUMNS, limit=MAX_EVENTS_SHOWN)
        if len(events) > MAX_EVENTS_SHOWN:
            out["changed_events_note"] = MetadataValue.text(
                f"the first {MAX_EVENTS_SHOWN} of {len(events)} changed events; all are in the splits and dividends tables"
            )
    return out


MAX_EVENTS_SHOWN = 500


EVENT_COLUMNS = {
    "symbol": "the tracked symbol",
    "kind": "split or dividend",
    "change": "new, changed (content or validity; or listed again), withdrawn (absent from a complete re-read) "
              "or resolved (status or reason changed by duplicate resolution or a dividend's applicability)",
    "date": "execution date (split) or ex-dividend date (New York)",
    "event": "a split's ratio (new shares for old), a dividend's cash amount per share as declared",
    "status": "active, duplicate, invalid (not applied) or withdrawn",
    "old_event": "the event as stored before this read (empty: new)",
    "old_status": "its status before this read (empty: new)",
    "provider_id": "the provider's id of the event",
}


def _event_text(kind: str, state: dict) -> str:
    """A split's ratio or a dividend's cash amount, from a stored state (warehouse.revisions)."""
    if kind == "split":
        def num(v):
            return "?" if v is None else (str(int(v)) if float(v).is_integer() else f"{float(v):g}")
        return f"{num(state.get('split_to'))}-for-{num(state.get('split_from'))}"
    cash = state.get("cash_amount")
    return f"{cash:g} {state.get('currency') or ''}".strip() if cash is not None else ""


def changed_events(outcome) -> list[dict]:
    """The events one read changed, one row each (symbol, kind, change, date, event, status, the event
    and status before, id)."""
    revised = {(r.kind, r.symbol, r.provider_id): r for r in getattr(outcome, "revisions", [])}
    rows, seen = [], set()

    def before(kind, symbol, provider_id) -> tuple[str, str]:
        r = revised.get((kind, symbol, provider_id))
        return (_event_text(kind, r.old), r.old.get("status") or "") if r else ("", "")

    for kind, changes in (("split", outcome.splits), ("dividend", outcome.dividends)):
        for change, events in (("new", changes.new), ("changed", [*changes.changed, *changes.reappeared])):
            for e in events:
                date = e.execution_date if kind == "split" else e.ex_dividend_date
                what = e.label if kind == "split" else f"{e.cash_amount:g} {e.currency or ''}".strip() if e.cash_amount is not None else ""
                r = revised.get((kind, e.symbol, e.provider_id))
                old_event, old_status = before(kind, e.symbol, e.provider_id) if change == "changed" else ("", "")
                rows.append({"symbol": e.symbol, "kind": kind, "change": change, "date": date, "event": what,
                             "status": r.new.get("status") if r else e.status, "old_event": old_event,
                             "old_status": old_status, "provider_id": e.provider_id})
                seen.add((kind, e.symbol, e.provider_id))
        for e in changes.withdrawn:  # stored events: their content tuple starts with the date
            date = e.content[0] if e.content else None
            old_event, old_status = before(kind, e.symbol, e.provider_id)
            rows.append({"symbol": e.symbol, "kind": kind, "change": "withdrawn", "date": date, "event": "",
                         "status": "withdrawn", "old_event": old_event, "old_status": old_status or e.status,
                         "provider_id": e.provider_id})
            seen.add((kind, e.symbol, e.provider_id))
    for key, r in revised.items():  # changed by the resolution that followed (e.g. a duplicate now applied)
        if key in seen:
            continue
        field = "execution_date" if r.kind == "split" else "ex_dividend_date"
        rows.append({"symbol": r.symbol, "kind": r.kind, "change": "resolved", "date": r.new.get(field),
                     "event": _event_text(r.kind, r.new), "status": r.new.get("status"),
                     "old_event": _event_text(r.kind, r.old), "old_status": r.old.get("status") or "",
                     "provider_id": r.provider_id})
    return sorted(rows, key=lambda r: (r["symbol"], str(r["date"]), r["kind"]))


@asset(
    name=CORPORATE_ACTIONS,
    deps=["tracked_symbols"],
    group_name="market_data",
    kinds={"polygon", "sql"},
    pool="polygon_api",
    metadata=table_metadata(CORPORATE_ACTIONS_TABLES, CORPORATE_ACTIONS_SCHEMA),
    description=(
        "Splits and cash dividends of the tracked stocks and ETFs: the `splits` and `dividends` tables "
        "(first/last seen, status active/duplicate/withdrawn/invalid with a reason) and the maintained "
        "`adjustment_factors` behind the adjusted views."
    ),
)
def corporate_actions(
    context: AssetExecutionContext, config: CorporateActionsConfig, polygon: PolygonResource, warehouse: WarehouseResource
):
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
    yield MaterializeResult(metadata=result_metadata(result))
    # the symbols whose factors changed: their daily returns are recomputed now, not at their next refresh
    yield from returns_after_actions(context, warehouse, changes.get("symbols_recomputed", []))


_VIEW_DEPS = ["ohlcv_daily", CORPORATE_ACTIONS]

ohlcv_daily_adjusted = AssetSpec(
    "ohlcv_daily_adjusted",
    deps=_VIEW_DEPS,
    group_name="market_data",
    kinds={"sql"},
    metadata=table_metadata("ohlcv_daily_adjusted", adjusted_view("split-adjusted to today's share basis")),
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
    metadata=table_metadata(
        "ohlcv_daily_total_return", adjusted_view("split- then dividend-adjusted (total return) to today's share basis")
    ),
    description=(
        "View: ohlcv_daily split-adjusted, then dividend-adjusted: prices before each ex-date x "
        "(1 - cash / the as-traded close of the session before)."
    ),
)
