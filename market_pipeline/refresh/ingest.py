"""Refreshing one symbol: plan the fetch window, fetch, upsert, record status. Plain Python.

`refresh_symbol` is three steps: `prepare_symbol` (warehouse: in_progress, the fetch window),
`fetch_symbol` (HTTP only, any thread) and `store_symbol` (warehouse: quarantine, upsert, status).
The Dagster asset runs them for many symbols at once with `market_pipeline.refresh.concurrent`
(fetches in threads, every database write on its own thread); tests and benchmarks call
`refresh_symbol` too. Symbols refreshed from grouped-daily bars: `market_pipeline.refresh.grouped`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

import pandas as pd
import sqlalchemy as sa

from market_pipeline.polygon.bars import empty_bars
from market_pipeline.polygon.client import FetchedBars, PolygonClient, PolygonError
from market_pipeline.polygon.validate_bars import CONFLICTING, OUTSIDE_RANGE
from market_pipeline.reference.freshness import last_trading_session
from market_pipeline.warehouse.quarantine import QuarantineStore
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.registry import SymbolRegistry, TrackedSymbol
from market_pipeline.warehouse.schema import symbol_reference
from market_pipeline.warehouse.store import BarStore, normalize_bars

DEFAULT_HISTORY_DAYS = 730  # what Polygon's free plan serves: about two years
DEFAULT_REFETCH_SESSIONS = 3  # late trades revise the last few daily bars


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
    # the dates whose previous values the write kept in ohlcv_revisions (ISO)
    revised_dates: list[str] = field(default_factory=list)
    rows_stored: int = 0
    first_date: str | None = None
    last_date: str | None = None
    requests: int = 0
    requests_shared: bool = False  # `requests` were the grouped requests shared by every grouped symbol
    quarantined: int = 0  # wire bars of this fetch set aside in ohlcv_quarantine
    quarantined_outside_range: int = 0  # of them: `outside the requested range`
    quarantined_conflicting: int = 0  # of them: `conflicting duplicates`
    note: str | None = None
    error: str | None = None
    transient: bool = False
    # the error will fail every later symbol of the run too (`stop_reason` says why: a full disk, a
    # read-only or unreachable warehouse, Polygon asking for a wait longer than the client's longest)
    stop_reason: str | None = None
    # every bar stored for the symbol, when they are exactly the bars just written (a whole history):
    # the checks use it instead of reading the rows back
    stored_bars: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    # with stored_bars: the fetched_at stamped on every one of them (their fingerprint's last part)
    stored_at: dt.datetime | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("stored_bars", "stored_at")}


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
    listed_on: dt.date | None = None  # the reference's listing date: bars before it are set aside


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
            tracked, result, plan.start, plan.end, plan.full, stored_from, completed_session or today, run_id,
            listed_on(store, symbol),
        )
    except Exception as exc:
        failed(result, exc, store)
    return _finish(registry, result, run_id)


def fetch_symbol(client: PolygonClient, prepared: PreparedFetch) -> FetchOutcome:
    """Step 2, on any thread: the HTTP requests and parsing only, no database. Never raises."""
    tracked = prepared.tracked
    before = client.requests_this_thread
    try:
        fetched = client.fetch_daily_bars(
            tracked.symbol, tracked.asset_class, prepared.start, prepared.end, last_session=prepared.last_session,
            listed_on=prepared.listed_on,
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
        record_quarantined(store, result, fetched.set_aside, run_id)
        if prepared.stored_from is None and fetched.bars.empty:
            aside = f" ({result.quarantined} set aside in ohlcv_quarantine)" if result.quarantined else ""
            raise PolygonError(f"no bars from Polygon for {symbol} {prepared.start}..{prepared.end}{aside}")
        _store_and_complete(
            store, registry, result, fetched.bars, run_id, history_from=prepared.start if prepared.full else None
        )
    except Exception as exc:
        failed(result, exc, store)
    return _finish(registry, result, run_id)


def failed(result: SymbolResult, exc: Exception, store: BarStore | None = None) -> SymbolResult:
    """Record why the symbol failed on its result: a Polygon error as it is; any other exception is
    a database fault (transient: a step retry may get through), and one that will fail every later
    write (`warehouse.faults.lost`: a full disk, a read-only or unreachable warehouse) stops the run."""
    if isinstance(exc, PolygonError):
        result.error, result.transient = str(exc), exc.transient
        result.stop_reason = exc.stops_run
        return result
    from market_pipeline.warehouse.faults import UNREACHABLE, describe, lost

    reason = lost(exc, store.engine if store is not None else None)
    if reason is not None:  # only a server that may come back is worth a step retry
        result.error, result.transient, result.stop_reason = f"{result.symbol}: {reason}", reason.startswith(UNREACHABLE), reason
    else:
        result.error, result.transient = f"{result.symbol}: {type(exc).__name__}: {describe(exc)}", True
    return result


def listed_on(store: BarStore, symbol: str) -> dt.date | None:
    """The symbol's listing date as its stored reference gives it (None: not known)."""
    with store.engine.connect() as conn:
        return conn.execute(sa.select(symbol_reference.c.list_date).where(symbol_reference.c.symbol == symbol)).scalar()


def record_quarantined(store: BarStore, result: SymbolResult, set_aside, run_id: str | None) -> None:
    """Store the fetch's set-aside bars in ohlcv_quarantine and count them on `result`, by reason."""
    result.quarantined = QuarantineStore(store.url).record(result.symbol, list(set_aside), run_id)
    result.quarantined_outside_range = sum(bar.reason == OUTSIDE_RANGE for bar in set_aside)
    result.quarantined_conflicting = sum(bar.reason == CONFLICTING for bar in set_aside)


def _finish(registry: SymbolRegistry, result: SymbolResult, run_id: str | None) -> SymbolResult:
    if result.status == "failed":
        try:
            registry.mark_failed(result.symbol, result.error or "unknown error", run_id)
        except Exception:  # the database itself is gone; the op (or the run-status sensor) marks it later
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
    result.revised_dates = [day.isoformat() for day in written.revised]
    if written.stored is not None:  # counted by the write itself, in its transaction
        count, first, last = written.stored
    else:
        count, first, last = store.summary([result.symbol]).get(result.symbol, (0, None, None))
    result.rows_stored = count
    if count and count == len(bars) == written.rows_upserted:  # the stored rows are these bars
        result.stored_bars, result.stored_at = bars.reset_index(drop=True), written.fetched_at
    result.first_date = first.isoformat() if first else None
    result.last_date = last.isoformat() if last else None
    registry.mark_completed(result.symbol, run_id, history_from=history_from, quarantined=result.quarantined)
    result.status = "completed"
    if result.asset_class != "crypto":
        # dividend factors need the close before each ex-date, duplicates the prices: follow the bars
        CorporateActionStore(store.url).recompute([result.symbol])
