"""What an ohlcv_daily run records for each symbol it stored: the partition's materialization (with
Dagster's row-count and table keys) and its check evaluations, evaluated in batches of symbols so their
inputs are read with one query per batch, not one per symbol."""

from collections import Counter

from dagster import AssetMaterialization

from market_pipeline.defs.bars.checks import OHLCV_KEY, SPLIT_CHECK, evaluations, materialization_targets
from market_pipeline.defs.corporate_actions.checks import split_evaluation
from market_pipeline.quality.report import cache_entry, stats_basis
from market_pipeline.quality.stored_checks import check_in_memory, check_stored
from market_pipeline.refresh.ingest import SymbolResult
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.check_state import CheckStateStore
from market_pipeline.warehouse.stats_cache import StatsCache
from market_pipeline.warehouse.timestamps import utcnow

TABLE_NAME = "ohlcv_daily"
CHECK_BATCH = 50  # symbols whose checks are evaluated together (one event-log and one splits query)


def materialization(result: SymbolResult, table_rows: int, extra: dict | None = None) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=OHLCV_KEY,
        partition=result.symbol,
        metadata={
            # Dagster's keys: the partition's rows, and the whole table's (what the catalog's "Row count" shows)
            "dagster/partition_row_count": result.rows_stored,
            "dagster/row_count": table_rows,
            "dagster/table_name": TABLE_NAME,
            "asset_class": result.asset_class,
            "rows_fetched": result.rows_fetched,
            "rows_upserted": result.rows_upserted,
            "rows_inserted": result.rows_inserted,
            "rows_changed": result.rows_changed,
            # bars whose previous values this write kept in ohlcv_revisions (`market-pipeline revisions SYMBOL`)
            "bars_revised": len(result.revised_dates),
            **({"revised_dates": _dates_text(result.symbol, result.revised_dates)} if result.revised_dates else {}),
            "first_date": result.first_date or "",
            "last_date": result.last_date or "",
            "fetch_from": result.fetch_from or "",
            "fetch_to": result.fetch_to or "",
            "fetch_path": result.path,
            "requests": result.requests,
            # grouped: `requests` were shared by every symbol of the market stored from them
            "requests_shared": result.requests_shared,
            # wire bars of this fetch set aside in ohlcv_quarantine (non-finite, missing, misdated, future,
            # outside the requested range, conflicting duplicates)
            "quarantined": result.quarantined,
            "quarantined_outside_range": result.quarantined_outside_range,
            "quarantined_conflicting": result.quarantined_conflicting,
            **({"note": result.note} if result.note else {}),
            **(extra or {}),
        },
    )


MAX_REVISED_DATES_SHOWN = 30


def _dates_text(symbol: str, dates: list[str]) -> str:
    """The revised dates (the first MAX_REVISED_DATES_SHOWN) and where to see the values."""
    shown = ", ".join(dates[:MAX_REVISED_DATES_SHOWN])
    more = len(dates) - MAX_REVISED_DATES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "") + f" (old and new values: market-pipeline revisions {symbol})"


def check_batch(context, config, warehouse, batch, selected_checks, now, tally: Counter | None = None, recorded: dict | None = None):
    """The check evaluations of a batch of just-stored symbols: their materializations and their splits
    are read in one query each (not one per symbol), then each symbol's checks are evaluated
    (market_pipeline.quality.stored_checks).

    A symbol whose bars are not in memory is read from the warehouse, and only from the cut of its
    symbol_check_state on when the bars before the cut are those its state was folded from: a daily
    refresh reads a month or two of bars per symbol, not its whole history. The stats are cached
    (symbol_stats_cache) with the fingerprint of the bars they were computed from, so the
    symbol_stats asset does not read those bars again. `tally` counts the symbols checked from bars
    in memory, from a kept state, or read whole, and the bars read. `recorded`: symbol -> when this
    run recorded its materialization (the evaluations point at it without reading it back)."""
    tally = Counter() if tally is None else tally
    store = warehouse.bars()
    symbols = [result.symbol for result, _ in batch]
    targets = materialization_targets(context.instance, symbols, run_id=context.run_id, recorded=recorded)
    wants_splits = any(k.name == SPLIT_CHECK for k in selected_checks)
    equities = [row.symbol for _, row in batch if row.asset_class != "crypto"]
    splits = CorporateActionStore(warehouse.resolved_url()).splits_by_symbol(equities) if wants_splits else {}
    window = getattr(config, "refetch_sessions", 0)  # the op's re-fetch window (the checks alone: none)
    stored_rows = [row for result, row in batch if result.stored_bars is None]
    from_store, saved = check_stored(store, stored_rows, settings=config, now=now, splits=splits, window_sessions=window) if stored_rows else ([], [])
    checked = {row.symbol: done for row, done in from_store}
    entries = []
    for result, row in batch:
        if result.stored_bars is not None:
            checked[row.symbol], state = check_in_memory(
                row.symbol, row.asset_class, result.stored_bars, result.stored_at, settings=config, now=now,
                splits=splits.get(row.symbol, []), delisted_on=row.delisted_on, window_sessions=window,
            )
            saved += [state] if state is not None else []
        result.stored_bars = None  # memory stays flat however many symbols the run holds
        done, target = checked.pop(row.symbol), targets.get(row.symbol)
        tally[done.source] += 1
        tally["bars_read"] += done.bars_read
        entries.append(cache_entry(done.stats, done.bars_print, stats_basis(row.asset_class, config, now, row.delisted_on)))
        yield from evaluations(done.stats, selected_checks, now=now, delisted_on=row.delisted_on, target=target)
        if wants_splits:
            yield split_evaluation(row.symbol, row.asset_class, None, splits.get(row.symbol, []), target=target, report=done.splits)
    try:
        computed_at = utcnow()
        StatsCache(store.url).put_many(entries, computed_at)
        CheckStateStore(store.url).put_many(saved, computed_at)
    except Exception as exc:  # only caches: symbol_stats and the next run recompute what they miss
        context.log.warning(f"could not cache the checks of {len(entries)} symbol(s): {type(exc).__name__}: {exc}")


def quarantine_line(results) -> str:
    """The run summary's words on the bars set aside: `12 quarantined (2 outside the requested range,
    4 conflicting duplicates)`."""
    total = sum(r.quarantined for r in results)
    parts = [
        f"{n} {reason}" for n, reason in (
            (sum(r.quarantined_outside_range for r in results), "outside the requested range"),
            (sum(r.quarantined_conflicting for r in results), "conflicting duplicates"),
        ) if n
    ]
    return f"{total} quarantined" + (f" ({', '.join(parts)})" if parts else "")


def tally_line(tally: Counter) -> str:
    """The run's log line on how its checks got their bars."""
    return (
        f"checks: {tally['in_memory']} symbol(s) from the bars just stored, {tally['from_state']} from their kept "
        f"state and the bars after its cut, {tally['whole']} read whole; {tally['bars_read']} bar(s) read"
    )
