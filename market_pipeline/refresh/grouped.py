"""Refreshing many symbols of one market from its grouped-daily bars (one request per date for all of
them), stored in batches with set-based statements. Plain Python; the Dagster asset calls
`refresh_grouped` for the symbols `market_pipeline.refresh.planning` puts on the grouped path."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import closing

import numpy as np
import pandas as pd

from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.polygon.client import PolygonClient, PolygonError
from market_pipeline.polygon.inflight import in_flight
from market_pipeline.polygon.tickers import symbol_from_polygon_ticker
from market_pipeline.refresh.ingest import (
    DEFAULT_HISTORY_DAYS,
    DEFAULT_REFETCH_SESSIONS,
    SymbolResult,
    _store_and_complete,
    failed,
    record_quarantined,
    refresh_symbol,
)
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.registry import SymbolRegistry, TrackedSymbol
from market_pipeline.warehouse.store import BarStore, normalize_bars

GROUPED_STORE_BATCH = 200  # grouped symbols stored together (set-based statements, one bar transaction)


def fetch_grouped(
    client: PolygonClient, market_class: str, dates: Sequence[dt.date], wanted: set[str],
    set_aside: dict[str, list] | None = None,
) -> pd.DataFrame:
    """The grouped-daily bars of `dates` (one request each) for the `wanted` symbols only, with a
    `symbol` column. `market_class` is "stock" (stocks and ETFs) or "crypto". Unusable rows of the
    wanted symbols go to `set_aside` (symbol -> bars), when given. Up to the client's `max_in_flight`
    dates are requested at once; their bars are kept in date order (the first failing date raises)."""
    frames = []
    fetches = in_flight(
        dates, lambda day: client.fetch_grouped_daily(market_class, day), max_in_flight=getattr(client, "max_in_flight", 1)
    )
    with closing(fetches):
        for _day, fetched in fetches:
            frame = fetched.bars
            frames.append(frame[frame["symbol"].isin(wanted)])
            if set_aside is not None:
                for bar in fetched.set_aside:
                    symbol = symbol_from_polygon_ticker(bar.ticker) if bar.ticker else None
                    if symbol in wanted:
                        set_aside.setdefault(symbol, []).append(bar)
    if not frames:
        return pd.DataFrame(columns=["symbol", *BAR_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def refresh_grouped(
    client: PolygonClient,
    store: BarStore,
    registry: SymbolRegistry,
    windows: Sequence[tuple[TrackedSymbol, dt.date]],
    dates: Sequence[dt.date],
    target: dt.date,
    *,
    run_id: str | None,
    refetch_sessions: int = DEFAULT_REFETCH_SESSIONS,
    default_history_days: int = DEFAULT_HISTORY_DAYS,
) -> Iterator[SymbolResult]:
    """Refresh many symbols of one market from its grouped-daily bars: `dates` are requested once
    each, then every symbol's bars from its window start (`windows`: tracked row, first date) to
    `target` are upserted in one transaction per symbol. Yields a result per symbol as it is stored.

    A symbol absent from every grouped response (a ticker the grouped endpoint does not list) is
    fetched with its own range request instead, so it is never silently left behind. Never raises
    for a Polygon or database error: a failed grouped request fails every symbol with its reason.
    """
    if not windows:
        return
    market_class = "crypto" if windows[0][0].asset_class == "crypto" else "stock"
    wanted = {tracked.symbol for tracked, _ in windows}
    before = client.stats.requests
    set_aside: dict[str, list] = {}
    try:
        frame = fetch_grouped(client, market_class, dates, wanted, set_aside)
        error = None
    except PolygonError as exc:
        frame, error = None, exc
    shared = client.stats.requests - before
    if error is not None:
        for tracked, start in windows:
            result = SymbolResult(
                tracked.symbol, tracked.asset_class, "failed", path="grouped", requests=shared, requests_shared=True,
                fetch_from=start.isoformat(), fetch_to=target.isoformat(),
                error=f"{tracked.symbol}: grouped daily bars: {error}", transient=error.transient,
                stop_reason=failed(SymbolResult(tracked.symbol, tracked.asset_class, "failed"), error).stop_reason,
            )
            _record_failure(registry, result, run_id)
            yield result
        return
    by_symbol = _windows_by_symbol(frame, {tracked.symbol: start for tracked, start in windows}, target)
    batch: list = []
    for tracked, start in windows:
        bars = by_symbol.get(tracked.symbol)
        if bars is None and dates:
            result = refresh_symbol(
                client, store, registry, tracked, run_id=run_id, today=target,
                refetch_sessions=refetch_sessions, default_history_days=default_history_days,
            )
            result.note = "absent from the grouped-daily responses: fetched with a range request"
            yield result
            continue
        batch.append((tracked, start, bars))
        if len(batch) >= GROUPED_STORE_BATCH:
            yield from _store_grouped_batch(store, registry, batch, target, shared, run_id, set_aside)
            batch = []
    if batch:
        yield from _store_grouped_batch(store, registry, batch, target, shared, run_id, set_aside)


def _windows_by_symbol(frame: pd.DataFrame, starts: dict[str, dt.date], target: dt.date) -> dict[str, pd.DataFrame]:
    """Each symbol present in the grouped responses -> its bars from its window start to `target`, by
    date (rows of one date keep their order): one filter, one sort and numpy slicing for all symbols
    (pandas' groupby split cost ~9 ms a symbol, with the nullable `transactions` column)."""
    if not len(frame):
        return {}
    present = pd.unique(frame["symbol"])
    first = frame["symbol"].map({s: pd.Timestamp(d) for s, d in starts.items()})
    kept = frame[(frame["date"] >= first) & (frame["date"] <= pd.Timestamp(target))]
    kept = kept.sort_values(["symbol", "date"], kind="stable")
    names = kept["symbol"].to_numpy()
    bars = kept[list(BAR_COLUMNS)]
    cuts = np.flatnonzero(names[1:] != names[:-1]) + 1 if len(names) else np.empty(0, dtype=int)
    out = {
        names[a]: bars.iloc[a:b].reset_index(drop=True)
        for a, b in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(names)])))
        if b > a
    }
    empty = bars.iloc[0:0].reset_index(drop=True)
    return {symbol: out.get(symbol, empty) for symbol in present}


def _grouped_window(bars: pd.DataFrame | None, start: dt.date, target: dt.date) -> pd.DataFrame:
    """One symbol's grouped-daily bars from its window start to the target, by date."""
    if bars is None:
        bars = pd.DataFrame(columns=list(BAR_COLUMNS))
    day = bars["date"]
    bars = bars[(day >= pd.Timestamp(start)) & (day <= pd.Timestamp(target))]
    return bars.sort_values("date", kind="stable").reset_index(drop=True)[list(BAR_COLUMNS)]


def _store_grouped_batch(store, registry, batch, target, shared, run_id, set_aside) -> Iterator[SymbolResult]:
    """Store a batch of grouped symbols with set-based statements: one status update for all, one
    transaction for all their bars, one summary query, one completion update, their factors
    (a handful of transactions for the batch, not five per symbol). A database fault in the batch
    sends each of its symbols through the one-symbol path, which records the fault per symbol."""
    symbols = [tracked.symbol for tracked, _, _ in batch]
    try:
        registry.mark_in_progress_many(symbols, run_id)
        results = {tracked.symbol: SymbolResult(tracked.symbol, tracked.asset_class, "completed") for tracked, _, _ in batch}
        for symbol in symbols:
            record_quarantined(store, results[symbol], set_aside.get(symbol, []), run_id)
        quarantined = {symbol: results[symbol].quarantined for symbol in symbols}
        frames = {  # the bars arrive windowed and ordered (_windows_by_symbol)
            tracked.symbol: normalize_bars(bars) if bars is not None and not bars.empty else _grouped_window(bars, start, target)
            for tracked, start, bars in batch
        }
        written = store.upsert_many(list(frames.items()))
        summary = store.summary(symbols)
        registry.mark_completed_many(quarantined, run_id)
        CorporateActionStore(store.url).recompute([t.symbol for t, _, _ in batch if t.asset_class != "crypto"])
    except Exception:
        for tracked, start, bars in batch:
            yield _store_grouped(store, registry, tracked, bars, start, target, shared, run_id, set_aside.get(tracked.symbol, []))
        return
    for tracked, start, _ in batch:
        symbol, bars, done = tracked.symbol, frames[tracked.symbol], written[tracked.symbol]
        result = dataclasses.replace(
            results[symbol], path="grouped", requests=shared, requests_shared=True,
            fetch_from=start.isoformat(), fetch_to=target.isoformat(),
            rows_fetched=len(bars), rows_upserted=done.rows_upserted, rows_inserted=done.rows_inserted,
            rows_changed=done.rows_changed, revised_dates=[day.isoformat() for day in done.revised],
        )
        count, first, last = summary.get(symbol, (0, None, None))
        result.rows_stored = count
        if count and count == len(bars) == done.rows_upserted:  # the stored rows are these bars
            result.stored_bars, result.stored_at = bars.reset_index(drop=True), done.fetched_at
        result.first_date = first.isoformat() if first else None
        result.last_date = last.isoformat() if last else None
        yield result


def _store_grouped(store, registry, tracked, bars, start, target, shared, run_id, set_aside=()) -> SymbolResult:
    symbol = tracked.symbol
    result = SymbolResult(
        symbol, tracked.asset_class, "failed", path="grouped", requests=shared, requests_shared=True,
        fetch_from=start.isoformat(), fetch_to=target.isoformat(),
    )
    try:
        registry.mark_in_progress(symbol, run_id)
        record_quarantined(store, result, set_aside, run_id)
        bars = _grouped_window(bars, start, target)
        _store_and_complete(store, registry, result, bars, run_id, history_from=None)
    except Exception as exc:  # a database fault: record it, let the caller fail the run (or stop it)
        failed(result, exc, store)
        _record_failure(registry, result, run_id)
    return result


def _record_failure(registry: SymbolRegistry, result: SymbolResult, run_id: str | None) -> None:
    try:
        registry.mark_failed(result.symbol, result.error or "unknown error", run_id)
    except Exception:  # the database itself is gone; the run-status sensor marks it later
        pass
