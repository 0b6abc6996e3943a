"""Data-quality checks against the real XNYS calendar: validation, gap detection and per-symbol stats."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from market_pipeline import calendars
from market_pipeline.quality import (
    HARD_RULES,
    SOFT_SIGNALS,
    ValidationThresholds,
    compute_symbol_stats,
    detect_gaps,
    validate_bars,
)

NY = calendars.NEW_YORK
UTC = dt.timezone.utc
FAR_FUTURE = dt.date(2100, 1, 1)


def d(iso: str) -> dt.date:
    return dt.date.fromisoformat(iso)


def sessions(asset_class: str, start: str, end: str) -> list[dt.date]:
    return [day.date() for day in calendars.expected_sessions(asset_class, d(start), d(end))]


def bars(dates, **columns) -> pd.DataFrame:
    """Valid bars on `dates` (python dates): closes vary gently, never stale, never a large move."""
    n = len(dates)
    close = 100.1 + (np.arange(n) % 7) * 0.1
    frame = pd.DataFrame(
        {
            "date": list(dates),
            "open": np.full(n, 100.0),
            "high": np.full(n, 105.0),
            "low": np.full(n, 95.0),
            "close": close,
            "volume": np.full(n, 1000.0),
            "vwap": np.full(n, 100.0),
            "transactions": [None] * n,
        }
    )
    for name, values in columns.items():
        frame[name] = values
    return frame


def with_bar(frame: pd.DataFrame, i: int, **values) -> pd.DataFrame:
    frame = frame.copy()
    for name, value in values.items():
        frame.loc[i, name] = value
    return frame


def stock_year() -> pd.DataFrame:
    """200 valid stock bars on consecutive XNYS sessions of 2024."""
    return bars(sessions("stock", "2024-01-02", "2024-12-31")[:200])


# --- validation -----------------------------------------------------------------------------------


def test_valid_bars_pass_every_rule():
    report = validate_bars(stock_year(), "stock", today=FAR_FUTURE)
    assert (report.bars_checked, report.bars_passed, report.rate, report.passed) == (200, 200, 1.0, True)
    assert report.failures == dict.fromkeys(HARD_RULES, 0)
    assert report.soft == dict.fromkeys(SOFT_SIGNALS, 0)
    assert report.examples == {} and report.soft_examples == {}


@pytest.mark.parametrize(
    ("values", "failing"),
    [
        ({"open": 0.0}, {"prices_finite_positive"}),
        ({"low": -1.0}, {"prices_finite_positive"}),
        ({"close": np.nan}, {"prices_finite_positive"}),
        ({"high": np.inf}, {"prices_finite_positive"}),
        ({"close": 104.0, "high": 103.0}, {"high_ge_open_close"}),
        ({"low": 101.0, "vwap": 102.0}, {"low_le_open_close"}),
        ({"high": 90.0}, {"high_ge_open_close", "high_ge_low", "vwap_within_range"}),  # no vwap fits [95, 90]
        ({"volume": -1.0}, {"volume_finite_non_negative"}),
        ({"volume": np.nan}, {"volume_finite_non_negative"}),
        ({"vwap": 110.0}, {"vwap_within_range"}),
        ({"vwap": 90.0}, {"vwap_within_range"}),
    ],
)
def test_each_hard_rule_fails_only_the_bad_bar(values, failing):
    frame = with_bar(bars(sessions("stock", "2024-07-01", "2024-07-02")), 1, **values)
    report = validate_bars(frame, "stock", today=FAR_FUTURE)
    assert {rule for rule, count in report.failures.items() if count} == failing
    assert all(report.failures[rule] == 1 for rule in failing)
    assert report.examples == {rule: ["2024-07-02"] for rule in failing}
    assert (report.bars_passed, report.rate) == (1, 0.5)


def test_saturday_fails_date_is_session_for_a_stock_but_passes_for_crypto():
    frame = bars([d("2024-07-05"), d("2024-07-06")])
    stock = validate_bars(frame, "stock", today=FAR_FUTURE)
    assert stock.failures["date_is_session"] == 1
    assert stock.examples == {"date_is_session": ["2024-07-06"]}
    assert validate_bars(frame, "crypto", today=FAR_FUTURE).failures["date_is_session"] == 0


def test_holiday_and_ad_hoc_closure_are_not_sessions():
    frame = bars([d("2024-07-04"), d("2025-01-09"), d("2024-11-29")])
    report = validate_bars(frame, "etf", today=FAR_FUTURE)
    assert report.examples["date_is_session"] == ["2024-07-04", "2025-01-09"]


def test_future_date_fails_but_today_passes():
    frame = bars([d("2024-07-09"), d("2024-07-10"), d("2024-07-11")])
    report = validate_bars(frame, "stock", today=d("2024-07-10"))
    assert report.failures["date_not_future"] == 1
    assert report.examples == {"date_not_future": ["2024-07-11"]}


@pytest.mark.parametrize("absent", [None, np.nan])
def test_absent_vwap_passes(absent):
    frame = bars(sessions("stock", "2024-07-01", "2024-07-03"), vwap=[absent, absent, 100.0])
    assert validate_bars(frame, "stock", today=FAR_FUTURE).failures["vwap_within_range"] == 0


def test_missing_vwap_and_transactions_columns_pass():
    frame = bars(sessions("stock", "2024-07-01", "2024-07-03")).drop(columns=["vwap", "transactions"])
    assert validate_bars(frame, "stock", today=FAR_FUTURE).rate == 1.0


def test_vwap_tolerance_edges():
    # low 95 and high 105 with the default 0.5 % tolerance: [94.525, 105.525]
    vwaps = [94.53, 94.52, 105.52, 105.53]
    frame = bars(sessions("stock", "2024-07-01", "2024-07-05"), vwap=vwaps)
    report = validate_bars(frame, "stock", today=FAR_FUTURE)
    assert report.examples["vwap_within_range"] == ["2024-07-02", "2024-07-05"]
    looser = validate_bars(frame, "stock", today=FAR_FUTURE, thresholds=ValidationThresholds(vwap_tolerance=0.01))
    assert looser.failures["vwap_within_range"] == 0


def test_nan_price_fails_one_rule_and_does_not_hide_a_large_move():
    frame = with_bar(stock_year(), 10, close=np.nan)
    frame = with_bar(frame, 11, open=300.0, high=300.0, low=300.0, close=300.0, vwap=300.0)
    report = validate_bars(frame, "stock", today=FAR_FUTURE)
    assert report.failures == {**dict.fromkeys(HARD_RULES, 0), "prices_finite_positive": 1}
    assert report.soft["large_move"] == 2  # up against bar 9's close, and back down at bar 12
    assert report.bars_passed == 199


def _with_bad_bars(count: int) -> pd.DataFrame:
    frame = stock_year()
    frame.loc[: count - 1, "volume"] = -1.0
    return frame


def test_rate_three_bad_of_two_hundred_fails_with_warn():
    report = validate_bars(_with_bad_bars(3), "stock", today=FAR_FUTURE)
    assert (report.bars_checked, report.bars_passed) == (200, 197)
    assert report.rate == pytest.approx(0.985)
    assert (report.passed, report.severity) == (False, "WARN")


def test_rate_twenty_bad_of_two_hundred_is_an_error():
    report = validate_bars(_with_bad_bars(20), "stock", today=FAR_FUTURE)
    assert report.rate == pytest.approx(0.9)
    assert (report.passed, report.severity) == (False, "ERROR")


def test_bar_failing_several_rules_counts_once_in_the_rate():
    frame = with_bar(stock_year(), 0, volume=-1.0, vwap=500.0)
    report = validate_bars(frame, "stock", today=FAR_FUTURE)
    assert report.bars_passed == 199
    assert report.failures["volume_finite_non_negative"] == report.failures["vwap_within_range"] == 1


def test_thresholds_are_configurable():
    lenient = ValidationThresholds(min_rate=0.98, error_below=0.8, max_examples=2)
    three = validate_bars(_with_bad_bars(3), "stock", today=FAR_FUTURE, thresholds=lenient)
    assert three.passed
    assert three.examples["volume_finite_non_negative"] == ["2024-01-02", "2024-01-03"]
    twenty = validate_bars(_with_bad_bars(20), "stock", today=FAR_FUTURE, thresholds=lenient)
    assert (twenty.passed, twenty.severity) == (False, "WARN")


def test_soft_signals_are_counted_but_not_in_the_rate():
    frame = stock_year()
    frame.loc[20, ["open", "high", "low", "close", "vwap"]] = 200.0  # +100 %, then -50 % (not beyond 0.5)
    frame.loc[50:55, "close"] = 100.0  # six identical closes
    frame.loc[80:83, "close"] = 100.0  # four identical closes: not stale
    frame.loc[120, "volume"] = 0.0
    report = validate_bars(frame, "stock", today=FAR_FUTURE)
    assert report.rate == 1.0 and report.passed
    assert report.soft == {"large_move": 1, "stale_close": 6, "zero_volume": 1}
    dates = [str(day) for day in frame["date"]]
    assert report.soft_examples == {
        "large_move": [dates[20]],
        "stale_close": dates[50:55],
        "zero_volume": [dates[120]],
    }


def test_zero_volume_breaks_a_stale_run():
    frame = stock_year()
    frame.loc[50:55, "close"] = 100.0
    frame.loc[52, "volume"] = 0.0
    report = validate_bars(frame, "stock", today=FAR_FUTURE)
    assert report.soft["stale_close"] == 0
    assert validate_bars(frame, "stock", today=FAR_FUTURE, thresholds=ValidationThresholds(stale_sessions=3)).soft[
        "stale_close"
    ] == 3


def test_split_dates_excuse_a_large_move():
    frame = stock_year()
    frame.loc[30:, ["open", "high", "low", "close", "vwap"]] /= 4  # a 4-for-1 split
    split_day = frame.loc[30, "date"]
    assert validate_bars(frame, "stock", today=FAR_FUTURE).soft["large_move"] == 1
    assert validate_bars(frame, "stock", today=FAR_FUTURE, split_dates=[split_day]).soft["large_move"] == 0
    assert validate_bars(frame, "stock", today=FAR_FUTURE, split_dates=[str(split_day)]).soft["large_move"] == 0


def test_unsorted_frames_and_date_types_give_the_same_report():
    frame = with_bar(stock_year(), 5, low=120.0)
    reference = validate_bars(frame, "stock", today=FAR_FUTURE)
    shuffled = frame.sample(frac=1.0, random_state=7)
    as_datetime64 = frame.assign(date=pd.to_datetime(frame["date"]))
    for variant in (shuffled, as_datetime64):
        assert validate_bars(variant, "stock", today=FAR_FUTURE) == reference


def test_null_date_fails_date_is_session_only():
    frame = bars([d("2024-07-01"), None, d("2024-07-02")])
    report = validate_bars(frame, "stock", today=FAR_FUTURE)
    assert report.failures == {**dict.fromkeys(HARD_RULES, 0), "date_is_session": 1}
    assert detect_gaps(frame["date"], "stock", now=after_close("2024-07-02")).gaps_detected == 0


def test_empty_frame_passes_with_no_rate():
    report = validate_bars(bars([]), "stock", today=FAR_FUTURE)
    assert (report.bars_checked, report.rate, report.passed) == (0, None, True)
    assert report.failures == dict.fromkeys(HARD_RULES, 0)
    assert validate_bars(pd.DataFrame(), "crypto", today=FAR_FUTURE).rate is None


def test_validation_metadata_is_json():
    frame = with_bar(stock_year(), 3, close=np.nan)
    metadata = validate_bars(frame, "stock", today=FAR_FUTURE).as_metadata()
    assert json.loads(json.dumps(metadata)) == metadata
    assert metadata["examples"] == {"prices_finite_positive": ["2024-01-05"]}


# --- gaps -----------------------------------------------------------------------------------------


def after_close(iso: str) -> dt.datetime:
    """Noon New York the day after `iso`."""
    return dt.datetime.combine(d(iso) + dt.timedelta(days=1), dt.time(12), NY)


def test_stock_missing_the_day_after_independence_day_has_one_gap():
    days = [day for day in sessions("stock", "2024-07-01", "2024-07-12") if day != d("2024-07-05")]
    report = detect_gaps(days, "stock", now=after_close("2024-07-12"))
    assert (report.expected, report.present, report.gaps_detected) == (9, 8, 1)
    assert report.missing_ranges == [("2024-07-05", "2024-07-05")]
    assert report.coverage == pytest.approx(8 / 9)
    assert (report.first_date, report.last_expected) == ("2024-07-01", "2024-07-12")
    assert (report.passed, report.severity) == (False, "WARN")


def test_national_day_of_mourning_is_not_a_gap():
    days = [d("2025-01-06"), d("2025-01-07"), d("2025-01-08"), d("2025-01-10")]
    report = detect_gaps(days, "stock", now=after_close("2025-01-10"))
    assert (report.expected, report.gaps_detected, report.passed) == (4, 0, True)


def test_early_close_day_is_an_expected_session():
    days = [d("2024-11-25"), d("2024-11-26"), d("2024-11-27"), d("2024-12-02")]
    report = detect_gaps(days, "stock", now=after_close("2024-12-02"))
    assert report.missing_ranges == [("2024-11-29", "2024-11-29")]
    # The 13:00 early close completes the session: a gap at 13:30, none at 12:30.
    through_wednesday = days[:3]
    at = lambda hour, minute: dt.datetime(2024, 11, 29, hour, minute, tzinfo=NY)  # noqa: E731
    assert detect_gaps(through_wednesday, "stock", now=at(12, 30)).gaps_detected == 0
    assert detect_gaps(through_wednesday, "stock", now=at(13, 30)).missing_ranges == [("2024-11-29", "2024-11-29")]


def test_crypto_missing_a_sunday_is_a_gap():
    days = [day for day in sessions("crypto", "2024-07-01", "2024-07-10") if day != d("2024-07-07")]
    now = dt.datetime(2024, 7, 11, 0, 0, 1, tzinfo=UTC)
    report = detect_gaps(days, "crypto", now=now)
    assert (report.expected, report.gaps_detected) == (10, 1)
    assert report.missing_ranges == [("2024-07-07", "2024-07-07")]


def test_no_leading_gaps_before_the_first_bar():
    report = detect_gaps(sessions("stock", "2024-07-08", "2024-07-12"), "stock", now=after_close("2024-07-12"))
    assert (report.expected, report.gaps_detected, report.first_date) == (5, 0, "2024-07-08")


def test_unfinished_stock_session_is_not_a_gap():
    through_tuesday = sessions("stock", "2024-07-01", "2024-07-09")
    during = detect_gaps(through_tuesday, "stock", now=dt.datetime(2024, 7, 10, 15, tzinfo=NY))
    assert (during.gaps_detected, during.last_expected) == (0, "2024-07-09")
    after = detect_gaps(through_tuesday, "stock", now=dt.datetime(2024, 7, 10, 17, tzinfo=NY))
    assert (after.gaps_detected, after.last_expected) == (1, "2024-07-10")
    assert after.missing_ranges == [("2024-07-10", "2024-07-10")]


def test_unfinished_crypto_day_is_not_a_gap():
    through_tuesday = sessions("crypto", "2024-07-01", "2024-07-09")
    during = detect_gaps(through_tuesday, "crypto", now=dt.datetime(2024, 7, 10, 23, 59, tzinfo=UTC))
    assert (during.gaps_detected, during.last_expected) == (0, "2024-07-09")
    after = detect_gaps(through_tuesday, "crypto", now=dt.datetime(2024, 7, 11, 0, 1, tzinfo=UTC))
    assert (after.gaps_detected, after.last_expected) == (1, "2024-07-10")


def test_consecutive_missing_sessions_form_one_range():
    missing = {d("2024-07-03"), d("2024-07-05"), d("2024-07-09"), d("2024-07-10"), d("2024-07-15")}
    days = [day for day in sessions("stock", "2024-07-01", "2024-07-19") if day not in missing]
    now = after_close("2024-07-19")
    report = detect_gaps(days, "stock", now=now)
    assert report.gaps_detected == 5
    assert report.missing_ranges == [
        ("2024-07-03", "2024-07-05"),
        ("2024-07-09", "2024-07-10"),
        ("2024-07-15", "2024-07-15"),
    ]
    assert detect_gaps(days, "stock", now=now, max_ranges=2).missing_ranges == report.missing_ranges[:2]
    assert detect_gaps(days, "stock", now=now, max_gaps=5).passed
    assert detect_gaps(days, "stock", now=now, error_above=4).severity == "ERROR"


def test_non_session_and_future_bars_are_ignored_by_gaps():
    days = sessions("stock", "2024-07-01", "2024-07-03") + [d("2024-07-04"), d("2024-07-06"), d("2024-07-08")]
    report = detect_gaps(days, "stock", now=after_close("2024-07-05"))
    assert (report.expected, report.present, report.gaps_detected) == (4, 3, 1)


def test_gap_inputs_accept_dates_strings_and_datetime64():
    days = sessions("stock", "2024-07-01", "2024-07-12")
    now = after_close("2024-07-12")
    reference = detect_gaps(days, "stock", now=now)
    assert detect_gaps([str(day) for day in days], "stock", now=now) == reference
    assert detect_gaps(pd.Series(pd.to_datetime(days)), "stock", now=now) == reference
    assert detect_gaps(np.array(days, dtype="datetime64[D]"), "stock", now=now) == reference


def test_no_bars_means_nothing_expected():
    report = detect_gaps([], "stock", now=after_close("2024-07-12"))
    assert (report.expected, report.present, report.gaps_detected, report.coverage) == (0, 0, 0, None)
    assert (report.first_date, report.missing_ranges, report.passed) == (None, [], True)
    assert json.loads(json.dumps(report.as_metadata())) == report.as_metadata()


def test_naive_now_is_rejected():
    with pytest.raises(ValueError):
        detect_gaps([d("2024-07-01")], "stock", now=dt.datetime(2024, 7, 2, 12))


# --- stats ----------------------------------------------------------------------------------------


def test_seed_format_for_a_full_frame():
    frame = _with_bad_bars(10)
    frame = frame[frame["date"] != d("2024-03-01")]  # one gap
    now = after_close(str(frame["date"].iloc[-1]))
    stats = compute_symbol_stats("AAPL", "stock", frame, now=now)
    assert stats.seed_format() == {
        "record_count": 199,
        "date_range": {"start": "2024-01-02", "end": str(frame["date"].iloc[-1])},
        "validation_rate": 189 / 199,
        "gaps_detected": 1,
    }
    assert stats.validation == validate_bars(frame, "stock", today=now.date())
    assert stats.gaps == detect_gaps(frame["date"], "stock", now=now)
    assert (stats.symbol, stats.asset_class) == ("AAPL", "stock")


def test_seed_format_for_an_empty_frame():
    stats = compute_symbol_stats("X:BTCUSD", "crypto", bars([]), now=dt.datetime(2024, 7, 1, tzinfo=UTC))
    assert stats.seed_format() == {
        "record_count": 0,
        "date_range": {"start": None, "end": None},
        "validation_rate": None,
        "gaps_detected": 0,
    }
    assert stats.validation.passed and stats.gaps.passed


def test_stats_judge_future_dates_in_the_asset_class_zone():
    # 23:30 New York on 2024-07-10 is already 2024-07-11 in UTC.
    now = dt.datetime(2024, 7, 10, 23, 30, tzinfo=NY)
    frame = bars([d("2024-07-10"), d("2024-07-11")])
    assert compute_symbol_stats("SPY", "etf", frame, now=now).validation.failures["date_not_future"] == 1
    assert compute_symbol_stats("X:ETHUSD", "crypto", frame, now=now).validation.failures["date_not_future"] == 0
