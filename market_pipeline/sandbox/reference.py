"""The sandbox's reference data and symbol lifecycle: who holds a ticker when. Pure data.

A *security* has a stable composite FIGI and the tickers it traded under over time (FB until
2022-06-08, META from 2022-06-09), a listing date and, once delisted, its last trading day. The
server asks this module which dates a ticker has bars on, what `/v3/reference/tickers/{ticker}`
answers (optionally `?date=`), and what `/vX/reference/tickers/{ticker or FIGI}/events` answers.

The default market holds, besides the plain universe (every ticker its own active security listed
on the series' first day):

- `FB` -> `META` on 2022-06-09 (one security, FIGI BBG000MM2P62): FB's bars end on 2022-06-08,
  META's start on 2022-06-09, and both are one price series (META's): the history stitched across
  the rename is continuous;
- `TWTR`, delisted after its last session 2022-10-27: no bars after it, `active:false`, `delisted_utc`;
- `RUSE`, a reused ticker: one company until 2020-06-30 (delisted), another from 2023-03-01 with a
  different FIGI.

Knobs (`SandboxServer.delist`, `rename_ticker`, `reuse_ticker`) change the lifecycle per ticker;
`stitch_unrelated_series` makes a renamed security's names unrelated price series again (each its
own), to show what a stitched history with a false jump looks like.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib

import numpy as np

from market_pipeline.sandbox import market as synthetic
from market_pipeline.sandbox.protocol import _as_dates

FAR_PAST = synthetic.EPOCH


@dataclasses.dataclass(frozen=True)
class Security:
    figi: str
    name: str
    names: tuple[tuple[dt.date, str], ...]  # (first day under the ticker, ticker), oldest first
    type: str = "CS"
    exchange: str = "XNYS"
    list_date: dt.date = FAR_PAST
    delisted_on: dt.date | None = None  # last trading day
    market: str = "stocks"
    one_series: bool = True  # its names serve one price series (the latest name's); False: each its own

    def series_of(self, ticker: str) -> str:
        """The ticker whose simulated prices `ticker` serves while this security holds it."""
        return self.names[-1][1] if self.one_series else ticker

    @property
    def share_class_figi(self) -> str:
        return "BBG" + _digest(self.figi)[:9]

    @property
    def cik(self) -> str:
        return str(int(_digest(self.figi)[:8], 16) % 10**10).zfill(10)

    def span(self, ticker: str) -> tuple[dt.date, dt.date] | None:
        """First and last day the security traded as `ticker` (dt.date.max while it still does)."""
        for i, (start, name) in enumerate(self.names):
            if name == ticker:
                end = self.names[i + 1][0] - dt.timedelta(days=1) if i + 1 < len(self.names) else (self.delisted_on or dt.date.max)
                return max(start, self.list_date), end
        return None

    def active_on(self, day: dt.date) -> bool:
        return self.list_date <= day and (self.delisted_on is None or day <= self.delisted_on)

    def ticker_on(self, day: dt.date) -> str | None:
        held = [name for start, name in self.names if start <= day]
        return held[-1] if held else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest().upper()


def default_figi(ticker: str) -> str:
    return "BBG" + _digest(ticker)[:9]


DEFAULT_SECURITIES: tuple[Security, ...] = (
    Security("BBG000MM2P62", "Meta Platforms, Inc. Class A Common Stock",
             ((dt.date(2012, 5, 18), "FB"), (dt.date(2022, 6, 9), "META")), exchange="XNAS", list_date=dt.date(2012, 5, 18)),
    Security("BBG000H6HNW3", "Twitter, Inc.", ((dt.date(2013, 11, 7), "TWTR"),),
             list_date=dt.date(2013, 11, 7), delisted_on=dt.date(2022, 10, 27)),
    Security("BBG000RUSEA1", "Reuse Old Corp", ((dt.date(2015, 1, 2), "RUSE"),),
             list_date=dt.date(2015, 1, 2), delisted_on=dt.date(2020, 6, 30)),
    Security("BBG000RUSEB2", "Reuse New Holdings", ((dt.date(2023, 3, 1), "RUSE"),), list_date=dt.date(2023, 3, 1)),
)
LIFECYCLE_TICKERS = ("FB", "TWTR", "RUSE")  # added to the universe beside DEFAULT_UNIVERSE


@dataclasses.dataclass(frozen=True)
class Lifecycle:
    """Every security with a history (immutable: knobs build a new one)."""

    securities: tuple[Security, ...] = DEFAULT_SECURITIES

    def holders(self, ticker: str) -> list[tuple[Security, tuple[dt.date, dt.date]]]:
        """The securities that traded as `ticker`, with their spans, oldest first."""
        found = [(s, s.span(ticker)) for s in self.securities]
        return sorted(((s, span) for s, span in found if span), key=lambda pair: pair[1][0])

    def spans(self, ticker: str) -> list[tuple[dt.date, dt.date]] | None:
        """The date spans with bars for `ticker`; None when the ticker has no managed history."""
        holders = self.holders(ticker)
        return [span for _, span in holders] if holders else None

    @functools.cached_property
    def _series_names(self) -> dict[str, str]:
        return {ticker: s.series_of(ticker) for s in self.securities for _, ticker in s.names if len(s.names) > 1}

    def series_ticker(self, ticker: str) -> str:
        """The ticker whose simulated prices `ticker` serves: a renamed security's latest name (one
        price series under all its names), else the ticker itself."""
        return self._series_names.get(ticker, ticker)

    def trades_on(self, ticker: str, day: dt.date) -> bool:
        spans = self.spans(ticker)
        return spans is None or any(a <= day <= b for a, b in spans)

    def holder(self, ticker: str, day: dt.date) -> Security | None:
        """Who held `ticker` on `day`, else the latest holder before it (a delisted or renamed one)."""
        before = [(s, span) for s, span in self.holders(ticker) if span[0] <= day]
        if not before:
            return None
        for security, (start, end) in reversed(before):
            if day <= end:
                return security
        return before[-1][0]

    def by_id(self, ident: str, day: dt.date) -> Security | None:
        for security in self.securities:
            if security.figi == ident:
                return security
        return self.holder(ident, day)

    def is_active(self, ticker: str, today: dt.date) -> bool:
        security = self.holder(ticker, today)
        return security is None or (security.active_on(today) and security.ticker_on(today) == ticker)

    def universe_rows(self, universe: dict) -> dict:
        """Universe rows (reference list, grouped daily) for the tickers of the securities not in `universe`."""
        return {
            ticker: synthetic.TickerInfo(ticker, s.name, s.market, s.type, s.exchange)
            for s in self.securities for _, ticker in s.names if ticker not in universe
        }

    def replace(self, *securities: Security, drop: tuple[Security, ...] = ()) -> "Lifecycle":
        kept = tuple(s for s in self.securities if s not in drop and s.figi not in {n.figi for n in securities})
        return Lifecycle(kept + securities)


def traded(lifecycle: Lifecycle, ticker: str, dates: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The bar indices (into `dates`, datetime64[D]) on which `ticker` traded: all of them for a
    ticker without a managed history."""
    spans = lifecycle.spans(ticker)
    if spans is None or not len(indices):
        return indices
    days = dates[indices]
    keep = np.zeros(len(indices), dtype=bool)
    for first, last in spans:
        keep |= (days >= np.datetime64(first, "D")) & (days <= np.datetime64(min(last, dt.date(9999, 1, 1)), "D"))
    return indices[keep]


class LifecycleKnobs:
    """The lifecycle knobs of `SandboxServer` (mixed into the server)."""

    def delist(self, ticker: str, last_day: dt.date | str) -> None:
        """`ticker` (crypto as `X:BTCUSD`) stops trading after `last_day`: no bars after it, reference
        `active:false` with `delisted_utc`."""
        day = _as_dates(last_day)[0]
        with self._lock:
            self._lifecycle = delist(self._lifecycle, ticker, day, self._universe.get(ticker))

    def rename_ticker(self, old: str, new: str, on: dt.date | str) -> None:
        """The security trading as `old` trades as `new` from `on` (one FIGI; old's bars end the day before)."""
        day = _as_dates(on)[0]
        with self._lock:
            info = self._universe.get(old)
            self._lifecycle = rename(self._lifecycle, old, new, day, info)
            row = synthetic.TickerInfo(new, info.name if info else new, "stocks", info.type if info else "CS",
                                       info.primary_exchange if info else "XNYS")
            self._universe = {**self._universe, new: row}

    def stitch_unrelated_series(self, ticker: str, unrelated: bool = True) -> None:
        """The renamed security holding `ticker` serves each of its names as its own, unrelated price
        series (False: one series again): a history stitched across the rename then jumps."""
        with self._lock:
            holders = self._lifecycle.holders(ticker)
            if not holders or len(holders[-1][0].names) < 2:
                raise ValueError(f"{ticker} is not a name of a renamed security: rename it first (rename_ticker)")
            security = holders[-1][0]
            self._lifecycle = self._lifecycle.replace(dataclasses.replace(security, one_series=not unrelated))

    def reuse_ticker(self, ticker: str, on: dt.date | str, name: str | None = None) -> None:
        """From `on`, `ticker` belongs to a different security (another composite FIGI)."""
        day = _as_dates(on)[0]
        with self._lock:
            self._lifecycle = reuse(self._lifecycle, ticker, day, name)
            if ticker not in self._universe:
                self._universe = {**self._universe, ticker: synthetic.TickerInfo(ticker, ticker, "stocks", "CS", "XNYS")}


def _iso(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def detail_row(info: synthetic.TickerInfo | None, ticker: str, lifecycle: Lifecycle, day: dt.date, listing: dt.date | None) -> dict | None:
    """The `/v3/reference/tickers/{ticker}` result as of `day`, or None (404)."""
    security = lifecycle.holder(ticker, day)
    if security is None and lifecycle.spans(ticker) is not None:
        return None  # the ticker did not exist yet on that day
    if security is None:
        if info is None:
            return None
        row = info.detail_row()
        if info.market != "crypto":
            row.update(_identity(ticker))
        row["list_date"] = (listing or FAR_PAST).isoformat()
        return row
    row = _security_row(info, ticker, security, day)
    if security.market != "crypto" or info is None:  # a crypto pair's answer has no list date
        row["list_date"] = security.list_date.isoformat()
        if "delisted_utc" in row:  # after list_date, as before
            row["delisted_utc"] = row.pop("delisted_utc")
    return row


def list_rows(info: synthetic.TickerInfo, lifecycle: Lifecycle, day: dt.date) -> list[dict]:
    """The `/v3/reference/tickers` rows of one universe ticker as of `day`: one per security that has
    traded under it by then (an active one, and inactive ones with `delisted_utc`). Like the detail
    row without `list_date` (the list has none), with `last_updated_utc`."""
    ticker = info.ticker
    holders = lifecycle.holders(ticker)
    if not holders:
        row = info.reference_row()
        if info.market != "crypto":
            updated = row.pop("last_updated_utc")
            row.update(_identity(ticker), last_updated_utc=updated)
        return [row]
    rows = []
    for security, (start, _end) in holders:
        if start > day:
            continue  # not listed under this ticker yet
        row = _security_row(info, ticker, security, day)
        delisted = row.pop("delisted_utc", None)
        row["last_updated_utc"] = synthetic.REFERENCE_UPDATED
        if delisted is not None:
            row["delisted_utc"] = delisted
        rows.append(row)
    return rows


def _security_row(info: synthetic.TickerInfo | None, ticker: str, security: Security, day: dt.date) -> dict:
    """What Polygon says of `security` under `ticker` on `day`: active, or inactive with `delisted_utc`."""
    active = security.active_on(day) and security.ticker_on(day) == ticker
    if security.market == "crypto" and info is not None:
        row = info.detail_row()
        row["active"] = active
        if not active:
            row["delisted_utc"] = _iso(security.delisted_on or day)
        return row
    row = {
        "ticker": ticker,
        "name": security.name + synthetic.SYNTHETIC_SUFFIX,
        "market": security.market,
        "locale": "us",
        "primary_exchange": security.exchange,
        "type": security.type,
        "active": active,
        "currency_name": "usd",
        "cik": security.cik,
        "composite_figi": security.figi,
        "share_class_figi": security.share_class_figi,
    }
    if not active:
        end = security.span(ticker)[1]
        row["delisted_utc"] = _iso(end if end != dt.date.max else day)
    return row


def _identity(ticker: str) -> dict:
    """The CIK and FIGIs of a universe ticker without a managed history."""
    return {"cik": _cik(ticker), "composite_figi": default_figi(ticker), "share_class_figi": "BBG" + _digest(ticker)[9:18]}


def _cik(ticker: str) -> str:
    return str(int(_digest(ticker)[:8], 16) % 10**10).zfill(10)


def events_result(ident: str, lifecycle: Lifecycle, day: dt.date, known: bool) -> dict | None:
    """The `/vX/reference/tickers/{id}/events` result (newest event first, as Polygon sends), or None."""
    security = lifecycle.by_id(ident, day)
    if security is None:
        if not known:
            return None
        security = Security(default_figi(ident), ident, ((FAR_PAST, ident),))
    events = [
        {"ticker_change": {"ticker": name}, "type": "ticker_change", "date": start.isoformat()}
        for start, name in reversed(security.names)
    ]
    return {"name": security.name + synthetic.SYNTHETIC_SUFFIX, "figi": security.figi, "cik": security.cik, "events": events}


# ---- knobs ------------------------------------------------------------------------------------

def delist(lifecycle: Lifecycle, ticker: str, last_day: dt.date, info: synthetic.TickerInfo | None) -> Lifecycle:
    """`ticker`'s current security stops trading after `last_day`."""
    holders = lifecycle.holders(ticker)
    if holders:
        security = holders[-1][0]
        return lifecycle.replace(dataclasses.replace(security, delisted_on=last_day))
    market = info.market if info else ("crypto" if ticker.startswith("X:") else "stocks")
    return lifecycle.replace(Security(
        default_figi(ticker), info.name if info else ticker, ((FAR_PAST, ticker),), type=(info.type if info and info.type else "CS"),
        exchange=(info.primary_exchange if info and info.primary_exchange else "XNYS"), delisted_on=last_day, market=market,
    ))


def rename(lifecycle: Lifecycle, old: str, new: str, on: dt.date, info: synthetic.TickerInfo | None) -> Lifecycle:
    """The security trading as `old` trades as `new` from `on` (old's bars end the day before)."""
    holders = lifecycle.holders(old)
    if holders:
        security = holders[-1][0]
        names = tuple(n for n in security.names if n[0] < on) + ((on, new),)
    else:
        security = Security(default_figi(old), info.name if info else old, ((FAR_PAST, old),),
                            type=(info.type if info and info.type else "CS"))
        names = ((FAR_PAST, old), (on, new))
    return lifecycle.replace(dataclasses.replace(security, names=names))


def reuse(lifecycle: Lifecycle, ticker: str, on: dt.date, name: str | None = None) -> Lifecycle:
    """From `on`, `ticker` belongs to a new security (new FIGI); the previous holder stopped before."""
    holders = lifecycle.holders(ticker)
    if holders:
        old = holders[-1][0]
        start, end = old.span(ticker)
        if end >= on:
            old_end = on - dt.timedelta(days=1)
            lifecycle = lifecycle.replace(dataclasses.replace(old, delisted_on=old_end))
    else:
        lifecycle = lifecycle.replace(Security(default_figi(ticker), ticker, ((FAR_PAST, ticker),), delisted_on=on - dt.timedelta(days=1)))
    new = Security("BBG" + _digest(f"{ticker}@{on}")[:9], name or f"{ticker} Reused Inc.", ((on, ticker),), list_date=on)
    return lifecycle.replace(new)
