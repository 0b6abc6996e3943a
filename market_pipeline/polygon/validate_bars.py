"""Splitting Polygon's wire bars into usable bars and bars set aside with a reason. Pure.

One bad bar never discards a whole answer: each unusable bar is set aside (the caller stores it in
`ohlcv_quarantine` with its raw values) and the rest are parsed and stored. A bar is unusable when:

- it is not a JSON object, or lacks one of `o h l c v t`;
- a value is not a finite number (NaN, Infinity, -Infinity: Python's json reads all three), in
  `o h l c v` or in the optional `vw`, `n`;
- its `t` is not the session boundary of its market and endpoint (POLYGON_API.md): range bars at
  00:00 America/New_York for stocks and ETFs, 00:00 UTC for crypto; grouped-daily bars at 16:00
  America/New_York (stocks) or 23:59:59.999 UTC (crypto) — e.g. a stock bar at 00:00 UTC would
  otherwise land on the previous New York date;
- its date is outside `span`, the dates the caller asked for (and the symbol's listing and
  delisting dates, when known): reason `outside the requested range` (a 1970 bar in a 2024 answer,
  a 2100 bar, a grouped-daily bar of another date);
- its date is after `last_session`, the last completed session the caller expects (a bar of a
  session still trading, or of the future);
- it shares its session (and, in a grouped-daily answer, its ticker) with another usable bar of the
  answer and their values differ: every one of them is set aside with the reason `conflicting
  duplicates` (the session counts as missing until a later answer gives one bar); identical copies
  are kept once.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter, methodcaller

import numpy as np
import pandas as pd

from market_pipeline import calendars

REQUIRED = ("o", "h", "l", "c", "v", "t")
NUMBERS = ("o", "h", "l", "c", "v", "vw", "n")
NAMES = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap", "n": "transactions", "t": "t"}
DAY_MS = 86_400_000
OUTSIDE_RANGE = "outside the requested range"
CONFLICTING = "conflicting duplicates"
_GROUPED_CRYPTO_OFFSET = DAY_MS - 1  # 23:59:59.999 UTC
_GROUPED_STOCK_HOUR = 16  # the close, New York time


@dataclass(frozen=True)
class SetAside:
    """A wire bar that was not stored: its date when `t` gives one, its raw JSON and why."""

    date: dt.date | None
    raw: str
    reason: str
    ticker: str | None = None  # the grouped-daily row's `T`


def raw_json(row) -> str:
    """The row as JSON text, non-finite numbers written as Polygon's broken server sent them."""
    try:
        return json.dumps(row, separators=(",", ":"), sort_keys=True, allow_nan=True, default=str)
    except (TypeError, ValueError):
        return repr(row)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _date_of(t: int, asset_class: str) -> dt.date:
    zone = calendars.UTC if calendars.is_crypto(asset_class) else calendars.NEW_YORK
    return dt.datetime.fromtimestamp(t / 1000, zone).date()


def expected_t(day: dt.date, asset_class: str, endpoint: str) -> int:
    """The `t` Polygon gives the bar of `day` on `endpoint` ("range" or "grouped")."""
    if endpoint == "grouped":
        if calendars.is_crypto(asset_class):
            return calendars.ms_at_local_midnight(day, "crypto") + _GROUPED_CRYPTO_OFFSET
        close = dt.datetime(day.year, day.month, day.day, _GROUPED_STOCK_HOUR, tzinfo=calendars.NEW_YORK)
        return int(close.timestamp() * 1000)
    return calendars.ms_at_local_midnight(day, asset_class)


@functools.lru_cache(maxsize=4096)
def _early_close_ms(day: dt.date) -> int | None:
    """The XNYS close of `day` when it is an early close (13:00), else None."""
    cal = calendars.xnys()
    session = pd.Timestamp(day)
    if not cal.is_session(session):
        return None
    close = cal.session_close(session)
    ms = int(close.value // 1_000_000)
    return ms if ms != expected_t(day, "stock", "grouped") else None


def _boundary(t: int, day: dt.date, asset_class: str, endpoint: str) -> bool:
    if t == expected_t(day, asset_class, endpoint):
        return True
    # grouped daily stamps a stock's bar at the close: accept an early close's time as well
    return endpoint == "grouped" and not calendars.is_crypto(asset_class) and t == _early_close_ms(day)


def why_unusable(
    row, asset_class: str, last_session: dt.date | None, endpoint: str = "range", span: tuple[dt.date, dt.date] | None = None,
) -> tuple[str | None, dt.date | None]:
    """(reason, date): reason None when the bar is usable; date when `t` gives one. `span`: the first
    and last date asked for."""
    if not isinstance(row, Mapping):
        return "not a bar object", None
    missing = [NAMES[k] for k in REQUIRED if row.get(k) is None]
    t = row.get("t")
    day = None
    if _is_number(t) and math.isfinite(t) and float(t).is_integer() and abs(t) < 1e15:
        day = _date_of(int(t), asset_class)
    if missing:
        return f"missing {', '.join(missing)}", day
    bad = [NAMES[k] for k in NUMBERS if k in row and row[k] is not None and not (_is_number(row[k]) and math.isfinite(row[k]))]
    if bad:
        values = ", ".join(f"{NAMES[k]}={row[k]!r}" for k in NUMBERS if NAMES[k] in bad)
        return f"non-finite or non-numeric {', '.join(bad)} ({values})", day
    if day is None:
        return f"t={t!r} is not a Unix millisecond timestamp", None
    if not _boundary(int(t), day, asset_class, endpoint):
        zone = "00:00 UTC" if calendars.is_crypto(asset_class) else "00:00 America/New_York"
        if endpoint == "grouped":
            zone = "23:59:59.999 UTC" if calendars.is_crypto(asset_class) else "16:00 America/New_York"
        when = dt.datetime.fromtimestamp(int(t) / 1000, calendars.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return f"t={int(t)} ({when}) is not a session boundary of its market ({zone} for {asset_class} {endpoint} bars)", day
    if span is not None and not span[0] <= day <= span[1]:
        return OUTSIDE_RANGE, day
    if last_session is not None and day > last_session:
        return f"dated {day}, after the last completed session {last_session}", day
    return None, day


_NUMBER_TYPES = frozenset({int, float})  # exactly: a bool (an int subclass) or a string is not a price
_OPTIONAL_TYPES = _NUMBER_TYPES | {type(None)}


def _certain_columns(
    rows: list, asset_class: str, last_session: dt.date | None, endpoint: str, span: tuple[dt.date, dt.date] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Vectorised: every wire field as a float column (NaN for an absent `vw`/`n`) and the session
    dates, when every row is certainly usable, inside `span` and of its own session (what Polygon
    normally sends); None means "look at each row" (`why_unusable`), never that a row is unusable.
    Each field is read once."""
    if not rows:
        return None
    try:
        numbers = {}
        for key in REQUIRED:
            values = list(map(itemgetter(key), rows))
            if not set(map(type, values)) <= _NUMBER_TYPES:
                return None
            numbers[key] = np.array(values, dtype=np.float64)
        for key in ("vw", "n"):
            values = list(map(methodcaller("get", key), rows))
            if not set(map(type, values)) <= _OPTIONAL_TYPES:
                return None
            column = np.array(values, dtype=np.float64)  # None -> NaN
            if np.isinf(column).any() or int(np.isnan(column).sum()) != values.count(None):
                return None
            numbers[key] = column
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        return None
    if not all(np.isfinite(numbers[k]).all() for k in REQUIRED):
        return None
    t = numbers["t"]
    if not (np.abs(t) < 1e15).all() or not (t == np.floor(t)).all():
        return None
    t_ms = t.astype(np.int64)
    days = calendars.session_dates_from_ms(t_ms, asset_class)
    if last_session is not None and days.max() > np.datetime64(last_session, "D"):
        return None
    if span is not None and (days.min() < np.datetime64(span[0], "D") or days.max() > np.datetime64(span[1], "D")):
        return None
    if endpoint == "range" and len(days) > 1 and not (days[1:] > days[:-1]).all():
        return None  # out of order, or a session twice: each row is looked at
    if not (t_ms == _expected_t_vector(days, asset_class, endpoint)).all():
        return None
    return numbers, days


def all_usable(
    rows: list, asset_class: str, last_session: dt.date | None, endpoint: str = "range", span: tuple[dt.date, dt.date] | None = None,
) -> bool:
    """True when every row is certainly usable; False means "look at each row" (`why_unusable`)."""
    return _certain_columns(rows, asset_class, last_session, endpoint, span) is not None


def usable_range_frame(
    rows: list, asset_class: str, last_session: dt.date | None, span: tuple[dt.date, dt.date] | None = None,
) -> pd.DataFrame | None:
    """The bar frame of a range answer (what `parse_aggregate_results` makes of it) when every row is
    certainly usable, in ascending unique sessions, from the columns its checks read; None for
    anything else (a bool, a string, a missing or non-finite value, a misdated, late or out-of-range
    bar, a session twice): the caller then runs `split_bars` and the parser, which decide row by row."""
    certain = _certain_columns(rows, asset_class, last_session, "range", span)
    if certain is None:
        return None
    numbers, days = certain
    frame = pd.DataFrame({
        "date": pd.DatetimeIndex(days), "open": numbers["o"], "high": numbers["h"], "low": numbers["l"],
        "close": numbers["c"], "volume": numbers["v"], "vwap": numbers["vw"], "transactions": numbers["n"],
    })
    frame["transactions"] = frame["transactions"].round().astype("Int64")
    return frame


def _expected_t_vector(days: np.ndarray, asset_class: str, endpoint: str) -> np.ndarray:
    if calendars.is_crypto(asset_class):
        midnight = days.astype("datetime64[ms]").astype(np.int64)
        return midnight + (_GROUPED_CRYPTO_OFFSET if endpoint == "grouped" else 0)
    local = pd.DatetimeIndex(days.astype("datetime64[ns]"))
    if endpoint == "grouped":
        local = local + pd.Timedelta(hours=_GROUPED_STOCK_HOUR)
    return local.tz_localize(calendars.NEW_YORK).as_unit("ms").asi8.astype(np.int64)


def split_bars(
    rows: Iterable | None, asset_class: str, last_session: dt.date | None, endpoint: str = "range",
    span: tuple[dt.date, dt.date] | None = None,
) -> tuple[list[Mapping], list[SetAside]]:
    """(usable rows, set-aside bars) of a `results` list, in wire order (conflicting copies last); a
    session given twice is kept once when its copies are identical, else every copy is set aside
    (`CONFLICTING`)."""
    rows = list(rows or ())
    if rows and all_usable(rows, asset_class, last_session, endpoint, span):
        if endpoint != "grouped" or _distinct_tickers(rows):  # one session each (grouped: one ticker each)
            return rows, []
    usable, aside, days = [], [], []
    for row in rows:
        reason, day = why_unusable(row, asset_class, last_session, endpoint, span)
        if reason is None:
            usable.append(row)
            days.append(day)
        else:
            aside.append(SetAside(day, raw_json(row), reason, _ticker(row)))
    return _unique_sessions(usable, days, aside, endpoint)


def _distinct_tickers(rows: list[Mapping]) -> bool:
    """Whether no ticker comes twice in grouped rows of one session (the fast path's rows all are)."""
    tickers = [row.get("T") for row in rows]
    return len(set(tickers)) == len(tickers)


def _ticker(row) -> str | None:
    ticker = row.get("T") if isinstance(row, Mapping) else None
    return str(ticker) if ticker is not None else None


def _values(row: Mapping) -> tuple:
    return tuple(row.get(key) for key in (*NUMBERS, "t"))


def _unique_sessions(usable: list, days: list, aside: list, endpoint: str) -> tuple[list[Mapping], list[SetAside]]:
    """The usable rows with one row per session (per ticker and session, grouped daily)."""
    keys = [(_ticker(row) if endpoint == "grouped" else None, day) for row, day in zip(usable, days)]
    counts: dict = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    if all(n == 1 for n in counts.values()):
        return usable, aside
    conflicting = {
        key for key in counts
        if counts[key] > 1 and len({_values(row) for row, k in zip(usable, keys) if k == key}) > 1
    }
    kept, seen = [], set()
    for row, key in zip(usable, keys):
        if key in conflicting:
            aside.append(SetAside(key[1], raw_json(row), CONFLICTING, key[0]))
        elif key not in seen:  # identical copies: the first one
            seen.add(key)
            kept.append(row)
    return kept, aside
