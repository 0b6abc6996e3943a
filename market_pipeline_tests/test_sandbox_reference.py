"""The sandbox's reference data and lifecycle over HTTP: FIGIs, list dates, delistings, ticker
changes (FB -> META), a reused ticker, and the knobs that set them per ticker."""

import datetime as dt

import pytest
import requests

from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer

NOW = dt.datetime(2026, 11, 20, 23, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def server():
    with SandboxServer(now=lambda: NOW) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {SANDBOX_API_KEY}"
        yield s


def detail(server, session, ticker, **params):
    return session.get(f"{server.url}/v3/reference/tickers/{ticker}", params=params)


def dates(server, session, ticker, start, end):
    body = session.get(f"{server.url}/v2/aggs/ticker/{ticker}/range/1/day/{start}/{end}", params={"limit": 50000}).json()
    return [dt.datetime.fromtimestamp(b["t"] / 1000, dt.timezone.utc).date() for b in body.get("results", [])]


def test_detail_has_identity_fields(server, session):
    row = detail(server, session, "AAPL").json()["results"]
    assert row["active"] is True and row["type"] == "CS" and len(row["composite_figi"]) == 12
    assert row["share_class_figi"] != row["composite_figi"] and row["list_date"] and "delisted_utc" not in row
    assert detail(server, session, "SPY").json()["results"]["type"] == "ETF"


def test_delisted_ticker_has_no_bars_after_its_last_session(server, session):
    row = detail(server, session, "TWTR").json()["results"]
    assert row["active"] is False and row["delisted_utc"].startswith("2022-10-27")
    served = dates(server, session, "TWTR", "2022-10-01", "2022-12-31")
    assert served and max(served) <= dt.date(2022, 10, 27)
    assert detail(server, session, "TWTR", date="2021-01-04").json()["results"]["active"] is True
    inactive = session.get(f"{server.url}/v3/reference/tickers", params={"active": "false"}).json()["results"]
    assert "TWTR" in {r["ticker"] for r in inactive}


def test_fb_became_meta_with_one_figi(server, session):
    fb, meta = detail(server, session, "FB").json()["results"], detail(server, session, "META").json()["results"]
    assert fb["composite_figi"] == meta["composite_figi"] == "BBG000MM2P62"
    assert fb["active"] is False and meta["active"] is True
    assert max(dates(server, session, "FB", "2022-05-01", "2022-07-31")) < dt.date(2022, 6, 9)
    assert min(dates(server, session, "META", "2022-05-01", "2022-07-31")) >= dt.date(2022, 6, 9)
    for ident in ("META", "FB", "BBG000MM2P62"):
        body = session.get(f"{server.url}/vX/reference/tickers/{ident}/events", params={"types": "ticker_change"}).json()
        assert body["status"] == "OK" and body["results"]["figi"] == "BBG000MM2P62"
        assert [e["ticker_change"]["ticker"] for e in body["results"]["events"]] == ["META", "FB"]
    assert session.get(f"{server.url}/vX/reference/tickers/NOPE/events").status_code == 404
    assert detail(server, session, "META", date="2020-01-02").status_code == 404  # not yet META


def test_reused_ticker_changes_figi(server, session):
    now = detail(server, session, "RUSE").json()["results"]
    then = detail(server, session, "RUSE", date="2019-01-02").json()["results"]
    assert now["composite_figi"] != then["composite_figi"] and now["active"] is True
    assert not dates(server, session, "RUSE", "2021-01-01", "2022-12-31")


def test_knobs_delist_rename_and_reuse():
    with SandboxServer(now=lambda: NOW) as server, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {SANDBOX_API_KEY}"
        server.delist("MSFT", "2024-03-08")
        assert max(dates(server, session, "MSFT", "2024-03-01", "2024-03-31")) == dt.date(2024, 3, 8)
        assert detail(server, session, "MSFT").json()["results"]["delisted_utc"].startswith("2024-03-08")
        grouped = session.get(f"{server.url}/v2/aggs/grouped/locale/us/market/stocks/2024-03-11").json()["results"]
        assert "MSFT" not in {r["T"] for r in grouped}
        server.rename_ticker("KO", "KOX", "2024-01-02")
        assert detail(server, session, "KOX").json()["results"]["composite_figi"] == detail(server, session, "KO").json()["results"]["composite_figi"]
        server.reuse_ticker("KO", "2025-01-02")
        assert detail(server, session, "KO").json()["results"]["composite_figi"] != detail(server, session, "KOX").json()["results"]["composite_figi"]
        server.delist("X:BTCUSD", "2024-01-01")
        crypto = detail(server, session, "X:BTCUSD").json()["results"]
        assert crypto["market"] == "crypto" and crypto["active"] is False
