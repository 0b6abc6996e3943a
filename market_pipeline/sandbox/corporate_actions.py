"""Corporate actions of the synthetic market: splits and cash dividends, deterministic per ticker.

The simulated series of `market.py` is the price path on *today's* share basis. A split that
happened (an *actual* split) makes the as-traded prices before its execution date differ:
as traded = simulated x split_to / split_from (a 2-for-1 traded twice as high before it; volume
half). What the provider *lists* can differ from what happened: a split recorded late is actual but
not yet listed, a duplicated listing is listed but not actual, a withdrawn listing is neither.

- `adjusted=false` serves the as-traded prices (actual splits only);
- `adjusted=true` serves them times split_from / split_to of every *listed* split after the bar
  (Polygon adjusts with the splits it knows at the moment of the request, duplicates included).

Default events (the sandbox's history; the demo symbol MSFT splits 2-for-1 on 2025-12-01, inside
the two years `make run` fetches): NVDA 4-for-1 (2021-07-20) then 10-for-1 (2024-06-10), TSLA
5-for-1 (2020-08-31) then 3-for-1 (2022-08-25), GOOGL 20-for-1 (2022-07-18), INTC a 1-for-2
reverse split (2023-03-20). MSFT, SPY, KO, JNJ and PG pay quarterly cash dividends (a fixed share of
the as-traded close before the ex-date, rounded to the cent).

Endpoints served from here: `/stocks/v1/splits`, `/stocks/v1/dividends` and the deprecated
`/v3/reference/splits`, `/v3/reference/dividends`, with `ticker`, `ticker.any_of`, the date filters
(`execution_date` / `ex_dividend_date` with `.gte/.gt/.lte/.lt`), `limit`, `sort` and cursor
pagination through `next_url`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib

import numpy as np

from market_pipeline.sandbox import market as synthetic

V1_DEFAULT_LIMIT, V1_MAX_LIMIT = 100, 5000
V3_DEFAULT_LIMIT, V3_MAX_LIMIT = 10, 1000
LISTED_AHEAD_DAYS = 30  # events are listed once declared: up to this many days before their date
DIVIDEND_START = dt.date(2005, 1, 1)

DEFAULT_SPLITS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "MSFT": (("2025-12-01", 1, 2),),
    "NVDA": (("2021-07-20", 1, 4), ("2024-06-10", 1, 10)),
    "TSLA": (("2020-08-31", 1, 5), ("2022-08-25", 1, 3)),
    "GOOGL": (("2022-07-18", 1, 20),),
    "INTC": (("2023-03-20", 2, 1),),
}
DEFAULT_DIVIDEND_YIELDS = {"MSFT": 0.0025, "SPY": 0.004, "KO": 0.007, "JNJ": 0.0075, "PG": 0.006}


def _id(prefix: str, *parts) -> str:
    return prefix + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class SplitListing:
    ticker: str
    execution_date: dt.date
    split_from: float
    split_to: float
    actual: bool = True  # the prices show it
    listed: bool = True  # the provider's list has it
    id: str = ""

    def with_id(self) -> "SplitListing":
        if self.id:
            return self
        return dataclasses.replace(self, id=_id("S", self.ticker, self.execution_date, self.split_from, self.split_to))


@dataclasses.dataclass(frozen=True)
class DividendListing:
    ticker: str
    ex_dividend_date: dt.date
    cash_amount: float
    id: str = ""
    frequency: int = 4
    listed: bool = True

    def with_id(self) -> "DividendListing":
        return self if self.id else dataclasses.replace(self, id=_id("D", self.ticker, self.ex_dividend_date))


def default_splits() -> tuple[SplitListing, ...]:
    return tuple(
        SplitListing(ticker, dt.date.fromisoformat(day), float(f), float(t)).with_id()
        for ticker, events in DEFAULT_SPLITS.items()
        for day, f, t in events
    )


def _multiplier(dates: np.ndarray, steps: tuple[tuple[dt.date, float], ...]) -> np.ndarray:
    """Per bar, the product of the multipliers of every step dated after the bar."""
    out = np.ones(len(dates))
    for day, factor in steps:
        out[dates < np.datetime64(day, "D")] *= factor
    return out


@functools.lru_cache(maxsize=256)
def scaled_series(ticker: str, steps: tuple[tuple[dt.date, float], ...]) -> synthetic.Series:
    """The ticker's rendered series with prices x the steps' multipliers (volume / them)."""
    crypto = synthetic.is_crypto_ticker(ticker)
    grid = synthetic.market_grid(crypto)
    columns = dict(synthetic._simulate(ticker))
    price = _multiplier(grid.dates, steps)
    for key in synthetic.PRICE_KEYS:
        columns[key] = np.maximum(np.rint(columns[key] * price).astype(np.int64), 1)
    columns["v"] = np.maximum(np.rint(columns["v"] / price).astype(np.int64), synthetic.VOLUME_SCALE)
    data, offsets = synthetic._render(columns, grid.t_ascii)
    return synthetic.Series(ticker, crypto, grid, data, offsets)


def price_steps(splits: tuple[SplitListing, ...], ticker: str, adjusted: bool) -> tuple[tuple[dt.date, float], ...]:
    """(date, multiplier of the bars before it) of one ticker's served prices (see the module docstring)."""
    steps: dict[dt.date, float] = {}
    for split in splits:
        if split.ticker != ticker:
            continue
        if split.actual:
            steps[split.execution_date] = steps.get(split.execution_date, 1.0) * split.split_to / split.split_from
        if adjusted and split.listed:
            steps[split.execution_date] = steps.get(split.execution_date, 1.0) * split.split_from / split.split_to
    return tuple(sorted((d, f) for d, f in steps.items() if not np.isclose(f, 1.0, rtol=1e-12)))


def as_traded_bars(ticker: str, start: dt.date, end: dt.date, splits: tuple[SplitListing, ...] | None = None):
    """`synthetic.synthetic_bars` as traded (the default splits unless `splits` is given), of the price
    series the default sandbox serves for `ticker` (FB's is META's: one security)."""
    from market_pipeline.sandbox.reference import Lifecycle

    frame = synthetic.synthetic_bars(Lifecycle().series_ticker(ticker), start, end)
    steps = price_steps(default_splits() if splits is None else splits, ticker, adjusted=False)
    if steps:
        multiplier = _multiplier(frame["date"].to_numpy().astype("datetime64[D]"), steps)
        for key in synthetic.PRICE_KEYS:
            frame[key] = np.maximum(np.rint(frame[key] * synthetic.PRICE_SCALE * multiplier), 1) / synthetic.PRICE_SCALE
        frame["v"] = np.maximum(np.rint(frame["v"] * synthetic.VOLUME_SCALE / multiplier), synthetic.VOLUME_SCALE) / synthetic.VOLUME_SCALE
    return frame


@functools.lru_cache(maxsize=64)
def default_dividends(ticker: str) -> tuple[DividendListing, ...]:
    """Quarterly dividends of a dividend payer: ex-dates on the first session on or after the 10th of
    Feb, May, Aug and Nov; cash = the yield x the as-traded close of the session before, in cents."""
    share = DEFAULT_DIVIDEND_YIELDS.get(ticker)
    if share is None:
        return ()
    grid = synthetic.market_grid(False)
    closes = as_traded_bars(ticker, synthetic.EPOCH, synthetic.GRID_END)
    dates = grid.dates
    out = []
    for year in range(DIVIDEND_START.year, synthetic.GRID_END.year + 1):
        for month in (2, 5, 8, 11):
            i = int(np.searchsorted(dates, np.datetime64(dt.date(year, month, 10), "D")))
            if i <= 0 or i >= len(dates):
                continue
            cash = max(round(float(closes["c"].iloc[i - 1]) * share, 2), 0.01)
            out.append(DividendListing(ticker, dates[i].astype(object), cash).with_id())
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Rows of the list endpoints


def split_row_v1(split: SplitListing, cumulative: float) -> dict:
    return {
        "id": split.id,
        "ticker": split.ticker,
        "execution_date": split.execution_date.isoformat(),
        "split_from": _plain(split.split_from),
        "split_to": _plain(split.split_to),
        "adjustment_type": "forward_split" if split.split_to > split.split_from else "reverse_split",
        "historical_adjustment_factor": round(cumulative, 10),
    }


def split_row_v3(split: SplitListing) -> dict:
    return {
        "execution_date": split.execution_date.isoformat(),
        "id": split.id,
        "split_from": _plain(split.split_from),
        "split_to": _plain(split.split_to),
        "ticker": split.ticker,
    }


def _dividend_dates(d: DividendListing) -> dict[str, str]:
    ex = d.ex_dividend_date
    return {
        "declaration_date": (ex - dt.timedelta(days=28)).isoformat(),
        "record_date": (ex + dt.timedelta(days=1)).isoformat(),
        "pay_date": (ex + dt.timedelta(days=21)).isoformat(),
    }


def dividend_row_v1(d: DividendListing, split_factor_after: float) -> dict:
    dates = _dividend_dates(d)
    return {
        "id": d.id,
        "ticker": d.ticker,
        "ex_dividend_date": d.ex_dividend_date.isoformat(),
        "declaration_date": dates["declaration_date"],
        "record_date": dates["record_date"],
        "pay_date": dates["pay_date"],
        "cash_amount": d.cash_amount,
        "currency": "USD",
        "split_adjusted_cash_amount": round(d.cash_amount * split_factor_after, 6),
        "distribution_type": "recurring",
        "frequency": d.frequency,
        "historical_adjustment_factor": None,
    }


def dividend_row_v3(d: DividendListing) -> dict:
    dates = _dividend_dates(d)
    return {
        "cash_amount": d.cash_amount,
        "currency": "USD",
        "declaration_date": dates["declaration_date"],
        "dividend_type": "CD",
        "ex_dividend_date": d.ex_dividend_date.isoformat(),
        "frequency": d.frequency,
        "id": d.id,
        "pay_date": dates["pay_date"],
        "record_date": dates["record_date"],
        "ticker": d.ticker,
    }


def _plain(value: float):
    return int(value) if float(value).is_integer() else value


def cumulative_split_factors(splits: list[SplitListing]) -> dict[str, float]:
    """Per listed split id, the product of split_from/split_to of it and every later listed split of its ticker."""
    out = {}
    by_ticker: dict[str, list[SplitListing]] = {}
    for s in splits:
        by_ticker.setdefault(s.ticker, []).append(s)
    for events in by_ticker.values():
        running = 1.0
        for s in sorted(events, key=lambda s: s.execution_date, reverse=True):
            running *= s.split_from / s.split_to
            out[s.id] = running
    return out


# --------------------------------------------------------------------------------------------
# The list endpoints: filters, order, pagination

_COMPARATORS = {"": "__eq__", "gte": "__ge__", "gt": "__gt__", "lte": "__le__", "lt": "__lt__"}


class ListRequestError(ValueError):
    """A 400 with Polygon's `error` text."""


@dataclasses.dataclass(frozen=True)
class Book:
    """The corporate actions the sandbox knows (replaced as a whole on change)."""

    splits: tuple[SplitListing, ...] = dataclasses.field(default_factory=default_splits)
    extra_dividends: tuple[DividendListing, ...] = ()
    withdrawn_dividends: frozenset[str] = frozenset()
    corrected_dividends: tuple[tuple[str, float], ...] = ()  # (id, cash amount listed now)

    def dividends(self, tickers) -> list[DividendListing]:
        out = [d for t in sorted(tickers) for d in default_dividends(t) if d.id not in self.withdrawn_dividends]
        out += [d for d in self.extra_dividends if d.ticker in tickers and d.listed]
        corrected = dict(self.corrected_dividends)
        return [dataclasses.replace(d, cash_amount=corrected[d.id]) if d.id in corrected else d for d in out]

    def dividend_tickers(self) -> set[str]:
        return set(DEFAULT_DIVIDEND_YIELDS) | {d.ticker for d in self.extra_dividends}


def list_body(kind: str, version: str, params: dict[str, str], book: Book, today: dt.date) -> tuple[list[dict], dict | None]:
    """(rows of this page, cursor parameters of the next page or None) of a list request.

    kind: "splits" or "dividends"; version: "v1" or "v3". `params` are the query (or the decoded
    cursor). Events dated more than LISTED_AHEAD_DAYS after `today` are not declared yet.
    """
    field = "execution_date" if kind == "splits" else "ex_dividend_date"
    default_limit, max_limit = (V1_DEFAULT_LIMIT, V1_MAX_LIMIT) if version == "v1" else (V3_DEFAULT_LIMIT, V3_MAX_LIMIT)
    try:
        limit = min(max(int(params.get("limit", default_limit)), 1), max_limit)
        offset = max(int(params.get("offset", 0)), 0)
    except ValueError:
        raise ListRequestError("Could not parse the query parameter: 'limit'") from None
    tickers = None
    if params.get("ticker"):
        tickers = {params["ticker"]}
    if params.get("ticker.any_of"):
        tickers = {t for t in params["ticker.any_of"].split(",") if t}
    conditions = []
    for suffix, method in _COMPARATORS.items():
        key = f"{field}.{suffix}" if suffix else field
        if key in params:
            try:
                conditions.append((method, dt.date.fromisoformat(params[key])))
            except ValueError:
                raise ListRequestError(f"Could not parse the query parameter: '{key}'. Use YYYY-MM-DD") from None
    horizon = today + dt.timedelta(days=LISTED_AHEAD_DAYS)
    if kind == "splits":
        events = [s for s in book.splits if s.listed and (tickers is None or s.ticker in tickers)]
        cumulative = cumulative_split_factors(events)
    else:
        universe = book.dividend_tickers()
        events = book.dividends(universe if tickers is None else universe & tickers)
        split_steps = {t: price_steps(book.splits, t, adjusted=False) for t in {e.ticker for e in events}}
    events = [
        e for e in events
        if getattr(e, field) <= horizon and all(getattr(getattr(e, field), m)(v) for m, v in conditions)
    ]
    sort = params.get("sort", f"{field}.desc" if version == "v3" else "ticker")
    order, _, direction = sort.partition(".")
    if order not in (field, "ticker"):
        raise ListRequestError(f"Could not parse the query parameter: 'sort'. Use {field} or ticker")
    key = (lambda e: (getattr(e, field), e.ticker, e.id)) if order == field else (lambda e: (e.ticker, getattr(e, field), e.id))
    events.sort(key=key, reverse=direction == "desc")
    page = events[offset : offset + limit]
    if kind == "splits":
        rows = [split_row_v1(s, cumulative[s.id]) if version == "v1" else split_row_v3(s) for s in page]
    else:
        rows = []
        for d in page:
            if version == "v3":
                rows.append(dividend_row_v3(d))
                continue
            after = float(np.prod([1 / f for day, f in split_steps[d.ticker] if day > d.ex_dividend_date] or [1.0]))
            rows.append(dividend_row_v1(d, after))
    following = None
    if offset + limit < len(events):
        following = {k: v for k, v in params.items() if k not in ("cursor", "offset", "apiKey")}
        following.update(limit=str(limit), offset=str(offset + limit))
    return rows, following
