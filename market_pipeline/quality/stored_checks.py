"""The checks of symbols whose bars are in the warehouse, computed from each symbol's kept state
(symbol_check_state) and its bars after the state's cut, or from its whole history when no kept state
fits; and of symbols whose whole history a run holds in memory. What the ohlcv_daily checks and the
symbol_stats asset share.

A kept state fits when its basis is the one the checks have now (`checks_fold.fold_basis`), its cut
is still usable at `now`, and the bars before its cut have the fingerprint it was kept with: taken
with one aggregate before any bar is read, so a write in between can only make a state look stale.
Every symbol checked gets the state to keep for the next time (returned, for the caller to save with
its other caches).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from market_pipeline.corporate_actions.consistency import ConsistencyReport, evaluate as evaluate_consistency
from market_pipeline.corporate_actions.events import Split
from market_pipeline.quality.checks_fold import CheckOutcome, CheckState, evaluate, fold_basis, state_cut, usable
from market_pipeline.quality.report import compute_stats
from market_pipeline.quality.stats import SymbolStats
from market_pipeline.warehouse.check_state import CheckStateStore, StoredState
from market_pipeline.warehouse.stats_cache import fingerprint
from market_pipeline.warehouse.store import BarStore


@dataclass
class Checked:
    stats: SymbolStats
    splits: ConsistencyReport
    bars_print: str  # the fingerprint of the bars the stats describe
    source: str  # "in_memory", "from_state" (the kept state and the bars after its cut) or "whole"
    bars_read: int


def check_in_memory(
    symbol: str, asset_class: str, bars: pd.DataFrame, stored_at: dt.datetime, *, settings, now: dt.datetime,
    splits: Sequence[Split] = (), delisted_on: dt.date | None = None, window_sessions: int = 0,
) -> tuple[Checked, StoredState | None]:
    """The checks of a symbol whose stored bars are exactly `bars`, every one written at `stored_at`."""
    cut = state_cut(asset_class, now, delisted_on, window_sessions)
    outcome = _evaluate(symbol, asset_class, bars, now, settings, splits, delisted_on, None, cut)
    stats, report = _reports(outcome, symbol, asset_class, bars, now, settings, splits, delisted_on)
    checked = Checked(stats, report, fingerprint(stats.record_count, stats.first_date, stats.last_date, stored_at), "in_memory", 0)
    if outcome is None:
        return checked, None
    folded = outcome.state.quality
    state_print = fingerprint(folded.count, folded.first, folded.last, stored_at)
    return checked, StoredState(symbol, outcome.state.cut, state_print, fold_basis(asset_class, settings, splits), outcome.state.to_json())


def check_stored(
    store: BarStore, rows: Sequence, *, settings, now: dt.datetime, splits: Mapping[str, Sequence[Split]] | None = None,
    window_sessions: int = 0,
) -> tuple[list[tuple[object, Checked]], list[StoredState]]:
    """The checks of `rows` (tracked symbols: symbol, asset_class, delisted_on) from the warehouse, in
    one read per symbol on one connection, and the states to keep. `splits`: each equity's split list
    (absent: none)."""
    splits = splits or {}
    states = CheckStateStore(store.url)
    plans = {
        row.symbol: (state_cut(row.asset_class, now, row.delisted_on, window_sessions), fold_basis(row.asset_class, settings, splits.get(row.symbol, ())))
        for row in rows
    }
    by_symbol = {row.symbol: row for row in rows}
    kept = {
        symbol: stored
        for symbol, stored in (states.get_many(list(by_symbol)) if rows else {}).items()
        if stored.basis == plans[symbol][1] and usable(stored.cut, by_symbol[symbol].asset_class, now, by_symbol[symbol].delisted_on)
    }
    # fingerprints of each symbol's bars (all of them, and before its kept and new cuts), before the read
    prints = states.prints({row.symbol: [plans[row.symbol][0], *([kept[row.symbol].cut] if row.symbol in kept else [])] for row in rows})
    fitting = {s: stored for s, stored in kept.items() if prints[s].before.get(stored.cut) == stored.fingerprint}
    read = store.read_bars_many([row.symbol for row in rows], since={s: stored.cut for s, stored in fitting.items()})
    out, saved = [], []
    for row in rows:
        symbol, (cut, basis) = row.symbol, plans[row.symbol]
        symbol_splits = list(splits.get(symbol, ()))
        bars, state = read.pop(symbol), _loaded(fitting.get(symbol))
        if state is None and symbol in fitting:  # unreadable: the whole history instead
            bars = store.read_bars(symbol)
        outcome = _evaluate(symbol, row.asset_class, bars, now, settings, symbol_splits, row.delisted_on, state, cut)
        if outcome is None and state is not None:  # the fold refused the bars: the whole history, checked in full
            bars, state = store.read_bars(symbol), None
        stats, report = _reports(outcome, symbol, row.asset_class, bars, now, settings, symbol_splits, row.delisted_on)
        out.append((row, Checked(stats, report, prints[symbol].full, "from_state" if state is not None else "whole", len(bars))))
        if outcome is not None and (outcome.changed or symbol not in fitting):
            state_print = prints[symbol].before.get(outcome.state.cut)
            if state_print is not None:
                saved.append(StoredState(symbol, outcome.state.cut, state_print, basis, outcome.state.to_json()))
    return out, saved


def check_stored_in_batches(
    store: BarStore, rows: Sequence, *, settings, now: dt.datetime, batch: int = 50,
) -> tuple[list[tuple[object, Checked]], list[StoredState]]:
    """`check_stored` over any number of tracked symbols, `batch` at a time (their bars are in memory
    one batch at a time), with the equities' split lists read in one query."""
    from market_pipeline.warehouse.corporate_actions import CorporateActionStore

    equities = [row.symbol for row in rows if row.asset_class != "crypto"]
    splits = CorporateActionStore(store.url).splits_by_symbol(equities) if equities else {}
    out, saved = [], []
    for i in range(0, len(rows), batch):
        checked, states = check_stored(store, list(rows[i : i + batch]), settings=settings, now=now, splits=splits)
        out += checked
        saved += states
    return out, saved


def _evaluate(symbol, asset_class, bars, now, settings, splits, delisted_on, state, cut) -> CheckOutcome | None:
    try:
        return evaluate(symbol, asset_class, bars, now=now, settings=settings, splits=splits, delisted_on=delisted_on, state=state, cut=cut)
    except ValueError:  # bars the fold refuses (a null or repeated date: never from a warehouse read)
        return None


def _reports(outcome, symbol, asset_class, bars, now, settings, splits, delisted_on) -> tuple[SymbolStats, ConsistencyReport]:
    if outcome is not None:
        return outcome.stats, outcome.splits
    return compute_stats(symbol, asset_class, bars, settings, now, delisted_on), evaluate_consistency(bars, splits)


def _loaded(stored: StoredState | None) -> CheckState | None:
    if stored is None:
        return None
    try:
        state = CheckState.from_json(stored.state)
    except (ValueError, TypeError, KeyError):
        return None
    return state if state.cut == stored.cut else None
