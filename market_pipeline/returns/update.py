"""Keeping `daily_returns` current: recompute only what changed.

A symbol's returns are recomputed

- whole, when it has none yet (or its upkeep state is gone: its bars changed while its returns were
  not kept up), when its adjustment factors changed since they were computed (a split or dividend
  recorded, corrected or withdrawn, or the close a dividend factor uses revised), or when asked;
- from the first date a run changed (or the first bar after the last return stored, if earlier)
  otherwise: the day's new bars and the re-fetched window, not the whole history;
- not at all when neither its bars nor its factors changed.

The bars are read once, several symbols at a time, through the column blocks, with both adjustments
applied to their closes as `read_bars(..., "total_return")` and `read_bars(..., "splits")` apply them
(the numbers of the adjusted views), in one snapshot. The factors' digest is taken before the bars
are read, so a factor written in between only makes the next update recompute the whole history
again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from market_pipeline.returns.compute import daily_returns, unexplained_returns
from market_pipeline.warehouse.returns import ReturnsState, ReturnsStore, SymbolReturns

DEFAULT_THRESHOLD = 0.5  # a return beyond a factor of 1.5 either way (see compute.outside)
LOOK_BACK_DAYS = 14  # a partial recompute reads this far before its first date, for the bar before it


@dataclasses.dataclass(frozen=True)
class ReturnsRequest:
    """What a run knows about a symbol's bars: `changed_from`, the first date it wrote a new or revised
    bar (None: no bar changed); `whole`: recompute the whole history whatever the state says."""

    symbol: str
    changed_from: dt.date | None = None
    whole: bool = False


@dataclasses.dataclass
class ReturnsOutcome:
    symbol: str
    action: str  # "whole", "partial" or "unchanged"
    reason: str
    since: dt.date | None  # the first date recomputed (partial)
    frame: pd.DataFrame  # the returns written (the rows from `since` on, or all)
    state: ReturnsState | None

    @property
    def rows_written(self) -> int:
        return len(self.frame)


def update_returns(url: str, requests: Sequence[ReturnsRequest], *, threshold: float = DEFAULT_THRESHOLD) -> list[ReturnsOutcome]:
    """Recompute what changed for each request's symbol and write it (one transaction for all of them).
    Returns one outcome per request, in order."""
    store = ReturnsStore(url)
    symbols = list(dict.fromkeys(r.symbol for r in requests))
    prints = store.factor_prints(symbols)  # before the bars (see the module docstring)
    states = store.states(symbols)
    events = store.event_dates(symbols)
    plans: dict[str, tuple[dt.date | None, str]] = {}  # symbol -> (since, reason); since None: whole
    unchanged: dict[str, str] = {}
    for request in requests:
        symbol, state = request.symbol, states.get(request.symbol)
        if request.whole:
            plans[symbol] = (None, "asked for")
        elif state is None:
            plans[symbol] = (None, "no returns kept yet")
        elif state.factors_print != prints[symbol]:
            plans[symbol] = (None, "its adjustment factors changed")
        elif request.changed_from is None and state.current_through is not None:
            unchanged[symbol] = "bars and factors unchanged"
        else:
            after = state.current_through + dt.timedelta(days=1) if state.current_through else None
            since = min(d for d in (request.changed_from, after) if d is not None) if (request.changed_from or after) else None
            plans[symbol] = (since, "new or revised bars") if since else (None, "no bar stored before")
    outcomes: dict[str, ReturnsOutcome] = {
        s: ReturnsOutcome(s, "unchanged", why, None, _empty(), states[s]) for s, why in unchanged.items()
    }
    groups: dict[dt.date | None, list[str]] = {}
    for symbol, (since, _) in plans.items():
        groups.setdefault(None if since is None else since - dt.timedelta(days=LOOK_BACK_DAYS), []).append(symbol)
    retry: list[str] = []
    for start, names in sorted(groups.items(), key=lambda item: (item[0] is not None, item[0] or dt.date.min)):
        total, split = _closes(url, names, start)
        for symbol in names:
            since, reason = plans[symbol]
            tr, sp = total.get(symbol, _NONE), split.get(symbol, _NONE)
            outcome = _compute(symbol, since, reason, tr, sp, states.get(symbol), prints[symbol], events[symbol], threshold)
            if outcome is None:  # no bar before `since` within the look-back: read its whole history
                retry.append(symbol)
            else:
                outcomes[symbol] = outcome
    if retry:
        total, split = _closes(url, retry, None)
        for symbol in retry:
            reason = f"{plans[symbol][1]}, and the bar before is more than {LOOK_BACK_DAYS} days earlier"
            outcomes[symbol] = _compute(symbol, None, reason, total.get(symbol, _NONE), split.get(symbol, _NONE),
                                        None, prints[symbol], events[symbol], threshold)
    store.replace([
        SymbolReturns(o.symbol, o.since if o.action == "partial" else None, o.frame, o.state)
        for o in outcomes.values() if o.action != "unchanged"
    ])
    return [outcomes[r.symbol] for r in requests]


def judge_stored(url: str, symbols: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD) -> dict[str, list[dict]]:
    """symbol -> its stored returns beyond `threshold` that no event recorded now explains: what the
    returns check finds when it runs on its own (the stored returns read through the column blocks,
    one snapshot; each return spans from the bar before it, the previous stored return's date, or the
    symbol's first bar for its first)."""
    from market_pipeline.warehouse.store import BarStore

    store = ReturnsStore(url)
    symbols = list(dict.fromkeys(symbols))
    stored = store.read(symbols)
    events = store.event_dates(symbols)
    firsts = BarStore(url).summary(symbols)
    out = {symbol: [] for symbol in symbols}
    present = set(stored.index.get_level_values("symbol")) if len(stored) else set()
    for symbol in symbols:
        if symbol not in present:
            continue
        returns = stored.loc[symbol].reset_index()
        dates = returns["date"].to_numpy(dtype="datetime64[D]")
        first_bar = np.datetime64(firsts[symbol][1], "D") if symbol in firsts else dates[0] - np.timedelta64(1, "D")
        previous = np.concatenate(([min(first_bar, dates[0] - np.timedelta64(1, "D"))], dates[:-1]))
        out[symbol] = unexplained_returns(returns, previous, events[symbol], threshold)
    return out


def _empty() -> pd.DataFrame:
    return daily_returns([], [], [])


_NONE = (np.array([], dtype="datetime64[ns]"), np.array([], dtype="float64"))


def _closes(url: str, symbols: list[str], start: dt.date | None) -> tuple[dict, dict]:
    """symbol -> (its bar dates as datetime64[ns], its closes), total-return and split-adjusted: one
    read of the bars from `start` through the column blocks, both adjustments applied to the close
    as `read_bars` applies them (the same numbers), in one snapshot."""
    from market_pipeline.warehouse import columns
    from market_pipeline.warehouse.reader import _factor_table, price_factors
    from market_pipeline.warehouse.store import BarStore

    with columns.snapshot(BarStore(url).engine) as conn:
        factors = _factor_table(conn, symbols)
        data = columns.read(conn, columns.OHLCV, symbols, start, None)
    offsets, close = data.offsets, data.values["close"]
    dates = data._dates(data.days)
    total, split = {}, {}
    for k, symbol in enumerate(data.symbols):
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        if hi == lo:
            continue
        ranges = factors.get(symbol)
        if ranges is None:
            total[symbol] = split[symbol] = (dates[lo:hi], close[lo:hi])
            continue
        split_factor, total_factor = price_factors(ranges, data.days[lo:hi].astype("datetime64[D]"))
        total[symbol] = (dates[lo:hi], close[lo:hi] * total_factor)
        split[symbol] = (dates[lo:hi], close[lo:hi] * split_factor)
    return total, split


def _compute(symbol, since, reason, tr, sp, state, factors_print, event_dates, threshold) -> ReturnsOutcome | None:
    dates, tr_close = tr
    sp_dates, sp_close = sp
    if not np.array_equal(dates, sp_dates):  # a bar written between the two reads: both on the dates of the first
        sp_close = pd.Series(sp_close, index=sp_dates).reindex(dates).to_numpy()
    first = 0
    if since is not None:
        first = int(np.searchsorted(dates, np.datetime64(since, "ns"), side="left"))
        if first == 0 and len(dates) and state is not None and state.current_through is not None:
            return None  # the bar before `since` is older than the look-back
        first = max(first - 1, 0)  # the bar before the first recomputed one
    frame = daily_returns(dates[first:], tr_close[first:], sp_close[first:])
    found = unexplained_returns(frame, dates[first:-1], event_dates, threshold)
    if since is not None and state is not None:
        kept = [o for o in state.outliers if o.get("date", "") < since.isoformat()]
        found = kept + found
    last = pd.Timestamp(dates[-1]).date() if len(dates) else (state.current_through if state is not None else None)
    action = "partial" if since is not None else "whole"
    return ReturnsOutcome(symbol, action, reason, since, frame, ReturnsState(symbol, last, factors_print, found))
