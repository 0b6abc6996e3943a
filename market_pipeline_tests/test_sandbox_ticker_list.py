"""The sandbox's list of tickers (`/v3/reference/tickers`) over real sockets: its filters, bounds,
sort and order, `limit` up to 1,000, cursor pages, the symbol lifecycle in its active and inactive
rows (no `list_date` in any row), and the knobs that fail, loop, truncate or malform it."""

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer
from market_pipeline.sandbox.protocol import decode_cursor
from market_pipeline_tests.test_sandbox import fixture, follow_pages

NOW = dt.datetime(2026, 11, 20, 23, 0, tzinfo=dt.timezone.utc)
MANY = [f"Q{a}{b}{c}" for a in "ABCDEFGHIJ" for b in "ABCDEFGHIJ" for c in "ABCDEFGHIJKL"]  # 1,200 stocks


@pytest.fixture(scope="module")
def api():
    """The sandbox with 1,200 more stocks, an ETF, a pair and a delisted pair; a session sending the key."""
    with SandboxServer(now=lambda: NOW) as sandbox, requests.Session() as keyed:
        sandbox.add_to_universe(MANY)
        sandbox.add_to_universe(["QETF"], type="ETF")
        sandbox.add_to_universe(["DOGEUSD"], market="crypto")
        sandbox.delist("X:SOLUSD", "2026-01-02")
        keyed.headers["Authorization"] = f"Bearer {SANDBOX_API_KEY}"
        yield sandbox, keyed


def listing(server, session, **params) -> requests.Response:
    return session.get(f"{server.url}/v3/reference/tickers", params=params)


def tickers(body) -> list[str]:
    return [row["ticker"] for row in body["results"]]


def all_rows(server, session, **params) -> list[dict]:
    return [row for body in follow_pages(session, listing(server, session, **params)) for row in body["results"]]


def test_bounds_market_type_and_exact_ticker(api):
    server, session = api
    body = listing(server, session, **{"market": "stocks", "ticker.gte": "QAAA", "ticker.lte": "QAAE", "limit": 1000}).json()
    assert tickers(body) == ["QAAA", "QAAB", "QAAC", "QAAD", "QAAE"] and body["count"] == 5 and "next_url" not in body
    body = listing(server, session, **{"ticker.gt": "QAAA", "ticker.lt": "QAAE"}).json()
    assert tickers(body) == ["QAAB", "QAAC", "QAAD"]
    assert tickers(listing(server, session, ticker="MSFT").json()) == ["MSFT"]
    etfs = tickers(listing(server, session, type="ETF", limit=1000).json())
    assert {"SPY", "QQQ", "IWM", "QETF"} <= set(etfs) and "AAPL" not in etfs
    assert tickers(listing(server, session, exchange="ARCX", type="ETF", limit=1000).json()) == ["IWM", "QETF", "SPY"]
    crypto = listing(server, session, market="crypto").json()["results"]
    assert [r["ticker"] for r in crypto] == ["X:BTCUSD", "X:DOGEUSD", "X:ETHUSD"]  # SOLUSD is delisted
    assert all(r["market"] == "crypto" and "primary_exchange" not in r for r in crypto)
    inactive = listing(server, session, market="crypto", active="false").json()["results"]
    assert [(r["ticker"], r["active"], r["delisted_utc"][:10]) for r in inactive] == [("X:SOLUSD", False, "2026-01-02")]


def test_limit_default_maximum_and_cursor_pages(api):
    server, session = api
    assert listing(server, session).json()["count"] == 100  # the default limit
    first = listing(server, session, market="stocks", limit=5000)  # more than the maximum asks for 1,000
    body = first.json()
    assert body["count"] == 1000 and "next_url" in body
    url = body["next_url"]
    assert "apiKey" not in url and SANDBOX_API_KEY not in url
    parts = urlsplit(url)
    assert parts.path == "/v3/reference/tickers" and list(parse_qs(parts.query)) == ["cursor"]
    kept = decode_cursor(parse_qs(parts.query)["cursor"][0])
    assert kept["market"] == "stocks" and kept["limit"] == "1000" and kept["sort"] == "ticker" and "page_marker" in kept
    rows = all_rows(server, session, market="stocks", limit=1000)
    names = [r["ticker"] for r in rows]
    assert names == sorted(names) and len(names) == len(set(names)) and set(MANY) <= set(names)
    assert len(rows) > 1200 and listing(server, session, cursor="@@not-a-cursor").status_code == 400


def test_sort_and_order_through_cursor_pages(api):
    server, session = api
    down = [r["ticker"] for r in all_rows(server, session, market="stocks", order="desc", limit=300)]
    assert down == sorted(down, reverse=True) and len(down) > 1200
    by_name = all_rows(server, session, market="stocks", sort="name", limit=250)
    assert [r["name"] for r in by_name] == sorted(r["name"] for r in by_name)
    assert listing(server, session, sort="colour").status_code == 400
    assert listing(server, session, order="up").status_code == 400


def test_rows_follow_the_lifecycle_without_list_date(api):
    server, session = api
    recorded = set(fixture("reference_tickers_page1.json")["results"][0])
    active = {r["ticker"]: r for r in all_rows(server, session, market="stocks", limit=1000)}
    assert "FB" not in active and "TWTR" not in active
    assert active["META"]["composite_figi"] == "BBG000MM2P62" and active["RUSE"]["composite_figi"] == "BBG000RUSEB2"
    assert all(set(row) == recorded for row in active.values())  # the recorded page's fields, no list_date
    inactive = {(r["ticker"], r["composite_figi"]): r for r in all_rows(server, session, market="stocks", active="false", limit=1000)}
    assert inactive[("FB", "BBG000MM2P62")]["delisted_utc"].startswith("2022-06-08")
    assert inactive[("TWTR", "BBG000H6HNW3")]["delisted_utc"].startswith("2022-10-27")
    assert inactive[("RUSE", "BBG000RUSEA1")]["delisted_utc"].startswith("2020-06-30")
    assert all(r["active"] is False and "list_date" not in r for r in inactive.values())
    detail = session.get(f"{server.url}/v3/reference/tickers/AAPL").json()["results"]
    row = active["AAPL"]
    assert {k: v for k, v in detail.items() if k != "list_date"} == {k: v for k, v in row.items() if k != "last_updated_utc"}


def test_fault_knobs(api):
    server, session = api
    bounds = {"market": "stocks", "ticker.gte": "QJAA", "limit": 10}
    server.ticker_list_fault("error", times=2, status=503)
    assert [listing(server, session, **bounds).status_code for _ in range(3)] == [503, 503, 200]
    server.ticker_list_fault("error", times=1, status=429)
    limited = listing(server, session, **bounds)
    assert limited.status_code == 429 and "exceeded the maximum requests" in limited.json()["error"]

    server.ticker_list_fault("loop", times=2)
    first = listing(server, session, **bounds).json()
    again = session.get(first["next_url"]).json()
    assert tickers(again) == tickers(first) and again["next_url"] == first["next_url"]  # back to the first page
    healed = session.get(again["next_url"]).json()  # the first page once more, now with its real next_url
    assert tickers(healed) == tickers(first) and healed["next_url"] != first["next_url"]
    assert tickers(session.get(healed["next_url"]).json())[0] == "QJAK"

    server.ticker_list_fault("ignore_bounds", times=1)
    assert tickers(listing(server, session, **bounds).json())[0] < "QJAA"
    assert tickers(listing(server, session, **bounds).json())[0] == "QJAA"

    server.ticker_list_fault("truncated", times=1)
    cut = listing(server, session, **bounds)
    with pytest.raises(ValueError):
        cut.json()
    server.ticker_list_fault("malformed")  # until cleared
    assert [isinstance(listing(server, session, **bounds).json()["results"], list) for _ in range(2)] == [False, False]
    server.clear_ticker_list_faults()
    assert isinstance(listing(server, session, **bounds).json()["results"], list)
    with pytest.raises(ValueError, match="unknown ticker list fault"):
        server.ticker_list_fault("slow")
    with pytest.raises(ValueError, match="429 or 5xx"):
        server.ticker_list_fault("error", status=404)
