"""Daily bars: parsing Polygon aggregate rows into a frame keyed by session date. Pure functions.

A bar frame has the columns of BAR_COLUMNS: `date` (datetime64[ns] at midnight, the session date),
`open`, `high`, `low`, `close`, `volume` (float), `vwap` (float, NaN when absent) and
`transactions` (nullable Int64). It is sorted by date with one row per date.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import itemgetter

import numpy as np
import pandas as pd

from market_pipeline.calendars import session_dates_from_ms
from market_pipeline.polygon.tickers import symbol_from_polygon_ticker

BAR_COLUMNS = ("date", "open", "high", "low", "close", "volume", "vwap", "transactions")
_WIRE = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap", "n": "transactions"}
_OPTIONAL = frozenset({"vw", "n"})  # Polygon leaves them out of some bars


class BarParseError(ValueError):
    """A payload that does not hold daily bars in Polygon's format."""


def empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    frame["date"] = pd.Series(dtype="datetime64[ns]")
    frame["transactions"] = pd.Series(dtype="Int64")
    return frame


def _frame_from_rows(rows: list[Mapping], asset_class: str, extra: Iterable[str] = ()) -> pd.DataFrame:
    frame = _frame_from_numbers(rows, asset_class, extra)
    if frame is None:
        frame = _frame_from_any(rows, asset_class, extra)
    incomplete = frame[["open", "high", "low", "close", "volume"]].isna().any(axis=1)
    if incomplete.any():
        day = frame.loc[incomplete, "date"].iloc[0].date()
        raise BarParseError(f"the bar of {day} lacks a price or volume ({int(incomplete.sum())} such bar(s))")
    frame["transactions"] = frame["transactions"].round().astype("Int64")
    return frame


def _frame_from_numbers(rows: list[Mapping], asset_class: str, extra: Iterable[str]) -> pd.DataFrame | None:
    """The fast path, one column at a time straight from the dicts, for rows whose required fields are
    all present and numeric (what Polygon sends). None for anything else: `_frame_from_any` then
    decides, with the same result as before for every input."""
    n = len(rows)
    try:
        t_ms = np.fromiter(map(itemgetter("t"), rows), np.int64, n)
        columns = {"date": pd.DatetimeIndex(session_dates_from_ms(t_ms, asset_class))}
        for wire, name in _WIRE.items():
            if wire in _OPTIONAL:
                columns[name] = np.array([row.get(wire) for row in rows], dtype=np.float64)
            else:
                columns[name] = np.fromiter(map(itemgetter(wire), rows), np.float64, n)
        for column in extra:
            values = np.empty(n, dtype=object)
            values[:] = [row[column] for row in rows]
            columns[column] = values
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        return None
    return pd.DataFrame(columns)


def _frame_from_any(rows: list[Mapping], asset_class: str, extra: Iterable[str] = ()) -> pd.DataFrame:
    """The general path: any mix of missing fields and non-numeric values (coerced to NaN)."""
    raw = pd.DataFrame.from_records(rows)
    missing = [k for k in ("t", "o", "h", "l", "c", "v") if k not in raw.columns]
    if missing:
        raise BarParseError(f"bars lack the field(s) {', '.join(missing)}")
    out = pd.DataFrame(
        {
            "date": pd.DatetimeIndex(session_dates_from_ms(raw["t"].to_numpy("int64"), asset_class)),
        }
    )
    for wire, name in _WIRE.items():
        if wire in raw.columns:
            out[name] = pd.to_numeric(raw[wire], errors="coerce").to_numpy("float64")
        else:
            out[name] = np.nan
    for column in extra:
        out[column] = raw[column].to_numpy()
    return out


def parse_aggregate_results(results: list[Mapping] | None, asset_class: str) -> pd.DataFrame:
    """Bars of one ticker from the range endpoint's `results` (None or [] -> an empty frame)."""
    if not results:
        return empty_bars()
    frame = _frame_from_rows(results, asset_class)
    days = frame["date"].to_numpy()
    if len(days) > 1 and not (days[1:] > days[:-1]).all():  # Polygon sends ascending unique dates
        frame = frame.drop_duplicates("date", keep="last").sort_values("date", kind="stable").reset_index(drop=True)
    return frame[list(BAR_COLUMNS)]


def parse_grouped_results(results: list[Mapping] | None, asset_class: str) -> pd.DataFrame:
    """Bars of many tickers from a grouped-daily `results`, with a `symbol` column (X: stripped)."""
    if not results:
        frame = empty_bars()
        frame.insert(0, "symbol", pd.Series(dtype="object"))
        return frame
    frame = _frame_from_rows(results, asset_class, extra=("T",))
    frame.insert(0, "symbol", [symbol_from_polygon_ticker(str(t)) for t in frame.pop("T")])
    frame = frame.drop_duplicates(["symbol", "date"], keep="last")
    return frame.reset_index(drop=True)[["symbol", *BAR_COLUMNS]]
