"""`read_bars`: stored bars of one or more symbols, as traded, split-adjusted or total-return.

The numbers are those of the views `ohlcv_daily_adjusted` / `ohlcv_daily_total_return` (the same
`adjustment_factors` ranges applied the same way), computed without the view's join: the bars come
as columns through the column blocks (warehouse.columns), the factors in the same snapshot, and each
symbol's few factor ranges are applied in place with one `searchsorted`, so an adjusted read costs
about what an unadjusted one does.

With `as_of`, the bars and factors as the warehouse held them at that instant
(warehouse.point_in_time).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import sqlalchemy as sa

from market_pipeline.warehouse import columns
from market_pipeline.warehouse.store import BarStore

ADJUSTMENTS = ("none", "splits", "total_return")
OUTPUTS = ("pandas", "arrow")
_PRICES = ("open", "high", "low", "close", "vwap")


class ReadError(ValueError):
    """Bad arguments to read_bars; the message says what to pass instead."""


def _date(value, name: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ReadError(f"{name} {value!r} is not a date: use YYYY-MM-DD") from None


def _factor_table(conn: sa.Connection, symbols: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """symbol -> (valid_to as datetime64[D], split factors, total-return factors), ordered by date:
    one query per 500 symbols, its rows as DBAPI tuples cut into arrays."""
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    rows: list[tuple] = []
    for i in range(0, len(symbols), 500):
        part = symbols[i : i + 500]
        result = conn.exec_driver_sql(
            "SELECT symbol, valid_to, split_factor, total_return_factor FROM adjustment_factors "
            f"WHERE symbol IN ({', '.join([marker] * len(part))}) ORDER BY symbol, valid_from",
            tuple(part),
        )
        rows += result.cursor.fetchall()
        result.close()
    if not rows:
        return {}
    table = np.array(rows, dtype=object)
    names = table[:, 0]
    upper = np.array([str(v)[:10] for v in table[:, 1]], dtype="datetime64[D]")
    split, total = table[:, 2].astype("float64"), table[:, 3].astype("float64")
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    ends = np.r_[starts[1:], len(names)]
    return {str(names[a]): (upper[a:b], split[a:b], total[a:b]) for a, b in zip(starts.tolist(), ends.tolist())}


def price_factors(ranges: tuple[np.ndarray, np.ndarray, np.ndarray], days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The split and total-return factors of each of a symbol's days (datetime64[D], ascending) from
    its factor ranges (`_factor_table`): the range with valid_from <= date < valid_to, 1 after the last."""
    upper, split_factors, total_factors = ranges
    at = np.searchsorted(upper, days, side="right")  # index len(upper) picks the appended 1.0
    return np.append(split_factors, 1.0)[at], np.append(total_factors, 1.0)[at]


def _apply(data: columns.Columns, factors: dict, adjustment: str) -> None:
    """Multiply the prices (and divide the volume) of freshly read columns in place."""
    if adjustment == "none" or not factors:
        return
    offsets = data.offsets
    for k, symbol in enumerate(data.symbols):
        ranges = factors.get(symbol)
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        if ranges is None or hi == lo:
            continue
        split, total = price_factors(ranges, data.days[lo:hi].astype("datetime64[D]"))
        price = total if adjustment == "total_return" else split
        for column in _PRICES:
            data.values[column][lo:hi] *= price
        data.values["volume"][lo:hi] /= split


def read_bars(
    symbols: str | Iterable[str],
    start=None,
    end=None,
    adjustment: str = "none",
    *,
    url: str | None = None,
    output: str = "pandas",
    as_of=None,
):
    """Bars of `symbols` from `start` to `end` (inclusive, dates or ISO strings), as the warehouse
    holds them at the moment of the call (one snapshot), indexed by (symbol, date); columns open,
    high, low, close, volume, vwap, transactions.

    as_of: an instant (a timezone-aware datetime, or an ISO 8601 string, UTC when it has no offset):
    the bars as the warehouse held them then, with the values they had then, adjusted with the
    splits and dividends known then; a symbol renamed since is found under either name. An instant
    in the future, before the warehouse's history, naive or unparseable raises ReadError.

    adjustment: "none" (as traded, `ohlcv_daily`), "splits" (`ohlcv_daily_adjusted`) or
    "total_return" (`ohlcv_daily_total_return`).
    output: "pandas" (the frame above) or "arrow" (a `pyarrow.Table` with columns symbol, date and
    the same values, in the same order; `polars.from_arrow` takes it without a copy).
    """
    if adjustment not in ADJUSTMENTS:
        raise ReadError(f"unknown adjustment {adjustment!r}: use one of {', '.join(ADJUSTMENTS)}")
    if output not in OUTPUTS:
        raise ReadError(f"unknown output {output!r}: use one of {', '.join(OUTPUTS)}")
    names = [symbols] if isinstance(symbols, str) else list(symbols)
    names = list(dict.fromkeys(s.strip().upper() for s in names))
    if not names:
        raise ReadError("no symbol given: pass at least one, such as 'AAPL'")
    start_date, end_date = _date(start, "start"), _date(end, "end")
    if start_date and end_date and end_date < start_date:
        raise ReadError(f"end {end_date} is before start {start_date}")
    moment = None
    if as_of is not None:
        from market_pipeline.warehouse import point_in_time

        moment = point_in_time.parse_instant(as_of)
    store = BarStore(url)
    with columns.snapshot(store.engine) as conn:
        if moment is not None:
            point_in_time.check_instant(conn, moment)
            data, targets = point_in_time.bars_as_of(conn, names, start_date, end_date, moment)
            whole = start_date is None and end_date is None
            factors = point_in_time.factors_as_of(conn, data, targets, whole, moment) if adjustment != "none" else {}
        else:
            factors = _factor_table(conn, names) if adjustment != "none" else {}
            data = columns.read(conn, columns.OHLCV, names, start_date, end_date)
    _apply(data, factors, adjustment)
    return data.arrow() if output == "arrow" else data.frame()
