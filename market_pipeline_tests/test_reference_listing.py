"""The list of tickers as reference records, pure: a page's rows validated like a ticker detail answer,
malformed pages refused, the page plan (bounds, yield, leftovers) and what a list row keeps of the
stored record (list date, reused ticker). Rows are written from the wire facts of POLYGON_API.md."""

import datetime as dt

import pytest

from market_pipeline.reference.listing import (
    LIST_DATE_PENDING,
    ListPageError,
    ListWalk,
    known_inactive,
    listed_record,
    parse_list_page,
)
from market_pipeline.reference.records import ReferenceRecord


def row(ticker: str, **fields) -> dict:
    out = {"ticker": ticker, "name": f"{ticker} Inc.", "market": "stocks", "locale": "us", "primary_exchange": "XNYS",
           "type": "CS", "active": True, "currency_name": "usd", "cik": "0000000001", "composite_figi": f"BBG{ticker:0>9}",
           "share_class_figi": f"BBGS{ticker:0>8}", "last_updated_utc": "2024-01-02T00:00:00Z"}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


def page(*tickers: str, more: bool = False, **by_ticker) -> dict:
    body = {"results": [by_ticker.get(t) or row(t) for t in tickers], "status": "OK", "request_id": "r", "count": len(tickers)}
    if more:
        body["next_url"] = "https://api.massive.com/v3/reference/tickers?cursor=abc"
    return body


def test_rows_validated_like_a_detail_answer():
    listed = parse_list_page(page("AAA", "BBB", "CCC", "DDD", "EEE", BBB=row("BBB", type=None), CCC=row("CCC", type="WARRANT"),
                                  DDD=row("DDD", type="ETF"), EEE=row("EEE", market="crypto")))
    stock = lambda t: listed_record(listed.rows[t], t, "stock", None)[0]  # noqa: E731
    assert stock("AAA").status == "ok" and stock("AAA").status_text == LIST_DATE_PENDING and stock("AAA").list_date is None
    assert stock("BBB").status == "incomplete" and "no type" in stock("BBB").status_text
    assert stock("CCC").status == "unknown_type"
    assert stock("DDD").status == "mismatch" and "--asset-class etf" in stock("DDD").status_text
    assert stock("EEE").status == "mismatch" and "crypto pair" in stock("EEE").status_text


def test_malformed_pages_and_rows():
    with pytest.raises(ListPageError, match="not a list"):
        parse_list_page({"results": {"ticker": "AAA"}, "status": "OK"})
    with pytest.raises(ListPageError, match="names a ticker"):
        parse_list_page({"results": [{"name": "no ticker"}, 7]})
    with pytest.raises(ListPageError, match="not a JSON object"):
        parse_list_page(["AAA"])
    listed = parse_list_page({"results": [row("AAA"), {"name": "x"}, row("AAA", name="again")]})
    assert list(listed.rows) == ["AAA"] and listed.rows["AAA"]["name"] == "AAA Inc." and len(listed.problems) == 2
    empty = parse_list_page({"status": "OK", "request_id": "r", "count": 0})  # no rows in the range
    assert empty.rows == {} and not empty.more


def test_walk_moves_its_lower_bound_to_the_next_ticker_not_answered():
    walk = ListWalk("stocks", ["MSFT", "AAPL", "ZM", "KO", "JPM"], limit=3)
    query = walk.next_query()
    assert query == {"market": "stocks", "active": "true", "ticker.gte": "AAPL", "ticker.lte": "ZM", "limit": "3",
                     "sort": "ticker", "order": "asc"}
    found, absent = walk.take(parse_list_page(page("AAPL", "AB", "JPM", more=True)))
    assert list(found) == ["AAPL", "JPM"] and absent == []  # KO might be on the next page
    assert walk.next_query()["ticker.gte"] == "KO"
    found, absent = walk.take(parse_list_page(page("KOF", "MSFT", "NKE", more=True)))
    assert list(found) == ["MSFT"] and absent == ["KO"]  # the page went past KO: not in the active list
    assert walk.next_query() is None and walk.leftover() == ["ZM"]  # one left: its own lookup


def test_walk_stops_paging_when_pages_answer_too_few():
    walk = ListWalk("stocks", ["A", "F", "K", "P", "U"], limit=2)
    walk.take(parse_list_page(page("A", "B", more=True)))  # one ticker for a page: lookups cost as little
    assert walk.next_query() is None and walk.leftover() == ["F", "K", "P", "U"]
    last = ListWalk("crypto", ["X:BTCUSD", "X:ETHUSD"], type=None)
    found, absent = last.take(parse_list_page(page("X:BTCUSD")))  # no next_url: the whole range answered
    assert list(found) == ["X:BTCUSD"] and absent == ["X:ETHUSD"] and last.next_query() is None
    assert ListWalk("stocks", ["QQQ", "SPY"], type="ETF").next_query()["type"] == "ETF"


def test_a_page_that_does_not_move_is_refused():
    walk = ListWalk("stocks", ["MSFT", "NVDA"])
    with pytest.raises(ListPageError, match="does not move"):
        walk.take(parse_list_page(page("AAPL", "AMZN", more=True)))  # bounds ignored: it starts from the top
    assert walk.remaining == ["MSFT", "NVDA"]


def test_list_row_keeps_the_stored_list_date_and_asks_for_a_reused_tickers_lookup():
    day = dt.date(2001, 5, 4)
    stored = ReferenceRecord("AAA", "stock", "ok", composite_figi="BBG000000AAA", list_date=day, active=True)
    record, lookup = listed_record(row("AAA"), "AAA", "stock", stored)
    assert record.list_date == day and record.status == "ok" and not record.status_text and not lookup
    reused, lookup = listed_record(row("AAA", composite_figi="BBG0NEWONE01"), "AAA", "stock", stored)
    assert reused.status == "mismatch" and reused.composite_figi == "BBG000000AAA" and lookup  # the new list date bounds it
    ended = ReferenceRecord("AAA", "stock", "mismatch", composite_figi="BBG000000AAA", active=False, delisted_on=day)
    again, lookup = listed_record(row("AAA", composite_figi="BBG0NEWONE01"), "AAA", "stock", ended)
    assert again.status == "mismatch" and again.delisted_on == day and not lookup  # bounded before: nothing new
    assert known_inactive(ended) and not known_inactive(stored)
    assert not known_inactive(ReferenceRecord("AAA", "stock", "error", active=False))
