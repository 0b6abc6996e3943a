"""A symbol's validation and gap reports computed as a fold over its bars in date order, so a daily
refresh can keep what the old bars said and read only the new ones. Pure.

`QualityFold` is the state after some leading part of the bars (every bar dated before `cut`);
`extend_quality(state, chunk, ...)` adds the next bars and `finish_quality(state, ...)` gives the
same `SymbolStats` as `stats.compute_symbol_stats` over all the bars (a property test holds them
equal, field by field).

What crosses a chunk's edge, and how the state carries it:
- hard rules, `zero_volume`, counts and dates: additive; the first examples are kept in date order;
- `large_move` compares a close with the previous good close: the state keeps the last good close;
- `stale_close` counts bars in runs of equal closes: the state keeps its trailing run (close, length,
  first dates) and whether it already counts; a run that crosses the edge is judged on its whole length;
- gaps enumerate the expected sessions up to the state's cut, with the missing ranges (the first
  `max_ranges`, and the last one, which a missing session right after the cut extends).

A state is valid only for the bars it folded (the caller checks their fingerprint) and for the rules
and thresholds it was computed with (`fold_basis`). `date_not_future` never fires on a state's bars:
its cut is at most the day after the local date it was computed at, and that date only moves on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from market_pipeline import calendars
from market_pipeline.quality.gaps import GapReport, missing_runs, sorted_contains
from market_pipeline.quality.stats import SymbolStats
from market_pipeline.quality.validation import (
    HARD_RULES,
    SOFT_SIGNALS,
    ValidationReport,
    ValidationThresholds,
    _hard_failures,
    _large_moves,
)

FOLD_VERSION = 2  # the state's shape (its JSON): a state of another version is not read
MAX_RANGES = 10  # missing ranges listed (as detect_gaps)


@dataclass
class QualityFold:
    cut: str | None = None  # every bar dated before this (ISO) is folded in; None: nothing yet
    count: int = 0
    first: str | None = None
    last: str | None = None
    passed: int = 0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HARD_RULES, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)
    soft: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOFT_SIGNALS, 0))
    soft_examples: dict[str, list[str]] = field(default_factory=dict)
    last_good_close: float | None = None
    trail_close: float | None = None  # the trailing run of eligible bars with one close
    trail_length: int = 0
    trail_dates: list[str] = field(default_factory=list)
    trail_counted: bool = False
    # gaps: sessions from `first` through `through` are enumerated
    through: str | None = None
    expected: int = 0
    present: int = 0
    ranges: list[list[str]] = field(default_factory=list)
    range_count: int = 0
    last_range: list[str] | None = None
    open_end: bool = False  # the last enumerated session has no bar


def _merge(examples: dict[str, list[str]], name: str, dates: list[str], limit: int) -> None:
    if dates and len(examples.get(name, [])) < limit:
        examples[name] = (examples.get(name, []) + dates)[:limit]


def _iso(days: np.ndarray) -> list[str]:
    return [str(day) for day in days]


def extend_quality(
    state: QualityFold, days: np.ndarray, cols: dict[str, np.ndarray], *, asset_class: str, today: dt.date,
    last_expected: dt.date, cut: dt.date | None, thresholds: ValidationThresholds = ValidationThresholds(),
) -> QualityFold:
    """The state after the bars `days` (datetime64[D], sorted, unique, no NaT; all on or after the
    state's cut and before `cut`) with their float64 columns open, high, low, close, volume, vwap.

    Gaps enumerate the sessions up to `last_expected` (the latest completed session, or a delisted
    symbol's last), and no further than the day before `cut`. A `cut` (None: the bars are the last)
    must be at most one day after both `today` and `last_expected`.
    """
    if cut is not None and (cut - dt.timedelta(days=1) > today or cut - dt.timedelta(days=1) > last_expected):
        raise ValueError(f"cut {cut} is later than the day after {min(today, last_expected)}")
    s = QualityFold(**{k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in state.__dict__.items()})
    s.cut = cut.isoformat() if cut is not None else None
    n = len(days)
    limit = thresholds.max_examples
    if n:
        s.count += n
        s.first = s.first or str(days[0])
        s.last = str(days[-1])
        _extend_validation(s, days, cols, asset_class, today, thresholds)
    end = np.datetime64(last_expected, "D")
    if cut is not None:
        end = min(end, np.datetime64(cut, "D") - 1)
    _extend_gaps(s, days, asset_class, end)
    for name in list(s.examples):
        s.examples[name] = s.examples[name][:limit]
    return s


def _extend_validation(s: QualityFold, days, cols, asset_class, today, thresholds: ValidationThresholds) -> None:
    limit = thresholds.max_examples
    hard = _hard_failures(days, cols, asset_class, today, thresholds.vwap_tolerance)
    s.passed += len(days) - int(np.stack(list(hard.values())).any(axis=0).sum())
    for rule, mask in hard.items():
        s.failures[rule] += int(mask.sum())
        _merge(s.examples, rule, _iso(days[mask][:limit]), limit)

    close, vol = cols["close"], cols["volume"]
    with np.errstate(invalid="ignore", divide="ignore"):
        good = np.isfinite(close) & (close > 0)
        if s.last_good_close is not None:  # the previous good close, from the bars before
            moves = _large_moves(np.concatenate(([s.last_good_close], close)), np.concatenate(([True], good)), thresholds.large_move)[1:]
        else:
            moves = _large_moves(close, good, thresholds.large_move)
        zero = vol == 0
        eligible = good & (vol > 0)
    if good.any():
        s.last_good_close = float(close[np.flatnonzero(good)[-1]])

    # stale runs: a run continuing the state's trailing run is judged on its whole length
    n = len(days)
    continues = np.zeros(n, bool)
    continues[1:] = eligible[1:] & eligible[:-1] & (close[1:] == close[:-1])
    run_id = np.cumsum(~continues) - 1
    length = np.bincount(run_id)
    joined = s.trail_length > 0 and bool(eligible[0]) and close[0] == s.trail_close
    if joined:
        length[0] += s.trail_length
    stale = eligible & (length[run_id] >= thresholds.stale_sessions)
    stale_dates = _iso(days[stale][:limit])
    if joined and not s.trail_counted and length[0] >= thresholds.stale_sessions:
        s.soft["stale_close"] += s.trail_length  # the run's bars before this chunk now count
        stale_dates = s.trail_dates + stale_dates
    s.soft["stale_close"] += int(stale.sum())
    if eligible[-1]:
        last_run = np.flatnonzero(run_id == run_id[-1])
        before = s.trail_dates if joined and run_id[-1] == 0 else []
        s.trail_close, s.trail_length = float(close[-1]), int(length[run_id[-1]])
        s.trail_dates = (before + _iso(days[last_run[:limit]]))[:limit]
        s.trail_counted = s.trail_length >= thresholds.stale_sessions
    else:
        s.trail_close, s.trail_length, s.trail_dates, s.trail_counted = None, 0, [], False

    for signal, mask, dates in (
        ("large_move", moves, _iso(days[moves][:limit])),
        ("stale_close", None, stale_dates),
        ("zero_volume", zero, _iso(days[zero][:limit])),
    ):
        if mask is not None:
            s.soft[signal] += int(mask.sum())
        _merge(s.soft_examples, signal, dates, limit)


def _extend_gaps(s: QualityFold, days: np.ndarray, asset_class: str, end: np.datetime64) -> None:
    if s.first is None:
        return  # no bar yet: no session is expected
    start = np.datetime64(s.first, "D") if s.through is None else np.datetime64(s.through, "D") + 1
    sessions = calendars.session_days(asset_class, start, end)
    if end >= start:
        s.through = str(end)
    if len(sessions) == 0:
        return
    present = sorted_contains(days, sessions)
    s.expected += len(sessions)
    s.present += int(present.sum())
    missing = np.flatnonzero(~present)
    if len(missing):
        runs = missing_runs(missing)
        if s.open_end and missing[0] == 0:  # the state's last missing range goes on
            _, e = runs.pop(0)
            s.last_range = [s.last_range[0], str(sessions[missing[e]])]
            if s.range_count <= MAX_RANGES:
                s.ranges[s.range_count - 1] = list(s.last_range)
        for a, e in runs:
            s.range_count += 1
            s.last_range = [str(sessions[missing[a]]), str(sessions[missing[e]])]
            if s.range_count <= MAX_RANGES:
                s.ranges.append(list(s.last_range))
    s.open_end = not bool(present[-1])


def finish_quality(
    state: QualityFold, symbol: str, asset_class: str, *, last_expected: dt.date,
    thresholds: ValidationThresholds = ValidationThresholds(), max_gaps: int = 0, gap_error_above: int = 10,
) -> SymbolStats:
    """The stats over every bar folded into `state` (the last extend had no cut), as compute_symbol_stats gives them."""
    n = state.count
    rate = state.passed / n if n else None
    validation = ValidationReport(
        bars_checked=n,
        bars_passed=state.passed,
        rate=rate,
        failures=dict(state.failures),
        examples={rule: list(state.examples[rule]) for rule in HARD_RULES if state.failures[rule]},
        soft=dict(state.soft),
        soft_examples={signal: list(state.soft_examples[signal]) for signal in SOFT_SIGNALS if state.soft[signal]},
        passed=rate is None or rate >= thresholds.min_rate,
        severity="WARN" if rate is None or rate >= thresholds.error_below else "ERROR",
    )
    gaps_detected = state.expected - state.present
    gaps = GapReport(
        expected=state.expected,
        present=state.present,
        gaps_detected=gaps_detected,
        coverage=state.present / state.expected if state.expected else None,
        missing_ranges=[tuple(pair) for pair in state.ranges],
        first_date=state.first,
        last_expected=str(np.datetime64(last_expected, "D")),
        passed=gaps_detected <= max_gaps,
        severity="WARN" if gaps_detected <= gap_error_above else "ERROR",
    )
    return SymbolStats(
        symbol=symbol, asset_class=asset_class, record_count=n, first_date=state.first, last_date=state.last,
        validation_rate=rate, gaps_detected=gaps_detected, validation=validation, gaps=gaps,
    )
