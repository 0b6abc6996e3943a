"""Refresh planning (market_pipeline.refresh.planning): sessions, targets, and the grouped-vs-range split by
request count. Pure functions, checked against hand-worked calendars and a brute-force optimum."""

import datetime as dt
import itertools
import random
import zoneinfo

import pytest

from market_pipeline.refresh.planning import (
    MarketPlan,
    SymbolWindow,
    market_of,
    plan_market,
    plan_refresh,
    session_dates,
    sessions_behind,
    target_session,
)

NY = zoneinfo.ZoneInfo("America/New_York")
UTC = dt.timezone.utc
TARGET = dt.date(2024, 7, 8)  # a Monday after the Independence Day holiday (Thursday 2024-07-04)
D = dt.date


def stocks(n: int, start: dt.date, prefix: str = "S", full: bool = False) -> list[SymbolWindow]:
    return [SymbolWindow(f"{prefix}{i:04d}", "stock", start, full) for i in range(n)]


def nth_last_session(market: str, n: int, target: dt.date = TARGET) -> dt.date:
    """The n-th last session up to target (n=1: target itself when it is a session)."""
    return session_dates(market, target - dt.timedelta(days=60), target)[-n]


def test_markets_of_asset_classes():
    assert market_of("stock") == market_of("etf") == "stocks"
    assert market_of("crypto") == "crypto"
    with pytest.raises(ValueError, match="unknown asset class"):
        market_of("forex")


def test_session_dates_follow_each_market_calendar():
    assert session_dates("stocks", D(2024, 7, 3), D(2024, 7, 8)) == [D(2024, 7, 3), D(2024, 7, 5), D(2024, 7, 8)]
    assert session_dates("crypto", D(2024, 7, 5), D(2024, 7, 8)) == [D(2024, 7, 5), D(2024, 7, 6), D(2024, 7, 7), D(2024, 7, 8)]
    assert session_dates("stocks", D(2024, 7, 9), D(2024, 7, 8)) == []


def test_target_session_is_the_latest_completed_session():
    friday_evening = dt.datetime(2024, 7, 5, 18, 30, tzinfo=NY)
    assert target_session("stocks", friday_evening) == D(2024, 7, 5)
    assert target_session("stocks", dt.datetime(2024, 7, 5, 15, 0, tzinfo=NY)) == D(2024, 7, 3)  # before the close
    assert target_session("stocks", dt.datetime(2024, 7, 6, 12, 0, tzinfo=NY)) == D(2024, 7, 5)  # Saturday
    assert target_session("crypto", dt.datetime(2024, 7, 7, 0, 15, tzinfo=UTC)) == D(2024, 7, 6)
    assert target_session("stocks", friday_evening, requested=D(2024, 7, 1)) == D(2024, 7, 1)


def test_sessions_behind():
    assert sessions_behind("stocks", D(2024, 7, 3), TARGET) == 2  # 5th and 8th
    assert sessions_behind("stocks", TARGET, TARGET) == 0
    assert sessions_behind("crypto", D(2024, 7, 3), TARGET) == 5
    assert sessions_behind("stocks", None, TARGET) is None


@pytest.mark.parametrize("window, missed", [(1, 1), (3, 1), (1, 3), (3, 3), (0, 1)])
def test_many_symbols_cost_window_plus_missed_requests(window, missed):
    """1,000 stocks whose history ends `missed` sessions before the target: the first date to fetch
    is the window-th last stored session, so the grouped path needs window + missed requests."""
    last_stored = nth_last_session("stocks", missed + 1)
    start = nth_last_session("stocks", missed + window) if window else last_stored + dt.timedelta(days=1)
    plan = plan_market("stocks", stocks(1000, start), TARGET)
    assert plan.requests == window + missed
    assert len(plan.dates) == window + missed and plan.dates[-1] == TARGET
    assert len(plan.grouped) == 1000 and plan.ranged == ()
    assert plan.range_only_requests == 1000


def test_few_symbols_keep_the_range_path_and_ties_go_to_range():
    start = nth_last_session("stocks", 3)  # window 3, nothing missed: 3 grouped requests
    assert plan_market("stocks", stocks(2, start), TARGET).grouped == ()
    tie = plan_market("stocks", stocks(3, start), TARGET)
    assert tie.grouped == () and tie.requests == 3
    fewer = plan_market("stocks", stocks(4, start), TARGET)
    assert len(fewer.grouped) == 4 and fewer.requests == 3


def test_new_and_far_behind_symbols_take_the_range_path():
    near = stocks(1000, nth_last_session("stocks", 4))
    far = stocks(2, D(2023, 1, 3), prefix="FAR")
    new = stocks(1, D(2022, 1, 3), prefix="NEW", full=True)
    windows = near[:500] + far + new + near[500:]
    plan = plan_market("stocks", windows, TARGET)
    assert set(plan.ranged) == {"FAR0000", "FAR0001", "NEW0000"}
    assert len(plan.grouped) == 1000 and len(plan.dates) == 4
    assert plan.requests == 7
    assert [s for s in plan.grouped] == [w.symbol for w in near]  # run order kept


def test_stocks_and_etfs_share_one_grouped_market_crypto_has_its_own():
    start = nth_last_session("stocks", 2)
    windows = stocks(3, start) + [SymbolWindow(f"E{i}", "etf", start, False) for i in range(3)]
    windows += [SymbolWindow(f"C{i}USD", "crypto", TARGET - dt.timedelta(days=3), False) for i in range(6)]
    plans = plan_refresh(windows, {"stocks": TARGET, "crypto": TARGET})
    assert plans["stocks"].requests == 2 and len(plans["stocks"].grouped) == 6
    assert plans["crypto"].dates == (D(2024, 7, 5), D(2024, 7, 6), D(2024, 7, 7), D(2024, 7, 8))
    assert len(plans["crypto"].grouped) == 6
    assert set(plan_refresh(windows[:6], {"stocks": TARGET, "crypto": TARGET})) == {"stocks"}


def test_a_symbol_already_up_to_date_costs_nothing():
    """Window 0 and nothing missed: the window starts after the target, no request at all."""
    plan = plan_market("stocks", stocks(5, TARGET + dt.timedelta(days=1)), TARGET)
    assert plan.requests == 0 and plan.dates == () and len(plan.grouped) == 5


def test_cap_on_grouped_dates_and_switch_off():
    behind = stocks(1000, nth_last_session("stocks", 40))
    assert plan_market("stocks", behind, TARGET, max_grouped_dates=None).requests == 40
    capped = plan_market("stocks", behind, TARGET, max_grouped_dates=30)
    assert capped.grouped == () and capped.requests == 1000
    off = plan_market("stocks", stocks(1000, nth_last_session("stocks", 2)), TARGET, allow_grouped=False)
    assert off.grouped == () and off.requests == 1000


def brute_force_minimum(windows: list[SymbolWindow], target: dt.date) -> int:
    """The fewest requests over every subset of eligible symbols taking the grouped path."""
    eligible = [w for w in windows if not w.full]
    best = len(windows)
    for size in range(1, len(eligible) + 1):
        for subset in itertools.combinations(eligible, size):
            dates = len(session_dates("stocks", min(w.start for w in subset), target))
            best = min(best, dates + len(windows) - size)
    return best


@pytest.mark.parametrize("seed", range(25))
def test_plan_is_the_request_count_optimum_and_never_worse_than_range(seed):
    rng = random.Random(seed)
    sessions = session_dates("stocks", D(2024, 5, 1), TARGET)
    windows = [
        SymbolWindow(f"S{i}", "stock", rng.choice(sessions[-12:] if rng.random() < 0.8 else sessions), rng.random() < 0.1)
        for i in range(rng.randint(1, 9))
    ]
    plan = plan_market("stocks", windows, TARGET, max_grouped_dates=None)
    assert plan.requests == brute_force_minimum(windows, TARGET)
    assert plan.requests <= plan.range_only_requests == len(windows)
    assert sorted(plan.grouped + plan.ranged) == sorted(w.symbol for w in windows)
    assert all(not w.full for w in windows if w.symbol in plan.grouped)
    if plan.grouped:  # the dates cover every grouped symbol's window up to the target
        first = min(w.start for w in windows if w.symbol in plan.grouped)
        assert list(plan.dates) == session_dates("stocks", first, TARGET)


def test_market_plan_path_of():
    plan = MarketPlan("stocks", TARGET, grouped=("A",), dates=(TARGET,), ranged=("B",))
    assert plan.path_of("A") == "grouped" and plan.path_of("B") == "range"
