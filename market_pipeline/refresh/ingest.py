"""Refreshing one symbol: plan the fetch window, fetch, upsert, record status. Plain Python.

`refresh_symbol` is three steps: `prepare_symbol` (warehouse: in_progress, the fetch window),
`fetch_symbol` (HTTP only, any thread) and `store_symbol` (warehouse: quarantine, upsert, status).
The Dagster asset runs them for many symbols at once with `market_pipeline.refresh.concurrent`
(fetches in threads, every database write on its own thread); tests and benchmarks call
`refresh_symbol` too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field, fields

import pandas as pd

from market_pipeline.polygon.bars import BAR_COLUMNS, empty_bars
from market_pipeline.polygon.client import FetchedBars, PolygonClient, PolygonError
from market_pipeline.polygon.inflight import in_flight
from market_pipeline.reference.freshness import last_trading_session
from market_pipeline.polygon.tickers import symbol_from_polygon_ticker
from market_pipeline.warehouse.quarantine import QuarantineStore
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.registry import SymbolRegistry, TrackedSymbol
from market_pipeline.warehouse.store import BarStore, normalize_bars

DEFAULT_HISTORY_DAYS = 730  # what Polygon's free plan serves: about two years
DEFAULT_REFETCH_SESSIONS = 3  # late trades revise the last few daily bars
GROUPED_STORE_BATCH = 200  # grouped symbols stored together (set-based statements, one bar transaction)


@dataclass(frozen=True)
class FetchPlan:
    start: dt.date
    end: dt.date
    full: bool  # whole history from the start date, rather than the re-fetch window


@dataclass
class SymbolResult:
    symbol: str
    asset_class: str
    status: str  # "completed" or "failed"
    path: str = "range"
    fetch_from: str | None = None
    fetch_to: str | None = None
    rows_fetched: int = 0
    rows_upserted: int = 0
    rows_inserted: int = 0
    rows_changed: int = 0
    rows_stored: int = 0
    first_date: str | None = None
    last_date: str | None = None
    requests: int = 0
    requests_shared: bool = False  # `requests` were the grouped requests shared by every grouped symbol
    quarantined: int = 0  # wire bars of this fetch set aside in ohlcv_quarantine
    note: str | None = None
    error: str | None = None
    transient: bool = False
    # every bar stored for the symbol, when they are exactly the bars just written (a whole history):
    # the checks use it instead of reading the rows back
    stored_bars: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stored_bars"}


def plan_fetch(
    tracked: TrackedSymbol,
    refetch_from: dt.date | None,
    today: dt.date,
    *,
    default_history_days: int = DEFAULT_HISTORY_DAYS,
) -> FetchPlan:
    """From the re-fetch window when history is already complete, else all history from the start date.

    A symbol whose bars were stored on the old adjusted basis (before migration 0003) is fetched again
    in full, as traded, from the earliest date it holds (one request)."""
    start_date = tracked.start_date or (today - dt.timedelta(days=default_history_days))
    if getattr(tracked, "bars_basis", "as_traded") == "adjusted" and tracked.asset_class != "crypto":
        return FetchPlan(min(start_date, tracked.history_from or start_date), today, full=True)
    has_history = refetch_from is not None and tracked.history_from is not None
    if not has_history or start_date < tracked.history_from:
        return FetchPlan(start_date, today, full=True)
    return FetchPlan(max(refetch_from, start_date), today, full=False)


@dataclass
class PreparedFetch:
    """A symbol marked in_progress whose fetch is planned: what `fetch_symbol` asks Polygon for."""

    tracked: TrackedSymbol
    result: SymbolResult
    start: dt.date
    end: dt.date
    full: bool  # a whole history: `history_from` is recorded when it is stored
    stored_from: dt.date | None  # the stored history's re-fetch start (None: nothing stored yet)
    last_session: dt.date  # bars after this date are set aside
    run_id: str | None


@dataclass
class FetchOutcome:
    """What one fetch brought: the bars, or the error (a PolygonError, or any other exception)."""

    fetched: FetchedBars | None
    error: Exception | None
    requests: int  # HTTP requests this fetch sent, retries included


def refresh_symbol(
    client: PolygonClient,
    store: BarStore,
    registry: SymbolRegistry,
    tracked: TrackedSymbol,
    *,
    run_id: str | None,
    today: dt.date | None = None,
    refetch_sessions: int = DEFAULT_REFETCH_SESSIONS,
    default_history_days: int = DEFAULT_HISTORY_DAYS,
    full_refetch: bool = False,
    completed_session: dt.date | None = None,
) -> SymbolResult:
    """Fetch and store one symbol's bars; never raises for a Polygon or database error (returns failed).
    `full_refetch` fetches the whole history from the start date again instead of the re-fetch window.

    Unusable wire bars are set aside in `ohlcv_quarantine` and the rest stored; bars dated after
    `completed_session` (the last completed session; default: `today`) are unusable. A symbol with no stored bars whose fetch brings
    none is `failed`, naming the range asked.

    The three steps, `prepare_symbol`, `fetch_symbol` and `store_symbol`, one after another
    (`market_pipeline.refresh.concurrent.refresh_symbols` runs the fetches of many symbols at once)."""
    prepared = prepare_symbol(
        store, registry, tracked, run_id=run_id, today=today, refetch_sessions=refetch_sessions,
        default_history_days=default_history_days, full_refetch=full_refetch, completed_session=completed_session,
    )
    if isinstance(prepared, SymbolResult):
        return prepared
    return store_symbol(store, registry, prepared, fetch_symbol(client, prepared))


def prepare_symbol(
    store: BarStore,
    registry: SymbolRegistry,
    tracked: TrackedSymbol,
    *,
    run_id: str | None,
    today: dt.date | None = None,
    refetch_sessions: int = DEFAULT_REFETCH_SESSIONS,
    default_history_days: int = DEFAULT_HISTORY_DAYS,
    full_refetch: bool = False,
    completed_session: dt.date | None = None,
) -> SymbolResult | PreparedFetch:
    """Step 1, on the thread that writes the warehouse: the delisting check, `in_progress`, the fetch
    window. Returns the finished SymbolResult when nothing is to be fetched (or a database fault
    failed it), else the PreparedFetch."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    symbol, asset_class = tracked.symbol, tracked.asset_class
    result = SymbolResult(symbol, asset_class, status="failed")
    try:
        last_session = last_trading_session(asset_class, tracked.delisted_on) if tracked.delisted_on else None
        if last_session is not None and not full_refetch and _delisted_complete(store, tracked, last_session, result, run_id, registry):
            return result
        registry.mark_in_progress(symbol, run_id)
        stored_from = store.refetch_start(symbol, refetch_sessions)
        refetch_from = None if full_refetch else stored_from
        plan = plan_fetch(tracked, refetch_from, today, default_history_days=default_history_days)
        if last_session is not None and last_session < plan.start:  # delisted before the history asked for
            result.note = f"delisted on {tracked.delisted_on}, before {plan.start}: nothing to fetch"
            _store_and_complete(store, registry, result, empty_bars(), run_id, history_from=plan.start if plan.full else None)
            return result
        if last_session is not None and last_session < plan.end:  # nothing trades after a delisting
            plan = FetchPlan(plan.start, last_session, plan.full)
        result.fetch_from, result.fetch_to = plan.start.isoformat(), plan.end.isoformat()
        if getattr(tracked, "bars_basis", "as_traded") == "adjusted" and asset_class != "crypto":
            result.note = "whole history re-fetched as traded (stored adjusted before the 0003 upgrade)"
        return PreparedFetch(
            tracked, result, plan.start, plan.end, plan.full, stored_from, completed_session or today, run_id
        )
    except PolygonError as exc:
        result.error, result.transient = str(exc), exc.transient
    except Exception as exc:  # a database fault: record it, let the caller fail the run
        result.error, result.transient = f"{symbol}: {type(exc).__name__}: {exc}", True
    return _finish(registry, result, run_id)


def fetch_symbol(client: PolygonClient, prepared: PreparedFetch) -> FetchOutcome:
    """Step 2, on any thread: the HTTP requests and parsing only, no database. Never raises."""
    tracked = prepared.tracked
    before = client.requests_this_thread
    try:
        fetched = client.fetch_daily_bars(
            tracked.symbol, tracked.asset_class, prepared.start, prepared.end, last_session=prepared.last_session
        )
        return FetchOutcome(fetched, None, client.requests_this_thread - before)
    except Exception as exc:
        return FetchOutcome(None, exc, client.requests_this_thread - before)


def store_symbol(store: BarStore, registry: SymbolRegistry, prepared: PreparedFetch, outcome: FetchOutcome) -> SymbolResult:
    """Step 3, on the thread that writes the warehouse: quarantine, upsert, `completed`; or `failed`
    with the reason. Never raises for a Polygon or database error."""
    result, symbol, run_id = prepared.result, prepared.tracked.symbol, prepared.run_id
    result.requests = outcome.requests
    try:
        if outcome.error is not None:
            raise outcome.error
        fetched = outcome.fetched
        result.quarantined = QuarantineStore(store.url).record(symbol, fetched.set_aside, run_id)
        if prepared.stored_from is None and fetched.bars.empty:
            aside = f" ({result.quarantined} set aside in ohlcv_quarantine)" if result.quarantined else ""
            raise PolygonError(f"no bars from Polygon for {symbol} {prepared.start}..{prepared.end}{aside}")
        _store_and_complete(
            store, registry, result, fetched.bars, run_id, history_from=prepared.start if prepared.full else None
        )
    except PolygonError as exc:
        result.error, result.transient = str(exc), exc.transient
    except Exception as exc:  # a database fault: record it, let the caller fail the run
        result.error, result.transient = f"{symbol}: {type(exc).__name__}: {exc}", True
    return _finish(registry, result, run_id)


def _finish(registry: SymbolRegistry, result: SymbolResult, run_id: str | None) -> SymbolResult:
    if result.status == "failed":
        try:
            registry.mark_failed(result.symbol, result.error or "unknown error", run_id)
        except Exception:  # the database itself is gone; the run-status sensor marks it later
            pass
    return result


def _delisted_complete(store, tracked, last_session, result, run_id, registry) -> bool:
    """A delisted symbol whose stored history reaches its last trading session: no request at all."""
    count, first, last = store.summary([tracked.symbol]).get(tracked.symbol, (0, None, None))
    if last is None or last < last_session or tracked.history_from is None:
        return False
    result.rows_stored, result.first_date, result.last_date = count, first.isoformat(), last.isoformat()
    result.note = f"delisted on {tracked.delisted_on}: history complete up to its last session {last_session}; nothing fetched"
    registry.mark_completed(tracked.symbol, run_id, history_from=None)
    result.status = "completed"
    return True


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
            )
            _record_failure(registry, result, run_id)
            yield result
        return
    by_symbol = {symbol: rows for symbol, rows in frame.groupby("symbol", sort=False)} if len(frame) else {}
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


def _store_and_complete(
    store: BarStore, registry: SymbolRegistry, result: SymbolResult, bars: pd.DataFrame,
    run_id: str | None, history_from: dt.date | None,
) -> None:
    """Upsert one symbol's bars (one transaction), record what was written and stored, mark it completed."""
    if not bars.empty:
        bars = normalize_bars(bars)
    written = store.upsert_bars(result.symbol, bars)
    result.rows_fetched = len(bars)
    result.rows_upserted, result.rows_inserted, result.rows_changed = (
        written.rows_upserted, written.rows_inserted, written.rows_changed,
    )
    count, first, last = store.summary([result.symbol]).get(result.symbol, (0, None, None))
    result.rows_stored = count
    if count and count == len(bars) == written.rows_upserted:  # the stored rows are these bars
        result.stored_bars = bars.reset_index(drop=True)
    result.first_date = first.isoformat() if first else None
    result.last_date = last.isoformat() if last else None
    registry.mark_completed(result.symbol, run_id, history_from=history_from, quarantined=result.quarantined)
    result.status = "completed"
    if result.asset_class != "crypto":
        # dividend factors need the close before each ex-date, duplicates the prices: follow the bars
        CorporateActionStore(store.url).recompute([result.symbol])


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
        quarantine = QuarantineStore(store.url)
        quarantined = {s: quarantine.record(s, list(set_aside.get(s, [])), run_id) for s in symbols}
        frames = {tracked.symbol: _grouped_window(bars, start, target) for tracked, start, bars in batch}
        frames = {s: normalize_bars(f) if not f.empty else f for s, f in frames.items()}
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
        result = SymbolResult(
            symbol, tracked.asset_class, "completed", path="grouped", requests=shared, requests_shared=True,
            fetch_from=start.isoformat(), fetch_to=target.isoformat(), quarantined=quarantined[symbol],
            rows_fetched=len(bars), rows_upserted=done.rows_upserted, rows_inserted=done.rows_inserted,
            rows_changed=done.rows_changed,
        )
        count, first, last = summary.get(symbol, (0, None, None))
        result.rows_stored = count
        if count and count == len(bars) == done.rows_upserted:  # the stored rows are these bars
            result.stored_bars = bars.reset_index(drop=True)
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
        result.quarantined = QuarantineStore(store.url).record(symbol, list(set_aside), run_id)
        bars = _grouped_window(bars, start, target)
        _store_and_complete(store, registry, result, bars, run_id, history_from=None)
    except Exception as exc:  # a database fault: record it, let the caller fail the run
        result.error, result.transient = f"{symbol}: {type(exc).__name__}: {exc}", True
        _record_failure(registry, result, run_id)
    return result


def _record_failure(registry: SymbolRegistry, result: SymbolResult, run_id: str | None) -> None:
    try:
        registry.mark_failed(result.symbol, result.error or "unknown error", run_id)
    except Exception:  # the database itself is gone; the run-status sensor marks it later
        pass
