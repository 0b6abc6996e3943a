"""Daily bars: parsing Polygon aggregate rows into a frame keyed by session date. Pure functions.

A bar frame has the columns of BAR_COLUMNS: `date` (datetime64[ns] at midnight, the session date),
`open`, `high`, `low`, `close`, `volume` (float), `vwap` (float, NaN when absent) and
`transactions` (nullable Int64). It is sorted by date with one row per date.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from market_pipeline.calendars import session_dates_from_ms
from market_pipeline.symbols import symbol_from_polygon_ticker

BAR_COLUMNS = ("date", "open", "high", "low", "close", "volume", "vwap", "transactions")
_WIRE = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap", "n": "transactions"}


class BarParseError(ValueError):
    """A payload that does not hold daily bars in Polygon's format."""


def empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    frame["date"] = pd.Series(dtype="datetime64[ns]")
    frame["transactions"] = pd.Series(dtype="Int64")
    return frame


def _frame_from_rows(rows: list[Mapping], asset_class: str, extra: Iterable[str] = ()) -> pd.DataFrame:
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
    incomplete = out[["open", "high", "low", "close", "volume"]].isna().any(axis=1)
    if incomplete.any():
        day = out.loc[incomplete, "date"].iloc[0].date()
        raise BarParseError(f"the bar of {day} lacks a price or volume ({int(incomplete.sum())} such bar(s))")
    out["transactions"] = out["transactions"].round().astype("Int64")
    for column in extra:
        out[column] = raw[column].to_numpy()
    return out


def parse_aggregate_results(results: list[Mapping] | None, asset_class: str) -> pd.DataFrame:
    """Bars of one ticker from the range endpoint's `results` (None or [] -> an empty frame)."""
    if not results:
        return empty_bars()
    frame = _frame_from_rows(results, asset_class)
    frame = frame.drop_duplicates("date", keep="last").sort_values("date", kind="stable")
    return frame.reset_index(drop=True)[list(BAR_COLUMNS)]


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
