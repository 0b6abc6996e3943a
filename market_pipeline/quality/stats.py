"""Per-symbol statistics: record count, date range, validation rate and gaps, from one implementation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from market_pipeline import calendars
from market_pipeline.quality.gaps import GapReport, detect_gaps
from market_pipeline.quality.validation import ValidationReport, ValidationThresholds, validate_bars


@dataclass(frozen=True)
class SymbolStats:
    """One symbol's statistics, with the full validation and gap reports they come from."""

    symbol: str
    asset_class: str
    record_count: int
    first_date: str | None
    last_date: str | None
    validation_rate: float | None
    gaps_detected: int
    validation: ValidationReport
    gaps: GapReport

    def seed_format(self) -> dict:
        """The seed-file shape: record_count, date_range {start, end}, validation_rate, gaps_detected."""
        return {
            "record_count": self.record_count,
            "date_range": {"start": self.first_date, "end": self.last_date},
            "validation_rate": self.validation_rate,
            "gaps_detected": self.gaps_detected,
        }


def compute_symbol_stats(
    symbol: str,
    asset_class: str,
    frame: pd.DataFrame,
    *,
    now: dt.datetime,
    validation_thresholds: ValidationThresholds = ValidationThresholds(),
    split_dates=(),
    max_gaps: int = 0,
    gap_error_above: int = 10,
    max_ranges: int = 10,
    last_session: dt.date | None = None,
) -> SymbolStats:
    """Validate and gap-check one symbol's bars at `now` (tz-aware) and summarise them.

    Validation's `today` is `calendars.local_date(asset_class, now)`.
    """
    days = _frame_days(frame)
    validation = validate_bars(
        frame,
        asset_class,
        days=days,
        today=calendars.local_date(asset_class, now),
        thresholds=validation_thresholds,
        split_dates=split_dates,
    )
    gaps = detect_gaps(
        days, asset_class, now=now, max_gaps=max_gaps, error_above=gap_error_above, max_ranges=max_ranges,
        last_session=last_session,
    )
    dated = days[~np.isnat(days)]
    return SymbolStats(
        symbol=symbol,
        asset_class=asset_class,
        record_count=len(frame),
        first_date=str(dated.min()) if len(dated) else None,
        last_date=str(dated.max()) if len(dated) else None,
        validation_rate=validation.rate,
        gaps_detected=gaps.gaps_detected,
        validation=validation,
        gaps=gaps,
    )


def _frame_days(frame: pd.DataFrame) -> np.ndarray:
    """The frame's dates as datetime64[D], normalised once for both reports."""
    if len(frame) == 0:
        return np.empty(0, dtype="datetime64[D]")
    return calendars.to_days(frame["date"])
