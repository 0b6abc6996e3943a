"""Bar validation: hard rules that decide a symbol's validation rate, and soft signals that are only reported.

Everything is vectorised over the frame's columns; a bar is one row. The rules are deliberate about
NaN (every comparison with NaN is False): a bar whose four prices are not all finite and positive
fails `prices_finite_positive` only, because the price-relation rules (`high_ge_open_close`,
`low_le_open_close`, `high_ge_low`, `vwap_within_range`) are judged only on bars with valid prices.
A null date fails `date_is_session` only. Soft signals compare closes in date order (the frame is
sorted internally) and skip bars whose close is not finite and positive.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from market_pipeline import calendars

HARD_RULES = (
    "prices_finite_positive",
    "high_ge_open_close",
    "low_le_open_close",
    "high_ge_low",
    "volume_finite_non_negative",
    "date_is_session",
    "date_not_future",
    "vwap_within_range",
)
SOFT_SIGNALS = ("large_move", "stale_close", "zero_volume")


@dataclass(frozen=True)
class ValidationThresholds:
    """Knobs of `validate_bars`."""

    min_rate: float = 0.99  # the check fails when the rate is below this
    error_below: float = 0.95  # a failing check is WARN at or above this rate, ERROR below it
    large_move: float = 0.5  # |close / previous close - 1| beyond this is a `large_move` signal
    stale_sessions: int = 5  # this many consecutive bars with one close (and volume > 0) are stale
    vwap_tolerance: float = 0.005  # relative tolerance around [low, high] for the vwap
    max_examples: int = 5  # offending dates listed per rule or signal


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of `validate_bars` for one symbol's bars.

    `failures` counts bars per hard rule (a bar may fail several); `soft` counts bars per soft
    signal. For `stale_close` the count is the number of bars inside stale runs, not the number of
    runs. Examples are the first offending dates (ISO, in date order) and only list rules or signals
    with at least one bar.
    """

    bars_checked: int
    bars_passed: int
    rate: float | None
    failures: dict[str, int]
    examples: dict[str, list[str]]
    soft: dict[str, int]
    soft_examples: dict[str, list[str]]
    passed: bool
    severity: str

    def as_metadata(self) -> dict:
        """A plain JSON-able dict (for Dagster metadata and the CLI)."""
        return {
            "bars_checked": self.bars_checked,
            "bars_passed": self.bars_passed,
            "validation_rate": self.rate,
            "passed": self.passed,
            "severity": self.severity,
            "failures": dict(self.failures),
            "examples": {rule: list(dates) for rule, dates in self.examples.items()},
            "soft": dict(self.soft),
            "soft_examples": {signal: list(dates) for signal, dates in self.soft_examples.items()},
        }


def validate_bars(
    frame: pd.DataFrame,
    asset_class: str,
    *,
    today: dt.date,
    thresholds: ValidationThresholds = ValidationThresholds(),
    split_dates=(),
    days: np.ndarray | None = None,
) -> ValidationReport:
    """Validate one symbol's bars (columns date, open, high, low, close, volume, optional vwap).

    `today` is the latest date a bar may carry (see `calendars.local_date`); `split_dates` are
    dates on which a large close-to-close move is expected and not signalled; `days`: the frame's
    dates already as datetime64[D] (default: read from its `date` column).
    """
    days = _days(frame) if days is None else days
    order = np.argsort(days, kind="stable")
    days = days[order]
    cols = {name: _float_column(frame, name)[order] for name in ("open", "high", "low", "close", "volume", "vwap")}

    hard = _hard_failures(days, cols, asset_class, today, thresholds.vwap_tolerance)
    soft = _soft_signals(days, cols, thresholds, calendars.to_days(list(split_dates)))

    n = len(days)
    bars_passed = n - int(np.stack(list(hard.values())).any(axis=0).sum())
    rate = bars_passed / n if n else None
    return ValidationReport(
        bars_checked=n,
        bars_passed=bars_passed,
        rate=rate,
        failures={rule: int(mask.sum()) for rule, mask in hard.items()},
        examples=_examples(days, hard, thresholds.max_examples),
        soft={signal: int(mask.sum()) for signal, mask in soft.items()},
        soft_examples=_examples(days, soft, thresholds.max_examples),
        passed=rate is None or rate >= thresholds.min_rate,
        severity="WARN" if rate is None or rate >= thresholds.error_below else "ERROR",
    )


def _days(frame: pd.DataFrame) -> np.ndarray:
    """The bars' dates as datetime64[D] (a frame without columns at all has no bars)."""
    if "date" not in frame.columns and frame.empty:
        return np.empty(0, dtype="datetime64[D]")
    return calendars.to_days(frame["date"])


def _float_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64 with nulls (None, NaN, pd.NA, unparsable) as NaN; all NaN when absent."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    column = frame[name]
    if column.dtype == np.float64:  # what the warehouse reads give: nothing to coerce
        return column.to_numpy()
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _hard_failures(days, cols, asset_class: str, today: dt.date, vwap_tol: float) -> dict[str, np.ndarray]:
    """Per hard rule, a boolean mask of the bars that fail it."""
    o, h, lo, c, vol, vwap = (cols[k] for k in ("open", "high", "low", "close", "volume", "vwap"))
    prices = np.stack([o, h, lo, c])
    with np.errstate(invalid="ignore"):
        valid = (np.isfinite(prices) & (prices > 0)).all(axis=0)
        vwap_present = ~np.isnan(vwap)
        vwap_in_range = (vwap >= lo * (1 - vwap_tol)) & (vwap <= h * (1 + vwap_tol))
        return {
            "prices_finite_positive": ~valid,
            "high_ge_open_close": valid & ~(h >= np.maximum(o, c)),
            "low_le_open_close": valid & ~(lo <= np.minimum(o, c)),
            "high_ge_low": valid & ~(h >= lo),
            "volume_finite_non_negative": ~(np.isfinite(vol) & (vol >= 0)),
            "date_is_session": ~calendars.is_session_day(asset_class, days),
            "date_not_future": days > np.datetime64(today, "D"),
            "vwap_within_range": valid & vwap_present & ~vwap_in_range,
        }


def _soft_signals(days, cols, thresholds: ValidationThresholds, split_days: np.ndarray) -> dict[str, np.ndarray]:
    """Per soft signal, a boolean mask of the bars that raise it."""
    close, vol = cols["close"], cols["volume"]
    with np.errstate(invalid="ignore", divide="ignore"):
        good_close = np.isfinite(close) & (close > 0)
        return {
            "large_move": _large_moves(close, good_close, thresholds.large_move) & ~np.isin(days, split_days),
            "stale_close": _stale_bars(close, good_close & (vol > 0), thresholds.stale_sessions),
            "zero_volume": vol == 0,
        }


def _large_moves(close: np.ndarray, good: np.ndarray, limit: float) -> np.ndarray:
    """Bars whose close moved more than `limit` from the previous good close (bad closes are skipped)."""
    n = len(close)
    # the index of the last good close at or before each bar, then shifted by one: before each bar
    last_good = np.maximum.accumulate(np.where(good, np.arange(n), -1)) if n else np.zeros(0, dtype=int)
    before = np.concatenate(([-1], last_good[:-1])) if n else last_good
    previous = np.where(before >= 0, close[np.maximum(before, 0)], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return good & (np.abs(close / previous - 1) > limit)


def _stale_bars(close: np.ndarray, eligible: np.ndarray, min_run: int) -> np.ndarray:
    """Bars inside runs of at least `min_run` consecutive eligible bars sharing one close."""
    n = len(close)
    if n == 0:
        return np.zeros(0, bool)
    continues = np.zeros(n, bool)
    continues[1:] = eligible[1:] & eligible[:-1] & (close[1:] == close[:-1])
    run_id = np.cumsum(~continues) - 1
    run_length = np.bincount(run_id)
    return eligible & (run_length[run_id] >= min_run)


def _examples(days: np.ndarray, masks: dict[str, np.ndarray], limit: int) -> dict[str, list[str]]:
    """The first `limit` dates (ISO) of each mask that has any bar set."""
    return {name: [_iso(day) for day in days[mask][:limit]] for name, mask in masks.items() if mask.any()}


def _iso(day: np.datetime64) -> str | None:
    """A datetime64[D] as 'YYYY-MM-DD' (None for NaT)."""
    return None if np.isnat(day) else str(day)
