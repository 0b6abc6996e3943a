"""Parsing Polygon payloads into bars keyed by the session date (POLYGON_API.md's timestamp rules)."""

import datetime as dt
import json
from pathlib import Path

import pytest

from market_pipeline.polygon.bars import BAR_COLUMNS, parse_aggregate_results, parse_grouped_results
from market_pipeline.calendars import session_date_from_ms
from market_pipeline_tests import payloads

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "polygon_fixtures"


def dates(frame):
    return [d.date() for d in frame["date"]]


def test_range_stock_dates_across_dst_change():
    frame = parse_aggregate_results(payloads.AAPL_RANGE["results"], "stock")
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert dates(frame) == [dt.date(2005, 4, 1), dt.date(2005, 4, 4)]
    assert frame["volume"].tolist() == [642646396.0, 578172308.0]
    assert frame["transactions"].tolist() == [82132, 65543]


def test_range_crypto_utc_midnight_and_optional_fields():
    frame = parse_aggregate_results(payloads.BTC_RANGE["results"], "crypto")
    assert dates(frame) == [dt.date(2023, 1, 1)]
    assert frame["volume"].iloc[0] == pytest.approx(1029145.0)
    assert frame["vwap"].isna().all() and frame["transactions"].isna().all()


def test_missing_results_is_no_bars():
    assert parse_aggregate_results(payloads.EMPTY_RANGE.get("results"), "crypto").empty


def test_grouped_conventions_land_on_the_same_date():
    stocks = parse_grouped_results(payloads.GROUPED_STOCKS["results"], "stock")
    crypto = parse_grouped_results(payloads.GROUPED_CRYPTO["results"], "crypto")
    assert stocks["symbol"].tolist() == ["AAPL", "BRK.B"]
    assert set(dates(stocks)) == {dt.date(2024, 3, 8)}
    assert crypto["symbol"].tolist() == ["BTCUSD"] and dates(crypto) == [dt.date(2024, 3, 8)]


@pytest.mark.parametrize(
    "t_ms, asset_class, expected",
    [
        (1112331600000, "stock", dt.date(2005, 4, 1)),  # 05:00Z, EST
        (1112587200000, "stock", dt.date(2005, 4, 4)),  # 04:00Z, EDT
        (1672531200000, "crypto", dt.date(2023, 1, 1)),
        (1709942399999, "crypto", dt.date(2024, 3, 8)),  # 23:59:59.999 UTC
        (1709931600000, "stock", dt.date(2024, 3, 8)),  # 16:00 New York
    ],
)
def test_session_date_rule(t_ms, asset_class, expected):
    assert session_date_from_ms(t_ms, asset_class) == expected


@pytest.mark.skipif(not FIXTURES.exists(), reason="../shared/polygon_fixtures not beside the project")
def test_recorded_responses_parse():
    body = json.loads((FIXTURES / "aggs_range_AAPL_1_day_2005-04-01_2005-04-04.json").read_text())
    frame = parse_aggregate_results(body["results"], "stock")
    assert dates(frame) == [dt.date(2005, 4, 1), dt.date(2005, 4, 4)]
    grouped = json.loads((FIXTURES / "grouped_stocks_2005-04-04_HAND_EDITED.json").read_text())
    assert parse_grouped_results(grouped["results"], "stock")["symbol"].tolist() == ["GIK"]


def _range_rows(asset_class: str, days: list, overrides: dict | None = None) -> list[dict]:
    from market_pipeline.calendars import ms_at_local_midnight

    rows = []
    for i, day in enumerate(days):
        row = {"o": 10.0 + i, "h": 11.5 + i, "l": 9.25 + i, "c": 10.5 + i, "v": 1000 + 10 * i, "vw": 10.4 + i,
               "n": 50 + i, "t": ms_at_local_midnight(day, asset_class)}
        row.update((overrides or {}).get(i, {}))
        rows.append({k: v for k, v in row.items() if v is not ...})
    return json.loads(json.dumps(rows))  # as the wire gives them


@pytest.mark.parametrize(
    "case",
    ["plain", "crypto", "no_vwap_or_n", "some_vwap_missing", "unordered_and_duplicated", "integral_floats"],
)
def test_the_one_pass_range_frame_is_what_split_and_parse_give(case):
    """`usable_range_frame` (the fetch's fast path) equals split_bars + parse_aggregate_results."""
    from market_pipeline.polygon.validate_bars import split_bars, usable_range_frame

    asset_class = "crypto" if case == "crypto" else "stock"
    days = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(40)]
    if asset_class == "stock":
        days = [d for d in days if d.weekday() < 5 and d != dt.date(2024, 3, 29)]  # Good Friday
    overrides = {}
    if case == "no_vwap_or_n":
        overrides = {i: {"vw": ..., "n": ...} for i in range(len(days))}
    elif case == "some_vwap_missing":
        overrides = {2: {"vw": ...}, 5: {"n": ...}, 6: {"vw": None}}
    elif case == "integral_floats":
        overrides = {i: {"v": 1000.0 + i, "n": 7.0} for i in range(len(days))}
    rows = _range_rows(asset_class, days, overrides)
    last = days[-1]
    if case == "unordered_and_duplicated":  # the one pass declines: each row is looked at
        rows = rows[10:] + rows[:10] + [dict(rows[3])] + [dict(rows[5], c=99.0)]
        assert usable_range_frame(rows, asset_class, last) is None
        usable, aside = split_bars(rows, asset_class, last, "range")
        assert dates(parse_aggregate_results(usable, asset_class)) == [d for d in days if d != days[5]]
        assert [(a.date, a.reason) for a in aside] == [(days[5], "conflicting duplicates")] * 2
        return
    usable, aside = split_bars(rows, asset_class, last, "range")
    assert aside == []
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(usable_range_frame(rows, asset_class, last), parse_aggregate_results(usable, asset_class))


@pytest.mark.parametrize(
    "override",
    [{"o": True}, {"c": "10.5"}, {"h": None}, {"v": float("nan")}, {"vw": float("inf")}, {"n": "x"}, {"t": 1.5},
     {"t": 0}],
)
def test_the_one_pass_range_frame_leaves_anything_unusual_to_split_bars(override):
    from market_pipeline.polygon.validate_bars import usable_range_frame

    days = [dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 6)]
    rows = _range_rows("stock", days)
    rows[1].update(override)
    assert usable_range_frame(rows, "stock", days[-1]) is None
    assert usable_range_frame(_range_rows("stock", days), "stock", days[1]) is None  # a bar after the last session
