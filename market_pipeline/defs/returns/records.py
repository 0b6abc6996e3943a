"""The `daily_returns` asset: each symbol's daily returns, computed from its bars after they are
stored, in the same step as `ohlcv_daily` (one run keeps both current: the daily schedules, the
sensor's backfills and `market-pipeline run` alike). It is a second asset of the ohlcv_daily
multi-asset, partitioned by symbol the same way, so lineage reads tracked_symbols -> ohlcv_daily ->
daily_returns and corporate_actions -> daily_returns.

A run updates a batch of symbols at once (market_pipeline.returns.update: only the days it changed,
the whole history when the symbol's adjustment factors changed) and records, per symbol, a
materialization and the two returns checks. Selected alone (the UI's "Materialize" on daily_returns),
it recomputes the selected symbols' whole histories from the stored bars.
"""

from __future__ import annotations

import time

from dagster import AssetMaterialization, AssetSpec, MetadataValue, TableColumn, TableSchema

from market_pipeline.defs.bars.checks import OHLCV_KEY, materialization_targets
from market_pipeline.defs.metadata import table
from market_pipeline.defs.returns.checks import RETURNS_KEY, returns_evaluations
from market_pipeline.returns.update import ReturnsOutcome, ReturnsRequest, judge_stored, update_returns
from market_pipeline.warehouse.returns import ReturnsState, ReturnsStore

TABLE_NAME = "daily_returns"
LAST_RETURNS = 10
COLUMN_SCHEMA = TableSchema(columns=[
    TableColumn("symbol", "string", description="the tracked symbol (partition key)"),
    TableColumn("date", "date", description="the session the return ends on (New York for stocks/ETFs, UTC day for crypto)"),
    TableColumn("total_return", "float", description="simple total return, as a fraction: total-return close / the previous bar's - 1 (split- and dividend-adjusted, dividends reinvested)"),
    TableColumn("log_return", "float", description="ln(total-return close / the previous bar's)"),
    TableColumn("split_adjusted_return", "float", description="split-adjusted close / the previous bar's - 1, as a fraction (price only, dividends not counted)"),
    TableColumn("computed_at", "timestamp", description="when the row was computed (UTC)"),
])


def returns_spec() -> AssetSpec:
    return AssetSpec(
        RETURNS_KEY,
        deps=[OHLCV_KEY, "corporate_actions"],
        group_name="market_data",
        kinds={"sql", "pandas"},
        skippable=True,  # materializations are recorded per symbol, after its bars
        metadata={"dagster/table_name": TABLE_NAME, "dagster/column_schema": COLUMN_SCHEMA},
        description=(
            "Daily returns of each tracked symbol: the `daily_returns` table (symbol, date, simple total "
            "return, log return, split-adjusted close return), one row per stored bar after the first. "
            "Updated in the same run as the bars: only the days a run changed, the whole history when the "
            "symbol's adjustment factors change. Read it with `market_pipeline.read_returns` or "
            "`market-pipeline returns`."
        ),
    )


def changed_from(result):
    """The first date a run may have changed a symbol's bars (its fetch window's start), or None when
    it wrote no new or revised bar."""
    import datetime as dt

    if not (result.rows_inserted or result.rows_changed) or not result.fetch_from:
        return None
    return dt.date.fromisoformat(result.fetch_from)


def returns_batch(context, config, url: str, batch, selected_checks: set, views, *, materialize: bool = True, whole: bool = False):
    """Update the returns of a batch of (SymbolResult, tracked row) and yield their materializations
    and check evaluations (the row count is the symbol's returns in the table). `whole`: recompute whole histories (the asset selected on its own);
    `materialize` False: only the check, on the returns as stored (judged again against the events
    recorded now)."""
    if not batch:
        return
    symbols = [result.symbol for result, _ in batch]
    if materialize:
        requests = [ReturnsRequest(result.symbol, None if whole else changed_from(result), whole) for result, _ in batch]
        outcomes = update_returns(url, requests, threshold=config.max_unexplained_return)
    else:  # the check alone: the stored returns judged again (read through the column blocks)
        judged = judge_stored(url, symbols, threshold=config.max_unexplained_return)
        outcomes = [
            ReturnsOutcome(s, "unchanged", "checks only", None, None, ReturnsState(s, None, "", judged[s])) for s in symbols
        ]
    counts = ReturnsStore(url).counts(symbols) if materialize else {}
    recorded: dict[str, float] = {}
    for (result, _), outcome in zip(batch, outcomes if materialize else []):
        rows = counts.get(result.symbol, 0)
        if outcome.action == "unchanged":
            recomputed = f"nothing: {outcome.reason}"
        elif outcome.action == "whole":
            recomputed = f"the whole history: {outcome.reason}"
        else:
            recomputed = f"from {outcome.since}: {outcome.reason}"
        metadata = {
            "dagster/partition_row_count": rows,
            "dagster/table_name": TABLE_NAME,
            "recomputed": MetadataValue.text(recomputed),
            "returns_written": outcome.rows_written,
        }
        if not outcome.frame.empty:
            tail = outcome.frame.tail(LAST_RETURNS).iloc[::-1]
            metadata["last_returns"] = table(
                [
                    {"date": d.date().isoformat(), "total_return": t, "log_return": g, "split_adjusted_return": s}
                    for d, t, g, s in zip(tail["date"], tail["total_return"], tail["log_return"], tail["split_adjusted_return"])
                ],
                descriptions={c.name: c.description for c in COLUMN_SCHEMA.columns},
            )
        recorded[result.symbol] = time.time()
        yield AssetMaterialization(asset_key=RETURNS_KEY, partition=result.symbol, metadata=metadata)
    if selected_checks:
        # each evaluation names the materialization it checks (else Dagster never counts it as the
        # partition's current check): this run's just recorded, or the latest stored
        targets = materialization_targets(context.instance, symbols, RETURNS_KEY, context.run_id, recorded)
        for (result, _), outcome in zip(batch, outcomes):
            outliers = outcome.state.outliers if outcome.state is not None else []
            yield from views.checked(returns_evaluations(
                result.symbol, outliers, config.max_unexplained_return, selected_checks, targets.get(result.symbol),
            ))


def returns_after_actions(context, warehouse, symbols):
    """After a corporate-actions read outside an ohlcv_daily run (the weekly sweep): recompute the
    daily returns of the symbols whose factors changed and record their materializations (the
    returns checks run with their next refresh)."""
    from types import SimpleNamespace

    from market_pipeline.refresh.ingest import SymbolResult
    from market_pipeline.returns.update import DEFAULT_THRESHOLD

    symbols = sorted(set(symbols))
    if not symbols:
        return
    url = warehouse.resolved_url()
    summary = warehouse.bars().summary(symbols)
    config = SimpleNamespace(max_unexplained_return=DEFAULT_THRESHOLD)
    for i in range(0, len(symbols), 50):
        batch = []
        for symbol in symbols[i : i + 50]:
            result = SymbolResult(symbol, "stock", "completed")
            result.rows_stored = summary.get(symbol, (0, None, None))[0]
            batch.append((result, None))
        yield from returns_batch(context, config, url, batch, set(), None)
    context.log.info(f"daily_returns of {len(symbols)} symbol(s) recomputed: their adjustment factors changed")
