"""Planning a refresh: per symbol, one range request or a share of the grouped-daily requests. Pure.

Polygon serves a symbol's daily bars two ways:

- the range endpoint: one request per symbol, any span of dates;
- the grouped-daily endpoints: one request per date, every ticker of a market (stocks and ETFs share
  the `stocks` market; crypto has its own), whatever the number of tracked symbols.

A symbol whose stored history ends a few sessions before the target needs only those sessions plus
its re-fetch window: for many such symbols, a handful of grouped requests replaces one range
request each. `plan_market` picks, per market, the split that needs the fewest requests: the k
symbols whose windows start latest take the grouped path (costing the sessions from the earliest
of their window starts to the target), the others one range request each, with k from 0 (all
range) to every eligible symbol. A tie keeps the range path, so a plan never costs more requests
than the per-symbol path. Symbols that need their whole history (new, or start date moved earlier)
always take the range path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from market_pipeline import calendars

STOCKS, CRYPTO = "stocks", "crypto"
MARKETS = (STOCKS, CRYPTO)
_MARKET_OF = {"stock": STOCKS, "etf": STOCKS, "crypto": CRYPTO}
_CALENDAR_OF = {STOCKS: "stock", CRYPTO: "crypto"}
DEFAULT_MAX_GROUPED_DATES = 60  # bounds one run's grouped requests (about 12,000 stock rows each)


def market_of(asset_class: str) -> str:
    """The grouped-daily market of an asset class: `stocks` for stock and ETF, `crypto` for crypto."""
    try:
        return _MARKET_OF[asset_class]
    except KeyError:
        raise ValueError(f"unknown asset class {asset_class!r}: use stock, etf or crypto") from None


def market_calendar(market: str) -> str:
    """The calendars-module asset class whose sessions are the market's dates."""
    return _CALENDAR_OF[market]


def session_dates(market: str, start: dt.date, end: dt.date) -> list[dt.date]:
    """The market's sessions in [start, end] (XNYS sessions for stocks, every UTC day for crypto)."""
    days = calendars.session_days(market_calendar(market), np.datetime64(start, "D"), np.datetime64(end, "D"))
    return [d.astype(dt.date) for d in days]


def target_session(market: str, now: dt.datetime, requested: dt.date | None = None) -> dt.date:
    """The last date a refresh covers: `requested` when given, else the latest completed session at `now`."""
    if requested is not None:
        return requested
    return calendars.latest_completed_session(market_calendar(market), now)


def sessions_behind(market: str, last_stored: dt.date | None, target: dt.date) -> int | None:
    """Sessions after `last_stored` up to `target` (0: up to date; None: nothing stored)."""
    if last_stored is None:
        return None
    return len(session_dates(market, last_stored + dt.timedelta(days=1), target))


@dataclass(frozen=True)
class SymbolWindow:
    """What one symbol needs fetched: from `start` to the target, or its whole history when `full`."""

    symbol: str
    asset_class: str
    start: dt.date  # the first date to fetch (start of the re-fetch window, or the start date)
    full: bool  # whole history needed: the range path only

    @property
    def market(self) -> str:
        return market_of(self.asset_class)


@dataclass(frozen=True)
class MarketPlan:
    """One market's refresh: the grouped dates to request and which symbols take which path."""

    market: str
    target: dt.date
    grouped: tuple[str, ...] = ()  # symbols stored from the grouped responses
    dates: tuple[dt.date, ...] = ()  # grouped-daily dates to request, one request each
    ranged: tuple[str, ...] = ()  # symbols with one range request each

    @property
    def requests(self) -> int:
        """Requests the plan makes (retries aside)."""
        return len(self.dates) + len(self.ranged)

    @property
    def range_only_requests(self) -> int:
        """Requests the per-symbol path would make for the same symbols."""
        return len(self.grouped) + len(self.ranged)

    def path_of(self, symbol: str) -> str:
        return "grouped" if symbol in self.grouped else "range"


def plan_market(
    market: str,
    windows: Sequence[SymbolWindow],
    target: dt.date,
    *,
    max_grouped_dates: int | None = DEFAULT_MAX_GROUPED_DATES,
    allow_grouped: bool = True,
) -> MarketPlan:
    """The fewest-requests split of one market's symbols between the grouped and the range path.

    `windows` keep their order in the plan's symbol lists. A symbol whose window starts after the
    target (nothing to fetch) costs no grouped request.
    """
    windows = [w for w in windows if w.market == market]
    order = [w.symbol for w in windows]
    eligible = sorted((w for w in windows if not w.full), key=lambda w: w.start, reverse=True)
    if not allow_grouped or not eligible:
        return MarketPlan(market, target, ranged=tuple(order))
    sessions = np.asarray(
        calendars.session_days(market_calendar(market), np.datetime64(min(w.start for w in eligible), "D"), np.datetime64(target, "D"))
    )
    sessions_from = {}  # window start -> number of sessions in [start, target]
    for w in eligible:
        if w.start not in sessions_from:
            sessions_from[w.start] = len(sessions) - int(np.searchsorted(sessions, np.datetime64(w.start, "D")))
    best_k, best_cost = 0, len(windows)  # k = 0: every symbol on the range path
    for k in range(1, len(eligible) + 1):
        dates_needed = sessions_from[eligible[k - 1].start]  # the k latest starts; the k-th is the earliest
        if max_grouped_dates is not None and dates_needed > max_grouped_dates:
            break  # later k only start earlier
        cost = dates_needed + len(windows) - k
        if cost < best_cost:
            best_k, best_cost = k, cost
    if best_k == 0:
        return MarketPlan(market, target, ranged=tuple(order))
    chosen = {w.symbol for w in eligible[:best_k]}
    first = eligible[best_k - 1].start
    return MarketPlan(
        market,
        target,
        grouped=tuple(s for s in order if s in chosen),
        dates=tuple(session_dates(market, first, target)),
        ranged=tuple(s for s in order if s not in chosen),
    )


def plan_refresh(
    windows: Iterable[SymbolWindow],
    targets: dict[str, dt.date],
    *,
    max_grouped_dates: int | None = DEFAULT_MAX_GROUPED_DATES,
    allow_grouped: bool = True,
) -> dict[str, MarketPlan]:
    """One plan per market that has symbols; `targets` maps each market to its target date."""
    windows = list(windows)
    plans = {}
    for market in MARKETS:
        mine = [w for w in windows if w.market == market]
        if mine:
            plans[market] = plan_market(
                market, mine, targets[market], max_grouped_dates=max_grouped_dates, allow_grouped=allow_grouped
            )
    return plans
