"""Gap detection: expected sessions without a stored bar.

Expected sessions run from the symbol's first stored bar to the latest completed session at `now`,
or a delisted symbol's last trading session when that is earlier (XNYS sessions for stocks/ETFs, every UTC day for crypto). Bars on non-session dates or after the
latest completed session are ignored here (validation reports them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from market_pipeline import calendars


@dataclass(frozen=True)
class GapReport:
    """The outcome of `detect_gaps` for one symbol.

    `present` counts expected sessions that have a bar, so coverage = present / expected.
    `missing_ranges` groups consecutive missing sessions into (first, last) ISO pairs.
    """

    expected: int
    present: int
    gaps_detected: int
    coverage: float | None
    missing_ranges: list[tuple[str, str]]
    first_date: str | None
    last_expected: str | None
    passed: bool
    severity: str

    def as_metadata(self) -> dict:
        """A plain JSON-able dict (for Dagster metadata and the CLI)."""
        return {
            "expected": self.expected,
            "present": self.present,
            "gaps_detected": self.gaps_detected,
            "coverage": self.coverage,
            "missing_ranges": [list(pair) for pair in self.missing_ranges],
            "first_date": self.first_date,
            "last_expected": self.last_expected,
            "passed": self.passed,
            "severity": self.severity,
        }


def detect_gaps(
    dates,
    asset_class: str,
    *,
    now: dt.datetime,
    max_gaps: int = 0,
    error_above: int = 10,
    max_ranges: int = 10,
    last_session: dt.date | None = None,
) -> GapReport:
    """Find expected sessions with no bar among `dates` (anything `calendars.to_days` reads).

    `now` must be timezone-aware. The check passes with at most `max_gaps` missing sessions; a
    failure is WARN up to `error_above` missing sessions and ERROR beyond.
    """
    days = np.sort(calendars.to_days(dates))  # NaT sorts last
    days = days[~np.isnat(days)]
    last_expected = np.datetime64(calendars.latest_completed_session(asset_class, now), "D")
    if last_session is not None:  # a delisted symbol: no session after its last one is a gap
        last_expected = min(last_expected, np.datetime64(last_session, "D"))
    first = days[0] if len(days) else None
    expected = calendars.session_days(asset_class, first, last_expected) if first is not None else days[:0]

    present = sorted_contains(days, expected)
    missing_positions = np.flatnonzero(~present)
    gaps = len(missing_positions)
    return GapReport(
        expected=len(expected),
        present=int(present.sum()),
        gaps_detected=gaps,
        coverage=float(present.mean()) if len(expected) else None,
        missing_ranges=_missing_ranges(expected, missing_positions, max_ranges),
        first_date=str(first) if first is not None else None,
        last_expected=str(last_expected),
        passed=gaps <= max_gaps,
        severity="WARN" if gaps <= error_above else "ERROR",
    )


def sorted_contains(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """For each needle, is it in the sorted `haystack`."""
    if len(haystack) == 0:
        return np.zeros(len(needles), bool)
    positions = np.searchsorted(haystack, needles).clip(max=len(haystack) - 1)
    return haystack[positions] == needles


def missing_runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs in sorted positions, as (first, last) indices into `positions`."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks - 1, [len(positions) - 1]))
    return list(zip(starts.tolist(), ends.tolist()))


def _missing_ranges(expected: np.ndarray, positions: np.ndarray, limit: int) -> list[tuple[str, str]]:
    """Group missing positions in the session sequence into runs; the first `limit` as ISO ranges."""
    return [(str(expected[positions[s]]), str(expected[positions[e]])) for s, e in missing_runs(positions)[:limit]]
