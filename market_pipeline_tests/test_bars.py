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
