"""What an ohlcv_daily run records for each symbol it stored: the partition's materialization (with
Dagster's row-count and table keys) and its check evaluations, evaluated in batches of symbols so their
inputs are read with one query per batch, not one per symbol."""

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from dagster import AssetMaterialization

from market_pipeline.defs.bars.checks import OHLCV_KEY, SPLIT_CHECK, evaluations, materialization_targets
from market_pipeline.defs.corporate_actions.checks import split_evaluation
from market_pipeline.corporate_actions import evaluate_consistency
from market_pipeline.quality.checks_fold import CheckState, fold_basis, state_cut, usable
from market_pipeline.quality.checks_fold import evaluate as evaluate_checks
from market_pipeline.quality.report import cache_entry, compute_stats, stats_basis
from market_pipeline.refresh.ingest import SymbolResult
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.check_state import CheckStateStore, StoredState
from market_pipeline.warehouse.stats_cache import StatsCache, fingerprint
from market_pipeline.warehouse.store import utcnow

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
            "first_date": result.first_date or "",
            "last_date": result.last_date or "",
            "fetch_from": result.fetch_from or "",
            "fetch_to": result.fetch_to or "",
            "fetch_path": result.path,
            "requests": result.requests,
            # grouped: `requests` were shared by every symbol of the market stored from them
            "requests_shared": result.requests_shared,
            # wire bars of this fetch set aside in ohlcv_quarantine (non-finite, missing, misdated, future)
            "quarantined": result.quarantined,
            **({"note": result.note} if result.note else {}),
            **(extra or {}),
        },
    )


def check_batch(context, config, warehouse, batch, selected_checks, now, tally: Counter | None = None):
    """The check evaluations of a batch of just-stored symbols: their materializations and their splits
    are read in one query each (not one per symbol), then each symbol's checks are evaluated.

    A symbol whose bars are not in memory is read from the warehouse, and only from the cut of its
    symbol_check_state on when the bars before the cut are those its state was folded from: a daily
    refresh reads a month or two of bars per symbol, not its whole history. The stats are cached
    (symbol_stats_cache) with the fingerprint of the bars they were computed from, so the
    symbol_stats asset does not read those bars again. `tally` counts the symbols checked from bars
    in memory, from a kept state, or read whole, and the bars read."""
    tally = Counter() if tally is None else tally
    store = warehouse.bars()
    symbols = [result.symbol for result, _ in batch]
    targets = materialization_targets(context.instance, symbols)
    wants_splits = any(k.name == SPLIT_CHECK for k in selected_checks)
    equities = [row.symbol for _, row in batch if row.asset_class != "crypto"]
    splits = CorporateActionStore(warehouse.resolved_url()).splits_by_symbol(equities) if wants_splits else {}
    states = CheckStateStore(store.url)
    plans = {row.symbol: _plan(row, config, now, splits.get(row.symbol, [])) for _, row in batch}
    kept = _usable_states(states, batch, plans, now)
    to_read = [result.symbol for result, _ in batch if result.stored_bars is None]
    # fingerprints of each symbol's bars (all of them, and before its old and new cuts), taken before the read
    prints = states.prints({s: [plans[s].cut, *([kept[s].cut] if s in kept else [])] for s in to_read}) if to_read else {}
    prior = {s: state for s, state in kept.items() if s in prints and prints[s].before.get(state.cut) == state.fingerprint}
    read = store.read_bars_many(to_read, since={s: state.cut for s, state in prior.items()}) if to_read else {}
    entries, saved = [], []
    for result, row in batch:
        in_memory = result.stored_bars is not None
        bars = result.stored_bars if in_memory else read.pop(row.symbol)
        result.stored_bars = None  # memory stays flat however many symbols the run holds
        plan, target = plans[row.symbol], targets.get(row.symbol)
        state = _loaded(prior.get(row.symbol))
        if state is None and row.symbol in prior:  # unreadable: the whole history instead
            bars = store.read_bars(row.symbol)
        tally["in_memory" if in_memory else "from_state" if state is not None else "whole"] += 1
        tally["bars_read"] += 0 if in_memory else len(bars)
        try:
            outcome = evaluate_checks(
                row.symbol, row.asset_class, bars, now=now, settings=config, splits=plan.splits,
                delisted_on=row.delisted_on, state=state, cut=plan.cut,
            )
        except ValueError:  # bars the fold refuses (never from a warehouse read): the full checks
            if state is not None:
                bars = store.read_bars(row.symbol)
            outcome = None
        if outcome is None:
            stats = compute_stats(row.symbol, row.asset_class, bars, config, now, row.delisted_on)
            report = evaluate_consistency(bars, plan.splits)
        else:
            stats, report = outcome.stats, outcome.splits
        if in_memory:  # every stored bar is one of these, written at stored_at
            bars_print = fingerprint(stats.record_count, stats.first_date, stats.last_date, result.stored_at)
        else:
            bars_print = prints[row.symbol].full
        if outcome is not None and (outcome.changed or prior.get(row.symbol) is None):
            folded = outcome.state.quality
            state_print = (
                fingerprint(folded.count, folded.first, folded.last, result.stored_at)
                if in_memory else prints[row.symbol].before.get(outcome.state.cut)
            )
            if state_print is not None:
                saved.append(StoredState(row.symbol, outcome.state.cut, state_print, plan.basis, outcome.state.to_json()))
        entries.append(cache_entry(stats, bars_print, stats_basis(row.asset_class, config, now, row.delisted_on)))
        yield from evaluations(stats, selected_checks, now=now, delisted_on=row.delisted_on, target=target)
        if wants_splits:
            yield split_evaluation(row.symbol, row.asset_class, None, plan.splits, target=target, report=report)
    try:
        computed_at = utcnow()
        StatsCache(store.url).put_many(entries, computed_at)
        states.put_many(saved, computed_at)
    except Exception as exc:  # only caches: symbol_stats and the next run recompute what they miss
        context.log.warning(f"could not cache the checks of {len(entries)} symbol(s): {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _Plan:
    cut: dt.date  # where the state kept for the next run ends
    basis: str
    splits: list


def tally_line(tally: Counter) -> str:
    """The run's log line on how its checks got their bars."""
    return (
        f"checks: {tally['in_memory']} symbol(s) from the bars just stored, {tally['from_state']} from their kept "
        f"state and the bars after its cut, {tally['whole']} read whole; {tally['bars_read']} bar(s) read"
    )


def _plan(row, config, now, splits) -> _Plan:
    window = getattr(config, "refetch_sessions", 0)  # the op's re-fetch window (checks alone: none)
    return _Plan(state_cut(row.asset_class, now, row.delisted_on, window), fold_basis(row.asset_class, config, splits), list(splits))


def _usable_states(states: CheckStateStore, batch, plans: dict[str, _Plan], now) -> dict[str, StoredState]:
    """The kept states of the batch's symbols read from the warehouse that still fit: same basis, and
    a cut every session and `today` of `now` still reach (their bars are checked next)."""
    rows = {row.symbol: row for result, row in batch if result.stored_bars is None}
    if not rows:
        return {}
    return {
        symbol: stored
        for symbol, stored in states.get_many(list(rows)).items()
        if stored.basis == plans[symbol].basis and usable(stored.cut, rows[symbol].asset_class, now, rows[symbol].delisted_on)
    }


def _loaded(stored: StoredState | None) -> CheckState | None:
    if stored is None:
        return None
    try:
        state = CheckState.from_json(stored.state)
    except (ValueError, TypeError, KeyError):
        return None
    return state if state.cut == stored.cut else None
