"""Refreshing corporate actions: read the provider's lists, store what changed, keep factors right.

`refresh_corporate_actions` reads splits AND dividends first and records only when both reads
succeeded, so a failed request changes nothing (the views stay as they were): the symbols it
covered are marked `corporate_actions_status='failed'` with the error, and the caller goes on.
It never raises for a Polygon or database error; the outcome carries the error.

Two modes:
- whole lists of `symbols` (a run's or backfill's symbols, the weekly sweep): batched with
  `ticker.any_of`; events absent from the lists are withdrawn;
- `since`: every ticker's events dated on or after `since` (the daily schedules' look-back), in a
  constant number of requests; nothing is withdrawn (the lists were not read whole).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from market_pipeline.polygon.client import PolygonClient, PolygonError
from market_pipeline.polygon.corporate_actions import CorporateActionsClient
from market_pipeline.warehouse.corporate_actions import CorporateActionStore, RecordOutcome

DEFAULT_LOOKBACK_DAYS = 60  # the daily read's window: events recorded up to ~2 months late


@dataclasses.dataclass
class CorporateActionsResult:
    symbols: list[str]
    since: dt.date | None
    requests: int = 0
    outcome: RecordOutcome | None = None
    error: str | None = None
    invalid: list[str] = dataclasses.field(default_factory=list)  # "SYMBOL kind id: reason"

    @property
    def ok(self) -> bool:
        return self.error is None

    def metadata(self) -> dict:
        base = {
            "mode": "whole lists" if self.since is None else f"events since {self.since}",
            "symbols_read": len(self.symbols),
            "requests": self.requests,
        }
        if self.error:
            return {**base, "error": self.error}
        changes = self.outcome.metadata() if self.outcome else {}
        return {**base, **changes, "invalid": self.invalid}


def refresh_corporate_actions(
    client: PolygonClient,
    store: CorporateActionStore,
    symbols: Sequence[str] | None,
    *,
    since: dt.date | None = None,
    log=None,
) -> CorporateActionsResult:
    """Read and record the corporate actions of `symbols` (None: every tracked stock and ETF)."""
    tracked = sorted(store.tracked_equities())
    symbols = tracked if symbols is None else sorted(set(symbols) & set(tracked))
    result = CorporateActionsResult(symbols, since)
    if not symbols:
        return result
    reader = CorporateActionsClient(client)
    tickers = None if since is not None else symbols
    try:
        split_read = reader.splits(tickers, since=since)
        result.requests += split_read.requests
        dividend_read = reader.dividends(tickers, since=since)
        result.requests += dividend_read.requests
    except PolygonError as exc:
        result.error = f"corporate actions: {exc}"
        _mark_failed(store, symbols, result.error, log)
        return result
    for event in (*split_read.events, *dividend_read.events):
        if event.status == "invalid" and event.symbol in symbols:
            kind = "split" if hasattr(event, "split_from") else "dividend"
            result.invalid.append(f"{event.symbol} {kind} {event.provider_id}: {event.reason}")
            if log is not None:
                log.warning(f"{event.symbol}: {kind} {event.provider_id} stored as invalid, not applied: {event.reason}")
    try:
        result.outcome = store.record(
            split_read.events,
            dividend_read.events,
            complete_symbols=split_read.complete_symbols if since is None else [],
            read_symbols=symbols,
        )
    except Exception as exc:  # a database fault: the symbol transactions that failed rolled back
        result.error = f"corporate actions: {type(exc).__name__}: {exc}"
        _mark_failed(store, symbols, result.error, log)
    return result


def _mark_failed(store: CorporateActionStore, symbols, error: str, log) -> None:
    if log is not None:
        log.warning(f"{error}; adjusted views left as they were for {len(symbols)} symbol(s)")
    try:
        store.mark_failed(symbols, error)
    except Exception:  # the database itself is gone: nothing more to record
        pass
