"""Daily returns of one symbol. Pure.

For consecutive stored bars t-1, t (sessions, not calendar days: a gap in the bars makes one return
span it):

- `total_return` = TR_t / TR_{t-1} - 1, TR the total-return close (split- then dividend-adjusted,
  `read_bars(..., "total_return")`, the `ohlcv_daily_total_return` view): what holding the share and
  reinvesting its cash dividends earned that day;
- `log_return` = ln(TR_t / TR_{t-1});
- `split_adjusted_return` = S_t / S_{t-1} - 1, S the split-adjusted close (`"splits"`,
  `ohlcv_daily_adjusted`): the price move alone, dividends not counted.

Both closes are on today's share basis; a factor common to both bars cancels, so a return changes only
when the factors *between* its two bars change (a split or dividend dated t). A close that is not a
positive number gives no value (NULL) for the returns that use it. The first stored bar has no return.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import pandas as pd

RETURN_COLUMNS = ("total_return", "log_return", "split_adjusted_return")


def daily_returns(dates, total_return_close, split_adjusted_close) -> pd.DataFrame:
    """The returns of consecutive bars (ordered by date): a frame of `date` (datetime64) and
    RETURN_COLUMNS, one row per bar after the first, NaN where a close is not positive."""
    days = dates if isinstance(dates, np.ndarray) and dates.dtype == "datetime64[ns]" else _datetimes(dates)
    tr = np.asarray(total_return_close, dtype="float64")
    split = np.asarray(split_adjusted_close, dtype="float64")
    if not (len(days) == len(tr) == len(split)):
        raise ValueError("dates and closes differ in length")
    if len(days) < 2:
        return pd.DataFrame({"date": days[:0], **{c: np.array([], dtype="float64") for c in RETURN_COLUMNS}})
    with np.errstate(divide="ignore", invalid="ignore"):
        tr_ratio = _ratio(tr)
        split_ratio = _ratio(split)
        log = np.log(tr_ratio)
    return pd.DataFrame(
        {"date": days[1:], "total_return": tr_ratio - 1.0, "log_return": log, "split_adjusted_return": split_ratio - 1.0}
    )


def _datetimes(values) -> np.ndarray:
    return np.asarray(pd.to_datetime(pd.Series(values)).to_numpy(), dtype="datetime64[ns]")


def _ratio(close: np.ndarray) -> np.ndarray:
    """close[t] / close[t-1], NaN unless both are positive finite numbers."""
    good = np.isfinite(close) & (close > 0)
    out = np.full(len(close) - 1, np.nan)
    both = good[1:] & good[:-1]
    out[both] = close[1:][both] / close[:-1][both]
    return out


def outside(total_return: np.ndarray, threshold: float) -> np.ndarray:
    """Which returns move the total-return close by more than a factor of 1 + threshold either way
    (at 0.5: up more than 50%, or down more than a third)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.abs(np.log1p(np.asarray(total_return, dtype="float64")))
    return np.nan_to_num(size, nan=0.0) > np.log1p(threshold)


def unexplained_returns(
    returns: pd.DataFrame, previous_dates, event_dates: Iterable[dt.date], threshold: float
) -> list[dict]:
    """The returns beyond `threshold` (see `outside`) with no recorded event dated after the previous
    bar and on or before the return's date: [{"date", "previous_date", "total_return",
    "split_adjusted_return"}], by date. `previous_dates`: the date of the bar before each return."""
    if returns.empty:
        return []
    big = outside(returns["total_return"].to_numpy(), threshold)
    if not big.any():
        return []
    days = np.asarray(returns["date"].to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]")
    before = _datetimes(previous_dates).astype("datetime64[D]")
    events = np.array(sorted({np.datetime64(d, "D") for d in event_dates if d is not None}), dtype="datetime64[D]")
    out = []
    for i in np.flatnonzero(big).tolist():
        # an event in (previous bar, this bar] explains the move
        k = int(np.searchsorted(events, before[i], side="right"))
        if k < len(events) and events[k] <= days[i]:
            continue
        out.append({
            "date": str(days[i]),
            "previous_date": str(before[i]),
            "total_return": round(float(returns["total_return"].iloc[i]), 6),
            "split_adjusted_return": _rounded(returns["split_adjusted_return"].iloc[i]),
        })
    return out


def _rounded(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 6)
