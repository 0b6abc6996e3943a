"""The `ohlcv_daily` asset: one partition per tracked symbol, its daily bars in the warehouse.

One op serves the asset and its two checks. For each symbol of the run (one partition, or a
batch of up to MAX_PARTITIONS_PER_RUN): mark it in_progress, fetch from the re-fetch window (or all
history from its start date), upsert in one transaction, mark it completed, record a
materialization and both check results for that partition. A failing symbol is marked failed with
its reason and does not stop the others; the run then fails naming it. On a step retry the symbols
this run already materialised are skipped, so a retry re-runs only what failed.
"""


import datetime as dt

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetSpec,
    Backoff,
    BackfillPolicy,
    DagsterEventType,
    Failure,
    Jitter,
    MetadataValue,
    RetryPolicy,
    multi_asset,
)
from pydantic import Field

from market_pipeline import settings
from market_pipeline.checks import CHECK_KEYS, OHLCV_KEY, CheckSettings, compute_stats, evaluations, check_specs
from market_pipeline.ingest import DEFAULT_HISTORY_DAYS, DEFAULT_REFETCH_SESSIONS, SymbolResult, refresh_symbol
from market_pipeline.partitions import MAX_PARTITIONS_PER_RUN, symbols_partitions
from market_pipeline.resources import PolygonResource, WarehouseResource

POLYGON_POOL = "polygon_api"


class OhlcvConfig(CheckSettings):
    refetch_sessions: int = Field(
        default=DEFAULT_REFETCH_SESSIONS, description="re-fetch the last N stored sessions (late corrections)"
    )
    default_history_days: int = Field(
        default=DEFAULT_HISTORY_DAYS, description="history to fetch for a symbol without a start date"
    )


def _materialization(result: SymbolResult) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=OHLCV_KEY,
        partition=result.symbol,
        metadata={
            "dagster/row_count": result.rows_stored,
            "asset_class": result.asset_class,
            "rows_fetched": result.rows_fetched,
            "rows_upserted": result.rows_upserted,
            "rows_inserted": result.rows_inserted,
            "rows_changed": result.rows_changed,
            "first_date": result.first_date or "",
            "last_date": result.last_date or "",
            "fetch_from": result.fetch_from or "",
            "fetch_to": result.fetch_to or "",
            "fetch_path": result.path,
            "requests": result.requests,
        },
    )


def _already_materialized(context: AssetExecutionContext) -> set[str]:
    """Partitions this run recorded before (a step retry skips them)."""
    if context.retry_number == 0:
        return set()
    records = context.instance.get_records_for_run(
        context.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=10_000
    ).records
    return {r.event_log_entry.dagster_event.partition for r in records if r.event_log_entry.dagster_event}


def _run_partition_keys(context: AssetExecutionContext) -> list[str]:
    if context.has_partition_key_range or context.has_partition_key:
        return list(context.partition_keys)
    return list(context.instance.get_dynamic_partitions(symbols_partitions.name))


@multi_asset(
    name="ohlcv_daily",
    specs=[
        AssetSpec(
            OHLCV_KEY,
            deps=["tracked_symbols"],
            group_name="market_data",
            kinds={"polygon", "sql"},
            skippable=True,  # materializations are recorded per symbol as each one is stored
            description=(
                "Daily OHLCV bars from Polygon (Massive). One partition per tracked symbol: the rows of "
                "`ohlcv_daily` (symbol, session date, open, high, low, close, volume, vwap, transactions) "
                "for that symbol, from its start date to the latest session."
            ),
        )
    ],
    check_specs=check_specs,
    partitions_def=symbols_partitions,
    can_subset=True,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN),
    pool=POLYGON_POOL,
    retry_policy=RetryPolicy(
        max_retries=2, delay=settings.step_retry_delay(), backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
    ),
)
def ohlcv_daily(context: AssetExecutionContext, config: OhlcvConfig, polygon: PolygonResource, warehouse: WarehouseResource):
    registry, store = warehouse.registry(), warehouse.bars()
    selected_checks = set(context.selected_asset_check_keys) & CHECK_KEYS
    materialize = OHLCV_KEY in context.selected_asset_keys
    keys = _run_partition_keys(context)
    tracked = {row.symbol: row for row in registry.get_many(keys)}
    now = dt.datetime.now(dt.timezone.utc)

    failures: list[SymbolResult] = []
    if materialize:
        skip = _already_materialized(context)
        with polygon.get_client(logger=context.log) as client:
            for symbol in keys:
                row = tracked.get(symbol)
                if symbol in skip:
                    continue
                if row is None:
                    failures.append(SymbolResult(symbol, "unknown", "failed", error=f"{symbol} is not in tracked_symbols"))
                    continue
                result = refresh_symbol(
                    client, store, registry, row, run_id=context.run_id, today=now.date(),
                    refetch_sessions=config.refetch_sessions, default_history_days=config.default_history_days,
                )
                if result.status != "completed":
                    context.log.error(f"{symbol}: {result.error}")
                    failures.append(result)
                    continue
                context.log.info(
                    f"{symbol}: {result.rows_fetched} bars fetched ({result.fetch_from}..{result.fetch_to}), "
                    f"{result.rows_stored} stored, {result.requests} request(s)"
                )
                yield _materialization(result)
                if selected_checks:
                    stats = compute_stats(symbol, row.asset_class, store.read_bars(symbol), config, now)
                    yield from evaluations(stats, selected_checks, context.instance)
    elif selected_checks:
        for symbol in keys:
            row = tracked.get(symbol)
            if row is None:
                continue
            stats = compute_stats(symbol, row.asset_class, store.read_bars(symbol), config, now)
            yield from evaluations(stats, selected_checks, context.instance)

    if failures:
        summary = "; ".join(f"{r.symbol}: {r.error}" for r in failures[:20])
        raise Failure(
            description=f"{len(failures)} of {len(keys)} symbol(s) failed: {summary}",
            metadata={
                "failed_symbols": MetadataValue.json([r.symbol for r in failures]),
                "errors": MetadataValue.json({r.symbol: r.error for r in failures}),
            },
            allow_retries=any(r.transient for r in failures),
        )
