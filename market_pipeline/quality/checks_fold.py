"""A symbol's checks (validation, gaps, split consistency) from a state folded over its older bars plus
its newer bars, so a daily refresh reads only the bars from the state's cut on. Pure.

`evaluate(...)` gives exactly what `report.compute_stats` and `consistency.evaluate` give over all the
bars (a property test holds them equal at every cut), and the state to keep for the next run: the
bars dated before `state_cut(...)`, folded. The caller keeps a state with the fingerprint of the bars
it folded and uses it again only while they are unchanged and `fold_basis` is the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from market_pipeline import calendars
from market_pipeline.corporate_actions.consistency import RULES_VERSION as SPLIT_RULES_VERSION, ConsistencyReport
from market_pipeline.corporate_actions.consistency_fold import SplitFold, extend_splits, finish_splits, splits_digest
from market_pipeline.corporate_actions.events import Split
from market_pipeline.quality.fold import FOLD_VERSION, MAX_RANGES, QualityFold, extend_quality, finish_quality
from market_pipeline.quality.stats import SymbolStats
from market_pipeline.quality.validation import ValidationThresholds, _float_column
from market_pipeline.reference.freshness import last_trading_session

# the state keeps the bars up to the first day of the month this many days before the latest session:
# a refresh (and its re-fetch window) rewrites only newer bars, and the state moves once a month
CUT_MARGIN_DAYS = 35
_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")


@dataclass
class CheckState:
    quality: QualityFold
    splits: SplitFold

    @property
    def cut(self) -> dt.date | None:
        return dt.date.fromisoformat(self.quality.cut) if self.quality.cut else None

    def to_json(self) -> str:
        return json.dumps({"version": FOLD_VERSION, "quality": dataclasses.asdict(self.quality), "splits": dataclasses.asdict(self.splits)})

    @classmethod
    def from_json(cls, text: str) -> "CheckState":
        data = json.loads(text)
        if data.get("version") != FOLD_VERSION:
            raise ValueError(f"check state version {data.get('version')!r}, not {FOLD_VERSION}")
        return cls(QualityFold(**data["quality"]), SplitFold(**data["splits"]))


def validation_thresholds(settings) -> ValidationThresholds:
    """The ValidationThresholds of check settings (report.CheckThresholds or the run config)."""
    return ValidationThresholds(
        min_rate=settings.min_validation_rate, error_below=settings.validation_error_below, large_move=settings.large_move
    )


def fold_basis(asset_class: str, settings, splits: Sequence[Split]) -> str:
    """Everything a state depends on besides its bars: the fold's version, the split rule's version,
    the asset class, the thresholds that shape the state, the calendar's version and the symbol's
    split list."""
    t = validation_thresholds(settings)
    return (
        f"fold{FOLD_VERSION}|splits-rule{SPLIT_RULES_VERSION}|{asset_class}|{t.large_move!r}|{t.stale_sessions}|{t.vwap_tolerance!r}|{t.max_examples}|"
        f"{MAX_RANGES}|xcals{calendars.calendars_version()}|splits:{splits_digest(splits)}"
    )


def _last_expected(asset_class: str, now: dt.datetime, delisted_on: dt.date | None) -> dt.date:
    last = calendars.latest_completed_session(asset_class, now)
    return min(last, last_trading_session(asset_class, delisted_on)) if delisted_on else last


def state_cut(asset_class: str, now: dt.datetime, delisted_on: dt.date | None = None, window_sessions: int = 0) -> dt.date:
    """Where the state kept for the next run ends (bars dated before it): the first day of the month
    `CUT_MARGIN_DAYS` (or twice the re-fetch window's sessions, when more) before the latest expected
    session, so the next refreshes rewrite no bar before it."""
    last = _last_expected(asset_class, now, delisted_on)
    cut = (last - dt.timedelta(days=max(CUT_MARGIN_DAYS, 2 * window_sessions))).replace(day=1)
    return min(cut, last + dt.timedelta(days=1), calendars.local_date(asset_class, now) + dt.timedelta(days=1))


def usable(cut: dt.date, asset_class: str, now: dt.datetime, delisted_on: dt.date | None = None) -> bool:
    """Can a state cut at `cut` be extended at `now`: every session it enumerated is still expected
    and none of its bars can be in the future (a delisting recorded later, or a `now` moved back)."""
    day_before = cut - dt.timedelta(days=1)
    return day_before <= calendars.local_date(asset_class, now) and day_before <= _last_expected(asset_class, now, delisted_on)


def bar_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The bars' dates (datetime64[D], sorted) and float64 columns; refuses null or repeated dates,
    which a warehouse read never has (the full computation handles those frames)."""
    if len(frame) == 0:
        return np.empty(0, "datetime64[D]"), {c: np.empty(0) for c in _COLUMNS}
    days = calendars.to_days(frame["date"])
    if np.isnat(days).any():
        raise ValueError("bars with a null date cannot be folded")
    order = np.argsort(days, kind="stable")
    days = days[order]
    if (days[1:] == days[:-1]).any():
        raise ValueError("bars with a repeated date cannot be folded")
    return days, {name: _float_column(frame, name)[order] for name in _COLUMNS}


def _extend(state: CheckState, days, cols, *, asset_class, now, settings, splits, last_expected, cut) -> CheckState:
    quality = extend_quality(
        state.quality, days, cols, asset_class=asset_class, today=calendars.local_date(asset_class, now),
        last_expected=last_expected, cut=cut, thresholds=validation_thresholds(settings),
    )
    return CheckState(quality, extend_splits(state.splits, days, cols["open"], cols["close"], splits, cols["volume"]))


@dataclass
class CheckOutcome:
    stats: SymbolStats
    splits: ConsistencyReport
    state: CheckState  # to keep: the bars before its cut folded (may be the state given, unchanged)
    changed: bool  # the state to keep is not the one given


def evaluate(
    symbol: str, asset_class: str, bars: pd.DataFrame, *, now: dt.datetime, settings, splits: Sequence[Split] = (),
    delisted_on: dt.date | None = None, state: CheckState | None = None, cut: dt.date | None = None,
) -> CheckOutcome:
    """The checks of a symbol whose bars dated before `state.cut` are folded into `state` (None: no
    state, `bars` are all of them) and whose later bars are `bars`. The state kept is cut at `cut`
    (default `state_cut(...)`), or is `state` when that is not later than its own cut."""
    splits = list(splits)
    last_expected = _last_expected(asset_class, now, delisted_on)
    cut = cut or state_cut(asset_class, now, delisted_on)
    days, cols = bar_arrays(bars)
    kept, changed = state, False
    if state is None or (state.cut is not None and cut > state.cut):
        split_at = int(np.searchsorted(days, np.datetime64(cut, "D"), side="left"))
        head = {name: values[:split_at] for name, values in cols.items()}
        kept = _extend(
            state or CheckState(QualityFold(), SplitFold()), days[:split_at], head, asset_class=asset_class, now=now,
            settings=settings, splits=splits, last_expected=last_expected, cut=cut,
        )
        days, cols, changed = days[split_at:], {name: values[split_at:] for name, values in cols.items()}, True
    final = _extend(kept, days, cols, asset_class=asset_class, now=now, settings=settings, splits=splits, last_expected=last_expected, cut=None)
    stats = finish_quality(
        final.quality, symbol, asset_class, last_expected=last_expected, thresholds=validation_thresholds(settings),
        max_gaps=settings.max_gaps, gap_error_above=settings.gaps_error_above,
    )
    return CheckOutcome(stats, finish_splits(final.splits, splits), kept, changed)
