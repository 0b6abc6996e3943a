"""`read_bars`: stored bars of one or more symbols, as traded, split-adjusted or total-return.

The numbers are those of the views `ohlcv_daily_adjusted` / `ohlcv_daily_total_return` (the same
`adjustment_factors` ranges applied the same way), computed without the view's join: each symbol's
bars come through the bar store's fast read path (a binary COPY on PostgreSQL) and its few factor
ranges are applied with one `searchsorted` per symbol, so an adjusted read costs about what an
unadjusted one does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.warehouse.schema import adjustment_factors
from market_pipeline.warehouse.store import BarStore

ADJUSTMENTS = ("none", "splits", "total_return")
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


def _factor_table(conn: sa.Connection, symbols: list[str]) -> dict[str, pd.DataFrame]:
    out: dict[str, list] = {}
    for i in range(0, len(symbols), 500):
        query = (
            sa.select(adjustment_factors)
            .where(adjustment_factors.c.symbol.in_(symbols[i : i + 500]))
            .order_by(adjustment_factors.c.symbol, adjustment_factors.c.valid_from)
        )
        for row in conn.execute(query):
            out.setdefault(row.symbol, []).append((row.valid_to, row.split_factor, row.total_return_factor))
    return {
        s: pd.DataFrame(rows, columns=["valid_to", "split_factor", "total_return_factor"]) for s, rows in out.items()
    }


def _apply(frame: pd.DataFrame, ranges: pd.DataFrame | None, adjustment: str) -> pd.DataFrame:
    if adjustment == "none" or ranges is None or ranges.empty or frame.empty:
        return frame
    days = np.asarray(frame["date"].to_numpy(), dtype="datetime64[D]")
    upper = np.array([np.datetime64(d, "D") for d in ranges["valid_to"]])
    k = np.searchsorted(upper, days, side="right")  # the range with valid_from <= date < valid_to
    inside = k < len(upper)
    split = np.ones(len(days))
    split[inside] = ranges["split_factor"].to_numpy()[k[inside]]
    if adjustment == "total_return":
        price = np.ones(len(days))
        price[inside] = ranges["total_return_factor"].to_numpy()[k[inside]]
    else:
        price = split
    frame = frame.copy()
    for column in _PRICES:
        frame[column] = frame[column].to_numpy(dtype="float64") * price
    frame["volume"] = frame["volume"].to_numpy(dtype="float64") / split
    return frame


def read_bars(
    symbols: str | Iterable[str],
    start=None,
    end=None,
    adjustment: str = "none",
    *,
    url: str | None = None,
) -> pd.DataFrame:
    """Bars of `symbols` from `start` to `end` (inclusive, dates or ISO strings), indexed by
    (symbol, date); columns open, high, low, close, volume, vwap, transactions.

    adjustment: "none" (as traded, `ohlcv_daily`), "splits" (`ohlcv_daily_adjusted`) or
    "total_return" (`ohlcv_daily_total_return`).
    """
    if adjustment not in ADJUSTMENTS:
        raise ReadError(f"unknown adjustment {adjustment!r}: use one of {', '.join(ADJUSTMENTS)}")
    names = [symbols] if isinstance(symbols, str) else list(symbols)
    names = list(dict.fromkeys(s.strip().upper() for s in names))
    if not names:
        raise ReadError("no symbol given: pass at least one, such as 'AAPL'")
    start_date, end_date = _date(start, "start"), _date(end, "end")
    if start_date and end_date and end_date < start_date:
        raise ReadError(f"end {end_date} is before start {start_date}")
    store = BarStore(url)
    frames = []
    with store.engine.connect() as conn:
        factors = _factor_table(conn, names) if adjustment != "none" else {}
        for symbol in names:
            frame = store._read(conn, symbol, start_date, end_date)
            frame = _apply(frame, factors.get(symbol), adjustment)
            frame.insert(0, "symbol", symbol)
            frames.append(frame)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["symbol", *BAR_COLUMNS])
    out["transactions"] = out["transactions"].astype("Int64")
    return out.set_index(["symbol", "date"])
