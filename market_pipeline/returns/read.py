"""`read_returns`: stored daily returns of one or more symbols, as a pandas DataFrame."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pandas as pd

from market_pipeline.warehouse.reader import ReadError

COLUMNS = ("total_return", "log_return", "split_adjusted_return")


def _day(value, name: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ReadError(f"{name} {value!r} is not a date: use YYYY-MM-DD") from None


def read_returns(symbols: str | Iterable[str], start=None, end=None, *, url: str | None = None) -> pd.DataFrame:
    """Daily returns of `symbols` from `start` to `end` (inclusive, dates or ISO strings), indexed by
    (symbol, date); columns total_return (simple, dividends reinvested), log_return and
    split_adjusted_return (the split-adjusted close's move, dividends not counted). A return dated D
    is from the previous stored bar's close to D's. Symbols without stored returns have no rows. As
    of one snapshot, through the column blocks (warehouse.columns)."""
    from market_pipeline.warehouse.returns import ReturnsStore

    names = [symbols] if isinstance(symbols, str) else list(symbols)
    names = list(dict.fromkeys(str(s).strip().upper() for s in names))
    if not names or not all(names):
        raise ReadError("no symbol given: pass at least one, such as 'AAPL'")
    start_date, end_date = _day(start, "start"), _day(end, "end")
    if start_date and end_date and end_date < start_date:
        raise ReadError(f"end {end_date} is before start {start_date}")
    return ReturnsStore(url).read(names, start_date, end_date)
