"""The checks folded over a symbol's older bars give exactly what the full computation gives over all
of them: random histories with every kind of bad bar, stale runs and missing sessions across the cut,
splits recorded, missed and duplicated, cut after cut as daily refreshes would move it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from market_pipeline import calendars
from market_pipeline.corporate_actions import Split, evaluate_consistency
from market_pipeline.quality.checks_fold import CheckState, evaluate, fold_basis, state_cut, usable
from market_pipeline.quality.report import CheckThresholds, compute_stats

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 16, 1, 0, tzinfo=UTC)  # evening of 2026-06-15 in New York


def _history(rng: np.random.Generator, asset_class: str) -> tuple[pd.DataFrame, list[Split]]:
    """A random history ending a few days after NOW, with bad bars, stale runs, gaps and splits."""
    start = np.datetime64("2025-11-01") + int(rng.integers(0, 60))
    days = calendars.session_days(asset_class, start, np.datetime64("2026-06-15"))
    days = days[rng.random(len(days)) > rng.choice([0.0, 0.03, 0.3])]  # missing sessions, sometimes long runs
    if rng.random() < 0.5:  # a missing month
        a = int(rng.integers(0, max(1, len(days) - 30)))
        days = np.concatenate((days[:a], days[a + int(rng.integers(5, 30)):]))
    extra = [np.datetime64("2026-01-03"), np.datetime64("2026-03-07"), np.datetime64("2026-06-16"), np.datetime64("2026-06-20")]
    chosen = np.array([e for e in extra if rng.random() < 0.5], dtype="datetime64[D]")
    days = np.unique(np.concatenate((days, chosen)))
    n = len(days)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    basis = np.ones(n)  # the as-traded price of a share of today's basis: splits step it
    splits: list[Split] = []
    for k in range(int(rng.integers(0, 4))):
        day = days[int(rng.integers(0, n))] if rng.random() < 0.8 else np.datetime64("2026-05-30") + int(rng.integers(0, 40))
        ratio = float(rng.choice([2.0, 3.0, 0.1, 1.5]))
        if rng.random() < 0.7:  # shown in the prices
            basis[days < day] *= ratio
        status = "duplicate" if rng.random() < 0.2 else "active"
        splits.append(Split("X", f"E{k}", day.astype(object), 1.0, ratio, "forward_split", status=status, reason="dup" if status == "duplicate" else None))
    if n > 40 and rng.random() < 0.5:  # an unrecorded split (a 1-for-3 reverse split)
        basis[: int(rng.integers(1, n))] /= 3
    for _ in range(int(rng.integers(0, 4))):  # stale runs, some crossing any cut
        a = int(rng.integers(0, n))
        close[a : a + int(rng.integers(2, 12))] = close[a]
    if rng.random() < 0.3:  # a long stale run (a halted symbol), across several cuts
        a = int(rng.integers(0, n))
        close[a : a + int(rng.integers(20, 80))] = close[a]
    opens = close * (1 + rng.normal(0, 0.005, n))
    opens[1:] = np.where(rng.random(n - 1) < 0.9, close[:-1] * (1 + rng.normal(0, 0.005, n - 1)), opens[1:])
    if rng.random() < 0.3:  # a squeeze: a run of large moves, some near a split ratio
        a = int(rng.integers(1, n))
        close[a : a + 4] *= rng.choice([2.0, 0.5, 2.4, 0.63], size=len(close[a : a + 4]))
        opens[a : a + 4] = close[a : a + 4] * (1 + rng.normal(0, 0.01, len(close[a : a + 4])))
    close, opens = close * basis, opens * basis
    high = np.maximum(opens, close) * 1.01
    low = np.minimum(opens, close) * 0.99
    volume = rng.integers(0, 3, n) * 1000.0 if rng.random() < 0.3 else 1e6 * np.exp(rng.normal(0, 0.3, n)) / basis
    vwap = np.where(rng.random(n) < 0.2, np.nan, (high + low) / 2)
    for column, bad in ((close, np.nan), (opens, -1.0), (high, 0.0), (low, np.inf), (volume, -5.0), (vwap, 1e9)):
        column[rng.random(n) < 0.02] = bad
    if rng.random() < 0.3:
        close[rng.random(n) < 0.05] = 1e5  # large moves
    frame = pd.DataFrame({
        "date": days.astype("datetime64[ns]"), "open": opens, "high": high, "low": low, "close": close,
        "volume": volume, "vwap": vwap,
    })
    return frame, splits


def _cuts(rng, frame) -> list[dt.date]:
    """Increasing cut dates, each at most the day after both today and the latest session."""
    latest = dt.date(2026, 6, 15)
    start = int(rng.integers(5, 200))  # and some a few days apart, as daily refreshes move them
    near = [latest - dt.timedelta(days=start - 9 * k) for k in range(int(rng.integers(0, 8))) if start - 9 * k >= 0]
    far = [latest - dt.timedelta(days=int(x)) for x in rng.integers(0, 260, 4)]
    return sorted({dt.date(2025, 10, 1), *near, *far, latest + dt.timedelta(days=1)})


@pytest.mark.parametrize("asset_class", ["stock", "crypto"])
@pytest.mark.parametrize("seed", range(60))
def test_the_fold_equals_the_full_checks_at_every_cut(asset_class, seed):
    rng = np.random.default_rng(seed)
    frame, splits = _history(rng, asset_class)
    settings = CheckThresholds(large_move=float(rng.choice([0.5, 0.2])))
    delisted = None
    if rng.random() < 0.3:  # after the latest session (the history is whole), or in the middle of it
        delisted = dt.date(2026, 6, 20) if rng.random() < 0.5 else dt.date(2026, 2, 1) + dt.timedelta(days=int(rng.integers(0, 120)))
    full = compute_stats("X", asset_class, frame, settings, NOW, delisted)
    full_splits = evaluate_consistency(frame, splits)

    state = None
    candidates = _cuts(rng, frame)
    cuts = [cut for cut in candidates if usable(cut, asset_class, NOW, delisted)]
    if delisted is None or delisted > NOW.date():
        assert cuts == candidates  # every cut up to the day after the latest session is usable
    for cut in cuts:
        rest = frame if state is None else frame[frame["date"] >= pd.Timestamp(state.cut)]
        outcome = evaluate("X", asset_class, rest, now=NOW, settings=settings, splits=splits, delisted_on=delisted, state=state, cut=cut)
        assert outcome.stats == full, f"cut {cut} (state cut {state and state.cut})"
        assert outcome.splits == full_splits, f"cut {cut}"
        state = CheckState.from_json(outcome.state.to_json())  # kept as the warehouse keeps it
        assert state.cut == cut


def test_a_state_is_refused_once_a_delisting_ends_the_history_before_its_cut():
    cut = dt.date(2026, 6, 1)
    assert usable(cut, "stock", NOW)
    assert not usable(cut, "stock", NOW, delisted_on=dt.date(2026, 5, 15))
    assert not usable(cut, "stock", dt.datetime(2026, 5, 20, tzinfo=UTC))  # a `now` before the state


def test_the_cut_keeps_the_refresh_window_out_of_the_state():
    assert state_cut("stock", NOW) == dt.date(2026, 5, 1)  # 35 days before 2026-06-15, first of the month
    assert state_cut("stock", NOW, window_sessions=40) == dt.date(2026, 3, 1)  # 80 days: a wide re-fetch window
    assert state_cut("stock", NOW, delisted_on=dt.date(2026, 2, 10)) == dt.date(2026, 1, 1)


def test_the_basis_changes_with_the_split_list_and_the_thresholds():
    split = Split("X", "E1", dt.date(2026, 1, 5), 1.0, 2.0, "forward_split")
    base = fold_basis("stock", CheckThresholds(), [split])
    assert fold_basis("stock", CheckThresholds(), [split]) == base
    assert fold_basis("stock", CheckThresholds(), []) != base  # a split recorded late
    assert fold_basis("stock", CheckThresholds(), [split, split]) != base  # a duplicated listing
    assert fold_basis("stock", CheckThresholds(large_move=0.2), [split]) != base
    assert fold_basis("crypto", CheckThresholds(), [split]) != base


def test_the_random_histories_exercise_every_finding_of_the_split_check():
    """The property above covers evidence-backed unrecorded splits, unconfirmed splits and large moves."""
    found = {"jumps": 0, "unconfirmed": 0, "large": 0, "checked": 0}
    for seed in range(60):
        frame, splits = _history(np.random.default_rng(seed), "stock")
        report = evaluate_consistency(frame, splits)
        jumps, unconfirmed, large = report.counts()
        found["jumps"] += jumps > 0
        found["unconfirmed"] += unconfirmed > 0
        found["large"] += large > 0
        found["checked"] += report.splits_checked > 0
    assert min(found.values()) >= 5, found
