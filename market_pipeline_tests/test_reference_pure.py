"""The pure symbol-lifecycle package: parsing reference answers, mismatches, renames, freshness."""

import datetime as dt

import pytest

from market_pipeline.reference import (
    RenameRefused,
    classify,
    evaluate_freshness,
    last_trading_session,
    not_found_record,
    parse_ticker_details,
    parse_ticker_events,
    plan_rename,
    rename_detected,
    verify_message,
)

UTC = dt.timezone.utc


def detail(**fields):
    base = {
        "ticker": "AAPL", "name": "Apple Inc.", "market": "stocks", "locale": "us", "primary_exchange": "XNAS",
        "type": "CS", "active": True, "currency_name": "usd", "composite_figi": "BBG000B9XRY4",
        "share_class_figi": "BBG001S5N8V8", "list_date": "1980-12-12",
    }
    base.update(fields)
    return {"results": {k: v for k, v in base.items() if v is not None}, "status": "OK", "request_id": "x"}


def test_a_full_answer_gives_every_identity_field():
    record = parse_ticker_details(detail(), "AAPL", "stock")
    assert record.status == "ok" and record.status_text == ""
    assert (record.name, record.type, record.primary_exchange) == ("Apple Inc.", "CS", "XNAS")
    assert (record.composite_figi, record.share_class_figi) == ("BBG000B9XRY4", "BBG001S5N8V8")
    assert record.list_date == dt.date(1980, 12, 12) and record.active is True and record.delisted_on is None
    assert classify(record) == record and verify_message(record) is None


def test_a_delisted_answer_carries_its_delisting_date():
    record = parse_ticker_details(detail(ticker="DLST", active=False, delisted_utc="2023-01-06T00:00:00Z"), "DLST", "stock")
    assert record.active is False and record.delisted_on == dt.date(2023, 1, 6)
    assert classify(record).status == "ok"  # a delisted stock is not a mismatch


@pytest.mark.parametrize(
    "fields, status, words",
    [
        ({"type": None}, "incomplete", "no type"),
        ({"composite_figi": None}, "incomplete", "no composite FIGI"),
        ({"active": "yes"}, "incomplete", "no active flag"),
        ({"list_date": "12/12/1980"}, "incomplete", "list_date"),
        ({"type": "WARRANT"}, "unknown_type", "'WARRANT'"),
    ],
)
def test_missing_fields_and_unknown_types_give_a_status_not_a_crash(fields, status, words):
    record = parse_ticker_details(detail(**fields), "AAPL", "stock")
    assert record.status == status and words in record.status_text


@pytest.mark.parametrize("body", [None, [], {"status": "OK"}, {"results": []}, {"results": "AAPL"}])
def test_an_answer_without_a_ticker_is_invalid(body):
    record = parse_ticker_details(body, "AAPL", "stock")
    assert record.status == "invalid" and verify_message(record)


def test_spy_registered_as_stock_is_a_mismatch_naming_the_etf():
    record = classify(parse_ticker_details(detail(ticker="SPY", type="ETF", name="SPDR"), "SPY", "stock"))
    assert record.status == "mismatch"
    assert "SPY" in record.status_text and "ETF" in record.status_text and "--asset-class etf" in record.status_text
    assert verify_message(record) == record.status_text


def test_common_stock_registered_as_etf_is_a_mismatch():
    record = classify(parse_ticker_details(detail(), "AAPL", "etf"))
    assert record.status == "mismatch" and "common stock (type CS)" in record.status_text


def test_inactive_crypto_pair_is_a_mismatch_and_unknown_ticker_refused():
    body = {"results": {"ticker": "X:OLDUSD", "name": "Old", "market": "crypto", "active": False}, "status": "OK"}
    record = classify(parse_ticker_details(body, "OLDUSD", "crypto"))
    assert record.status == "mismatch" and "inactive" in record.status_text
    assert "does not know" in verify_message(not_found_record("APPL", "stock"))


EVENTS = {
    "results": {
        "name": "Meta Platforms, Inc. Class A Common Stock", "figi": "BBG000MM2P62", "cik": "0001326801",
        "events": [
            {"ticker_change": {"ticker": "META"}, "type": "ticker_change", "date": "2022-06-09"},
            {"ticker_change": {"ticker": "FB"}, "type": "ticker_change", "date": "2012-05-18"},
            {"ticker_change": {}, "type": "ticker_change", "date": "2013-01-01"},
            {"type": "ticker_change", "date": "not a date", "ticker_change": {"ticker": "X"}},
        ],
    },
    "status": "OK",
}


def test_ticker_events_are_ordered_and_bad_events_named():
    events = parse_ticker_events(EVENTS)
    assert events.figi == "BBG000MM2P62" and events.tickers() == ["FB", "META"] and events.current_ticker == "META"
    assert len(events.problems) == 2
    change = rename_detected("FB", events)
    assert change.ticker == "META" and change.date == dt.date(2022, 6, 9)
    assert rename_detected("META", events) is None and rename_detected("GOOG", events) is None
    assert parse_ticker_events({"status": "OK"}).changes == ()


def test_rename_of_one_security_is_allowed_and_a_reused_ticker_refused():
    plan = plan_rename("FB", "META", old_figi="BBG000MM2P62", new_figi="BBG000MM2P62")
    assert plan.figi == "BBG000MM2P62"
    with pytest.raises(RenameRefused, match="reused ticker"):
        plan_rename("FB", "META", old_figi="BBG000MM2P62", new_figi="BBG00OTHER01")
    # no FIGI stored for the old symbol: the new ticker's own history must list it
    assert plan_rename("FB", "META", old_figi=None, new_figi=None, new_events=parse_ticker_events(EVENTS)).figi
    with pytest.raises(RenameRefused, match="cannot confirm"):
        plan_rename("GOOG", "META", old_figi=None, new_figi="BBG000MM2P62", new_events=parse_ticker_events(EVENTS))
    with pytest.raises(RenameRefused, match="same symbol"):
        plan_rename("FB", "FB", old_figi="A", new_figi="A")


# Friday 2025-01-10 is a session; 2025-01-09 was an ad-hoc closure (national day of mourning).
FRI_EVENING = dt.datetime(2025, 1, 11, 0, 30, tzinfo=UTC)  # 19:30 New York: close + 3 h publication delay


def test_fresh_when_the_last_bar_is_the_latest_published_session():
    result = evaluate_freshness("AAPL", "stock", dt.date(2025, 1, 10), FRI_EVENING)
    assert result.passed and result.state == "fresh" and result.expected == dt.date(2025, 1, 10)


def test_publication_delay_keeps_the_previous_session_fresh_right_after_the_close():
    just_closed = dt.datetime(2025, 1, 10, 21, 30, tzinfo=UTC)  # 16:30 New York
    result = evaluate_freshness("AAPL", "stock", dt.date(2025, 1, 8), just_closed)
    assert result.passed and result.expected == dt.date(2025, 1, 8)  # 01-09 closed, 01-10 not published


def test_stale_names_the_missing_sessions_skipping_closures():
    result = evaluate_freshness("AAPL", "stock", dt.date(2025, 1, 6), FRI_EVENING)
    assert not result.passed and result.state == "stale" and result.missing_count == 3
    assert result.missing == (dt.date(2025, 1, 7), dt.date(2025, 1, 8), dt.date(2025, 1, 10))
    assert "2025-01-07, 2025-01-08, 2025-01-10" in result.description


def test_crypto_freshness_is_the_utc_day():
    now = dt.datetime(2025, 1, 12, 3, 0, tzinfo=UTC)
    assert evaluate_freshness("BTCUSD", "crypto", dt.date(2025, 1, 11), now).passed
    stale = evaluate_freshness("BTCUSD", "crypto", dt.date(2025, 1, 9), now)
    assert stale.missing == (dt.date(2025, 1, 10), dt.date(2025, 1, 11))


def test_delisted_symbol_is_expected_stale_once_its_history_is_complete():
    result = evaluate_freshness("DLST", "stock", dt.date(2023, 1, 6), FRI_EVENING, delisted_on=dt.date(2023, 1, 6))
    assert result.passed and result.state == "delisted" and "expected-stale" in result.description
    behind = evaluate_freshness("DLST", "stock", dt.date(2023, 1, 4), FRI_EVENING, delisted_on=dt.date(2023, 1, 6))
    assert not behind.passed and behind.missing == (dt.date(2023, 1, 5), dt.date(2023, 1, 6))
    # a delisting announced on a weekend: the last session is the Friday before
    assert last_trading_session("stock", dt.date(2023, 1, 8)) == dt.date(2023, 1, 6)


def test_no_bars_fails_and_naive_now_is_refused():
    assert evaluate_freshness("AAPL", "stock", None, FRI_EVENING).state == "empty"
    with pytest.raises(ValueError):
        evaluate_freshness("AAPL", "stock", None, dt.datetime(2025, 1, 10))
