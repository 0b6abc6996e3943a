"""The Polygon sandbox, over real sockets with `requests`.

Wire facts are those of /work/shared/POLYGON_API.md; shapes are compared with the recorded real
responses in /work/shared/polygon_fixtures when that folder is present.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests

from market_pipeline import calendars
from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer, synthetic_bars
from market_pipeline.sandbox.market import CORRUPTIONS, SYNTHETIC_SUFFIX
from market_pipeline_tests.waiting import scaled

UTC = dt.timezone.utc
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "polygon_fixtures"
# A fixed "now": Friday 2025-01-17 after the close, so the latest completed session is that day.
NOW = dt.datetime(2025, 1, 17, 23, 0, tzinfo=UTC)
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"recorded Polygon responses not found at {FIXTURES}")
    return json.loads(path.read_text())


def ms(year: int, month: int, day: int, hour: int = 0, tz=UTC) -> int:
    return int(dt.datetime(year, month, day, hour, tzinfo=tz).timestamp() * 1000)


def bar_dates(body: dict, tz=calendars.NEW_YORK) -> list[str]:
    return [dt.datetime.fromtimestamp(b["t"] / 1000, tz).date().isoformat() for b in body.get("results", [])]


@pytest.fixture
def server():
    with SandboxServer(now=lambda: NOW) as sandbox:
        yield sandbox


@pytest.fixture
def session():
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {SANDBOX_API_KEY}"
        yield s


def get_range(session, server, ticker, start, end, **params) -> requests.Response:
    return session.get(f"{server.url}/v2/aggs/ticker/{ticker}/range/1/day/{start}/{end}", params=params)


def grouped_url(server, market: str, day: str) -> str:
    locale = "global" if market == "crypto" else "us"
    return f"{server.url}/v2/aggs/grouped/locale/{locale}/market/{market}/{day}"


def follow_pages(session, first: requests.Response) -> list[dict]:
    """Every page's body, following next_url with the session's header only."""
    bodies, seen = [first.json()], set()
    while "next_url" in bodies[-1]:
        url = bodies[-1]["next_url"]
        assert url not in seen, "next_url repeated"
        seen.add(url)
        response = session.get(url)
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    return bodies


# --------------------------------------------------------------------------------------------
# Range endpoint


def test_range_stock_across_dst_change(server, session):
    response = get_range(session, server, "AAPL", "2024-03-07", "2024-03-12", limit=50000)
    assert response.status_code == 200
    body = response.json()
    assert bar_dates(body) == ["2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12"]
    by_date = dict(zip(bar_dates(body), body["results"]))
    assert by_date["2024-03-08"]["t"] == ms(2024, 3, 8, 5)  # EST: 00:00 New York is 05:00Z
    assert by_date["2024-03-11"]["t"] == ms(2024, 3, 11, 4)  # EDT: 04:00Z
    assert body["ticker"] == "AAPL" and body["status"] == "OK" and body["adjusted"] is True
    assert body["queryCount"] == body["resultsCount"] == body["count"] == 4
    assert HEX32.match(body["request_id"]) and response.headers["X-Request-Id"] == body["request_id"]
    assert response.headers["X-Sandbox"] == "synthetic"
    assert "next_url" not in body


def test_range_skips_holidays(server, session):
    body = get_range(session, server, "SPY", "2024-07-01", "2024-07-08").json()
    assert bar_dates(body) == ["2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05", "2024-07-08"]


def test_range_crypto_has_weekend_bars_at_utc_midnight(server, session):
    body = get_range(session, server, "X:BTCUSD", "2024-03-08", "2024-03-11").json()
    assert [b["t"] for b in body["results"]] == [ms(2024, 3, d) for d in (8, 9, 10, 11)]
    assert bar_dates(body, UTC) == ["2024-03-08", "2024-03-09", "2024-03-10", "2024-03-11"]


def test_range_ends_inclusive_and_ms_bounds(server, session):
    by_date = get_range(session, server, "MSFT", "2024-03-08", "2024-03-11").json()
    assert bar_dates(by_date) == ["2024-03-08", "2024-03-11"]
    start, end = ms(2024, 3, 8, 5), ms(2024, 3, 11, 4)  # exactly the two bars' t
    by_ms = get_range(session, server, "MSFT", start, end).json()
    assert by_ms["results"] == by_date["results"]
    just_after = get_range(session, server, "MSFT", start + 1, end).json()
    assert bar_dates(just_after) == ["2024-03-11"]


def test_range_400_bodies(server, session):
    response = get_range(session, server, "AAPL", "2024-13-45", "2024-03-01")
    assert response.status_code == 400
    body = response.json()
    assert body == {
        "status": "ERROR",
        "request_id": body["request_id"],
        "error": "Could not parse the time parameter: 'from'. Use YYYY-MM-DD or Unix MS Timestamps",
    }
    assert (
        get_range(session, server, "AAPL", "2024-03-01", "soon")
        .json()["error"]
        .startswith("Could not parse the time parameter: 'to'.")
    )
    response = get_range(session, server, "AAPL", "2024-03-07", "2024-03-01")
    assert response.status_code == 400
    assert response.json()["error"] == "The parameter 'to' cannot be a time that occurs before 'from'"
    minute = session.get(f"{server.url}/v2/aggs/ticker/AAPL/range/5/minute/2024-03-01/2024-03-07")
    assert minute.status_code == 400 and minute.json()["status"] == "ERROR"


def test_range_extreme_bounds_and_bad_cursor(server, session):
    everything = get_range(session, server, "KO", "0001-01-01", "9999-12-31", limit=50000).json()
    assert bar_dates(everything)[0] == "1995-01-03" and bar_dates(everything)[-1] == NOW.date().isoformat()
    bad = session.get(
        f"{server.url}/v2/aggs/ticker/KO/range/1/day/2024-01-01/2024-02-01", params={"cursor": "%%%"}
    )
    assert bad.status_code == 400 and bad.json()["status"] == "ERROR"


def test_range_without_bars_has_no_results_or_count(server, session):
    response = get_range(session, server, "X:ETHUSD", "2031-01-01", "2031-01-05")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["ticker", "queryCount", "resultsCount", "adjusted", "status", "request_id"]
    assert body["queryCount"] == body["resultsCount"] == 0
    weekend = get_range(session, server, "AAPL", "2024-03-09", "2024-03-10").json()
    assert "results" not in weekend and "count" not in weekend


def test_range_body_shape_matches_recorded_response(server, session):
    recorded = fixture("aggs_range_AAPL_1_day_2005-04-01_2005-04-04.json")
    body = get_range(session, server, "AAPL", "2005-04-01", "2005-04-04").json()
    assert list(body) == list(recorded)
    assert [list(bar) for bar in body["results"]] == [list(bar) for bar in recorded["results"]]
    # The recorded t values are the same instants: the DST change fell between the two bars.
    assert [bar["t"] for bar in body["results"]] == [bar["t"] for bar in recorded["results"]]


def test_sort_desc_and_limit(server, session):
    ascending = get_range(session, server, "NVDA", "2024-01-01", "2024-03-31").json()["results"]
    descending = get_range(session, server, "NVDA", "2024-01-01", "2024-03-31", sort="desc").json()["results"]
    assert descending == ascending[::-1]
    limited = get_range(session, server, "NVDA", "2024-01-01", "2024-03-31", limit=10).json()
    assert limited["results"] == ascending[:10] and "next_url" in limited
    default = get_range(session, server, "NVDA", "1995-01-01", "2024-12-31").json()
    assert default["resultsCount"] == 5000  # the default limit


def test_never_serves_future_bars(session):
    before_close = dt.datetime(2024, 3, 8, 15, 0, tzinfo=calendars.NEW_YORK)
    with SandboxServer(now=lambda: before_close) as sandbox:
        stocks = get_range(session, sandbox, "AAPL", "2024-03-01", "2024-12-31").json()
        crypto = get_range(session, sandbox, "X:BTCUSD", "2024-03-01", "2024-12-31").json()
    assert bar_dates(stocks)[-1] == "2024-03-07"  # 2024-03-08 has not closed yet
    assert bar_dates(crypto, UTC)[-1] == "2024-03-07"  # yesterday in UTC


# --------------------------------------------------------------------------------------------
# Pagination


def test_pagination_follows_next_url_to_the_unpaged_result(server, session):
    unpaged = get_range(session, server, "GOOGL", "2023-01-01", "2024-12-31", limit=50000).json()["results"]
    server.page_size = 100
    first = get_range(session, server, "GOOGL", "2023-01-01", "2024-12-31", limit=50000)
    next_url = first.json()["next_url"]
    parts = urlsplit(next_url)
    assert next_url.startswith(server.url + "/v2/aggs/ticker/GOOGL/range/1/day/")
    assert list(parse_qs(parts.query)) == ["cursor"] and SANDBOX_API_KEY not in next_url
    cursor = parse_qs(parts.query)["cursor"][0]
    assert "=" not in cursor
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode() == "limit=50000&sort=asc"
    assert parts.path.split("/")[-2] == str(unpaged[100]["t"])  # from = the next bar's window start
    assert parts.path.split("/")[-1] == "2024-12-31"

    bodies = follow_pages(session, first)
    assert len(bodies) == -(-len(unpaged) // 100)
    assert all(len(b["results"]) <= 100 for b in bodies)
    union = [bar for body in bodies for bar in body["results"]]
    assert union == unpaged
    assert len({bar["t"] for bar in union}) == len(union)
    assert all(record.key_source == "header" for record in server.request_log())


def test_pagination_with_limit_below_page_size(server, session):
    everything = get_range(session, server, "AMZN", "2024-01-01", "2024-06-30", limit=50000).json()["results"]
    server.page_size = 50
    first = get_range(session, server, "AMZN", "2024-01-01", "2024-06-30", limit=20)
    bodies = follow_pages(session, first)
    assert all(len(b["results"]) <= 20 for b in bodies)
    assert [bar for body in bodies for bar in body["results"]] == everything


def test_desc_cursor_is_refused_like_the_real_api(server, session):
    server.page_size = 10
    body = get_range(session, server, "AMZN", "2024-01-01", "2024-06-30", sort="desc").json()
    assert session.get(body["next_url"]).status_code == 400


# --------------------------------------------------------------------------------------------
# Grouped daily


def test_grouped_stocks(server, session):
    response = session.get(grouped_url(server, "stocks", "2024-03-08"), params={"adjusted": "true"})
    assert response.status_code == 200
    body = response.json()
    assert "ticker" not in body
    rows = {row["T"]: row for row in body["results"]}
    assert {"AAPL", "MSFT", "BRK.B", "SPY", "QQQ", "IWM"} <= rows.keys()
    assert not any(ticker.startswith("X:") for ticker in rows)
    assert body["resultsCount"] == body["count"] == len(rows)
    close = ms(2024, 3, 8, 16, tz=calendars.NEW_YORK)
    assert {row["t"] for row in rows.values()} == {close}
    for ticker in ("AAPL", "BRK.B", "SPY"):
        (bar,) = get_range(session, server, ticker, "2024-03-08", "2024-03-08").json()["results"]
        assert {k: v for k, v in rows[ticker].items() if k not in ("T", "t")} == {
            k: v for k, v in bar.items() if k != "t"
        }


def test_grouped_crypto(server, session):
    body = session.get(grouped_url(server, "crypto", "2024-03-09")).json()  # a Saturday
    rows = {row["T"]: row for row in body["results"]}
    assert set(rows) == {"X:BTCUSD", "X:ETHUSD", "X:SOLUSD"}
    assert {row["t"] for row in rows.values()} == {ms(2024, 3, 9) + 86_399_999}
    (bar,) = get_range(session, server, "X:ETHUSD", "2024-03-09", "2024-03-09").json()["results"]
    assert rows["X:ETHUSD"]["c"] == bar["c"] and rows["X:ETHUSD"]["v"] == bar["v"]


def test_grouped_shape_matches_recorded_response(server, session):
    recorded = fixture("grouped_stocks_2005-04-04_HAND_EDITED.json")
    body = session.get(grouped_url(server, "stocks", "2005-04-04")).json()
    assert list(body) == list(recorded)
    assert list(body["results"][0]) == list(recorded["results"][0])


@pytest.mark.parametrize("day", ["2024-03-09", "2024-07-04"])
def test_grouped_stocks_weekend_and_holiday_have_no_results(server, session, day):
    response = session.get(
        grouped_url(server, "stocks", day), params={"include_otc": "false", "locale": "us"}
    )
    assert response.status_code == 200
    assert list(response.json()) == ["queryCount", "resultsCount", "adjusted", "status", "request_id"]


# --------------------------------------------------------------------------------------------
# Reference


def test_reference_detail(server, session):
    recorded = fixture("reference_ticker_AAPL.json")
    response = session.get(f"{server.url}/v3/reference/tickers/AAPL")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == list(recorded)
    assert set(body["results"]) <= set(recorded["results"])
    assert body["results"]["name"].endswith(SYNTHETIC_SUFFIX)
    assert body["results"]["type"] == "CS" and body["results"]["market"] == "stocks"
    assert session.get(f"{server.url}/v3/reference/tickers/SPY").json()["results"]["type"] == "ETF"
    crypto = session.get(f"{server.url}/v3/reference/tickers/X:BTCUSD").json()["results"]
    assert crypto["market"] == "crypto" and crypto["locale"] == "global" and "primary_exchange" not in crypto


def test_reference_unknown_ticker_is_404(server, session):
    response = session.get(f"{server.url}/v3/reference/tickers/APPL")
    assert response.status_code == 404
    body = response.json()
    assert body == {"status": "NOT_FOUND", "request_id": body["request_id"], "message": "Ticker not found."}
    # The aggregates serve any ticker: a typo still gets (synthetic) bars.
    assert get_range(session, server, "APPL", "2024-03-08", "2024-03-08").json()["resultsCount"] == 1


def test_reference_list_pagination(server, session):
    recorded = fixture("reference_tickers_page1.json")
    first = session.get(
        f"{server.url}/v3/reference/tickers", params={"market": "stocks", "active": "true", "limit": 5}
    )
    bodies = follow_pages(session, first)
    assert list(bodies[0]) == list(recorded)
    assert all(len(b["results"]) <= 5 for b in bodies) and "next_url" not in bodies[-1]
    tickers = [row["ticker"] for body in bodies for row in body["results"]]
    assert tickers == sorted(set(tickers)) and {"AAPL", "BRK.B", "SPY"} <= set(tickers)
    recorded_fields = set(recorded["results"][0])
    assert all(set(row) <= recorded_fields for body in bodies for row in body["results"])
    crypto = session.get(f"{server.url}/v3/reference/tickers", params={"market": "crypto"}).json()
    assert [row["ticker"] for row in crypto["results"]] == ["X:BTCUSD", "X:ETHUSD", "X:SOLUSD"]
    one = session.get(f"{server.url}/v3/reference/tickers", params={"ticker": "MSFT"}).json()
    assert [row["ticker"] for row in one["results"]] == ["MSFT"]


def test_add_to_universe(server, session):
    server.add_to_universe(["ZZZA", "ZZZB"], market="stocks", type="ETF")
    server.add_to_universe(["DOGEUSD"], market="crypto")
    detail = session.get(f"{server.url}/v3/reference/tickers/ZZZA").json()["results"]
    assert detail["type"] == "ETF" and detail["name"].endswith(SYNTHETIC_SUFFIX)
    stocks = session.get(grouped_url(server, "stocks", "2024-03-08")).json()
    assert {"ZZZA", "ZZZB"} <= {row["T"] for row in stocks["results"]}
    crypto = session.get(grouped_url(server, "crypto", "2024-03-08")).json()
    assert "X:DOGEUSD" in {row["T"] for row in crypto["results"]}


# --------------------------------------------------------------------------------------------
# Auth, unknown paths


def test_missing_and_unknown_keys_are_401(server):
    missing = requests.get(f"{server.url}/v2/aggs/ticker/AAPL/range/1/day/2024-03-01/2024-03-08")
    assert missing.status_code == 401 and missing.headers["X-Sandbox"] == "synthetic"
    body = missing.json()
    assert missing.headers["X-Request-Id"] == body["request_id"]
    assert body == {"status": "ERROR", "request_id": body["request_id"], "error": "API Key was not provided"}
    unknown = requests.get(
        f"{server.url}/v3/reference/tickers/AAPL", headers={"Authorization": "Bearer not-a-key"}
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "Unknown API Key"


def test_api_key_in_query_is_accepted_and_never_logged(server):
    response = requests.get(f"{server.url}/v3/reference/tickers/AAPL", params={"apiKey": SANDBOX_API_KEY})
    assert response.status_code == 200
    (record,) = server.request_log()
    assert record.key_source == "query" and SANDBOX_API_KEY not in record.path
    assert "apiKey=REDACTED" in record.path


def test_custom_api_keys(session):
    with SandboxServer(api_keys=("k1", "k2"), now=lambda: NOW) as sandbox:
        assert session.get(f"{sandbox.url}/v3/reference/tickers/AAPL").status_code == 401
        ok = requests.get(f"{sandbox.url}/v3/reference/tickers/AAPL", headers={"Authorization": "Bearer k2"})
        assert ok.status_code == 200


def test_unknown_path_is_404_json(server, session):
    response = session.get(f"{server.url}/v2/snapshot/everything")
    assert response.status_code == 404
    assert response.json()["status"] == "NOT_FOUND" and response.headers["X-Sandbox"] == "synthetic"


# --------------------------------------------------------------------------------------------
# Fault injection


def test_rate_limit_429_with_and_without_retry_after(server, session):
    recorded_error = (
        "You've exceeded the maximum requests per minute, please wait or upgrade your subscription "
        "to continue. https://massive.com/pricing"
    )
    server.rate_limit_per_minute = 2
    url = f"{server.url}/v3/reference/tickers/AAPL"
    assert [session.get(url).status_code for _ in range(2)] == [200, 200]
    limited = session.get(url)
    assert limited.status_code == 429 and "Retry-After" not in limited.headers
    assert limited.json() == {
        "status": "ERROR",
        "request_id": limited.json()["request_id"],
        "error": recorded_error,
    }
    server.retry_after_seconds = 7
    assert session.get(url).headers["Retry-After"] == "7"
    server.rate_limit_per_minute = None
    assert session.get(url).status_code == 200


def test_fail_next_schedule(server, session):
    server.fail_next(2)
    server.fail_next(1, status=502, body='{"status":"ERROR","error":"bad gateway"}')
    url = f"{server.url}/v3/reference/tickers/AAPL"
    responses = [session.get(url) for _ in range(4)]
    assert [r.status_code for r in responses] == [503, 503, 502, 200]
    assert responses[0].text.startswith("<html>") and responses[0].headers["Content-Type"] == "text/html"
    assert responses[2].json()["error"] == "bad gateway"
    assert all(r.headers["X-Sandbox"] == "synthetic" for r in responses)


def test_error_rate_is_seeded(session):
    statuses = []
    for _ in range(2):
        with SandboxServer(error_rate=0.5, seed=7, now=lambda: NOW) as sandbox:
            statuses.append(
                [session.get(f"{sandbox.url}/v3/reference/tickers/AAPL").status_code for _ in range(20)]
            )
    assert statuses[0] == statuses[1]
    assert {200} < set(statuses[0]) <= {200, 500, 502, 503, 504}


def test_truncate_next_sends_half_a_body(server, session):
    server.truncate_next(1)
    cut = get_range(session, server, "AAPL", "2024-01-01", "2024-03-31")
    assert cut.status_code == 200 and int(cut.headers["Content-Length"]) == len(cut.content)
    with pytest.raises(ValueError):
        cut.json()
    whole = get_range(session, server, "AAPL", "2024-01-01", "2024-03-31")  # same keep-alive connection
    assert whole.json()["resultsCount"] > 0
    assert len(cut.content) == len(whole.content) // 2  # the bodies differ only in request_id


def test_delayed_status(server, session):
    server.delayed = True
    body = get_range(session, server, "AAPL", "2024-03-01", "2024-03-08").json()
    assert body["status"] == "DELAYED" and body["resultsCount"] == 6
    assert session.get(grouped_url(server, "stocks", "2024-03-08")).json()["status"] == "DELAYED"


def test_history_limit_403(server, session):
    server.history_limit_days = 730
    old = get_range(session, server, "AAPL", "2020-01-02", "2020-01-10")
    assert old.status_code == 403
    body = old.json()
    assert body["status"] == "NOT_AUTHORIZED" and body["message"].startswith(
        "Your plan doesn't include this data timeframe."
    )
    assert session.get(grouped_url(server, "stocks", "2020-01-02")).status_code == 403
    assert get_range(session, server, "AAPL", "2024-03-01", "2024-03-08").status_code == 200


def test_latency_knob_still_answers(server, session):
    server.latency_ms = 5
    assert session.get(f"{server.url}/v3/reference/tickers/AAPL").status_code == 200


# --------------------------------------------------------------------------------------------
# Bar knobs


def test_drop_bars_makes_holes_in_range_and_grouped(server, session):
    server.drop_bars("AAPL", [dt.date(2024, 3, 8), "2024-03-11"])
    body = get_range(session, server, "AAPL", "2024-03-07", "2024-03-12").json()
    assert bar_dates(body) == ["2024-03-07", "2024-03-12"]
    grouped = session.get(grouped_url(server, "stocks", "2024-03-08")).json()
    assert "AAPL" not in {row["T"] for row in grouped["results"]}
    server.clear_knobs()
    assert get_range(session, server, "AAPL", "2024-03-07", "2024-03-12").json()["resultsCount"] == 4


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_bars(server, session, kind):
    day = "2024-03-08"
    server.corrupt_bars("MSFT", [day], kind)
    (bar,) = get_range(session, server, "MSFT", day, day).json()["results"]
    violated = {
        "high_below_low": bar["h"] < bar["l"],
        "negative_volume": bar["v"] < 0,
        "zero_price": bar["o"] == 0 and bar["l"] == 0,
        "vw_outside_range": not bar["l"] <= bar["vw"] <= bar["h"],
    }
    assert violated[kind]
    rows = session.get(grouped_url(server, "stocks", day)).json()["results"]
    (row,) = [row for row in rows if row["T"] == "MSFT"]
    assert {k: v for k, v in row.items() if k not in ("T", "t")} == {k: v for k, v in bar.items() if k != "t"}
    neighbours = get_range(session, server, "MSFT", "2024-03-07", "2024-03-11").json()["results"]
    assert all(b["v"] > 0 and b["l"] <= b["vw"] <= b["h"] for b in (neighbours[0], neighbours[2]))


def test_revise_bars_scales_prices_only(server, session):
    (before,) = get_range(session, server, "AMZN", "2024-03-08", "2024-03-08").json()["results"]
    server.revise_bars("AMZN", "2024-03-08", 1.1)
    (after,) = get_range(session, server, "AMZN", "2024-03-08", "2024-03-08").json()["results"]
    for key in ("o", "h", "l", "c", "vw"):
        assert after[key] == pytest.approx(before[key] * 1.1, abs=1e-4)
    assert (after["v"], after["n"], after["t"]) == (before["v"], before["n"], before["t"])


def test_listing_date(server, session):
    server.set_listing_date("TSLA", "2024-03-11")
    assert bar_dates(get_range(session, server, "TSLA", "2024-03-07", "2024-03-12").json()) == [
        "2024-03-11",
        "2024-03-12",
    ]
    early = session.get(grouped_url(server, "stocks", "2024-03-08")).json()
    assert "TSLA" not in {row["T"] for row in early["results"]}
    detail = session.get(f"{server.url}/v3/reference/tickers/TSLA").json()["results"]
    assert detail["list_date"] == "2024-03-11"


def test_knob_arguments_are_checked(server):
    with pytest.raises(ValueError):
        server.corrupt_bars("AAPL", ["2024-03-08"], "nan_close")
    with pytest.raises(ValueError):
        server.revise_bars("AAPL", ["2024-03-08"], 0)


# --------------------------------------------------------------------------------------------
# Counters, lifecycle


def test_request_counts(server, session):
    get_range(session, server, "AAPL", "2024-03-01", "2024-03-08")
    requests.get(f"{server.url}/v2/aggs/ticker/AAPL/range/1/day/2024-03-01/2024-03-08")  # 401, still counted
    server.fail_next(1)
    session.get(grouped_url(server, "stocks", "2024-03-08"))  # 503, still counted
    session.get(grouped_url(server, "crypto", "2024-03-08"))
    session.get(f"{server.url}/v3/reference/tickers")
    session.get(f"{server.url}/v3/reference/tickers/AAPL")
    session.get(f"{server.url}/nowhere")
    assert server.request_counts() == {
        "aggs_range": 2,
        "grouped_stocks": 1,
        "grouped_crypto": 1,
        "tickers": 1,
        "ticker_detail": 1,
        "ticker_events": 0,
        "splits": 0,
        "dividends": 0,
        "splits_v3": 0,
        "dividends_v3": 0,
        "other": 1,
        "total": 7,
    }
    server.reset_counts()
    assert server.request_counts()["total"] == 0 and server.request_log() == []


def test_start_stop_and_url():
    sandbox = SandboxServer().start()
    try:
        url = sandbox.url
        assert url == f"http://127.0.0.1:{sandbox.port}"
        with requests.Session() as idle:  # a keep-alive connection left open must not block stop()
            assert idle.get(url + "/v3/reference/tickers/AAPL").status_code == 401
            sandbox.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/v3/reference/tickers/AAPL", timeout=5)
    finally:
        sandbox.stop()


@pytest.mark.slow
def test_serve_forever_runs_in_the_foreground_until_sigterm():
    script = "from market_pipeline.sandbox import serve_forever; serve_forever(port=0)"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        url = re.search(r"http://[\d.]+:\d+", banner).group(0)
        assert SANDBOX_API_KEY in banner
        response = requests.get(
            f"{url}/v3/reference/tickers/AAPL", headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=scaled(30)) == 0
    finally:
        if process.poll() is None:
            process.kill()


# --------------------------------------------------------------------------------------------
# The synthetic market


def test_same_bars_from_every_instance_and_window(session):
    bodies = []
    for _ in range(2):
        with SandboxServer(now=lambda: NOW) as sandbox:
            bodies.append(get_range(session, sandbox, "JPM", "2010-01-01", "2012-12-31").json()["results"])
    assert bodies[0] == bodies[1]
    inner = synthetic_bars("JPM", dt.date(2011, 6, 1), dt.date(2011, 6, 30))
    outer = synthetic_bars("JPM", dt.date(1995, 1, 1), dt.date(2020, 12, 31))
    assert inner.reset_index(drop=True).equals(
        outer[outer["date"].between("2011-06-01", "2011-06-30")].reset_index(drop=True)
    )


def test_synthetic_bars_equal_what_is_served(server, session):
    frame = synthetic_bars("X:SOLUSD", dt.date(2023, 12, 25), dt.date(2024, 1, 7))
    served = get_range(session, server, "X:SOLUSD", "2023-12-25", "2024-01-07").json()["results"]
    assert len(frame) == len(served) == 14
    for key in ("t", "o", "h", "l", "c", "v", "vw", "n"):
        assert frame[key].tolist() == [bar[key] for bar in served]  # exact, not approximate
    assert list(frame.columns) == ["date", "t", "o", "h", "l", "c", "v", "vw", "n"]
    assert str(frame["date"].dtype).startswith("datetime64")
    assert frame["t"].dtype == np.int64 and frame["n"].dtype == np.int64


@pytest.mark.parametrize("ticker", ["AAPL", "BRK.B", "QQQ", "X:BTCUSD", "ANYTHING"])
def test_synthetic_bars_are_valid_ohlcv(ticker):
    frame = synthetic_bars(ticker, dt.date(1995, 1, 1), dt.date(2025, 12, 31))
    assert (frame["h"] >= frame[["o", "c"]].max(axis=1)).all()
    assert (frame["l"] <= frame[["o", "c"]].min(axis=1)).all() and (frame["l"] > 0).all()
    assert frame["vw"].between(frame["l"], frame["h"]).all()
    assert (frame["v"] > 0).all() and (frame["v"] % 1 != 0).any()  # fractional volumes
    assert (frame["n"] > 0).all()
    assert frame["date"].is_monotonic_increasing and frame["date"].is_unique
    if not ticker.startswith("X:"):
        assert 15 <= frame["o"].iloc[0] <= 600  # the walk starts between 20 and 500
        expected = calendars.expected_sessions("stock", dt.date(1995, 1, 1), dt.date(2025, 12, 31))
        assert frame["date"].tolist() == list(expected)
    else:
        assert len(frame) == (dt.date(2025, 12, 31) - dt.date(1995, 1, 3)).days + 1


def test_grouped_daily_rows_from_the_block_cache_equal_the_full_series(monkeypatch):
    """The grouped endpoint serves its rows from small per-ticker blocks of bars (a 10,000-ticker
    universe is rendered once): every row, for stocks and crypto, recent or years back, equals what the
    whole rendered series gives."""
    import datetime as dt

    from market_pipeline.sandbox import SandboxServer
    from market_pipeline.sandbox import market as synthetic

    server = SandboxServer()
    server.add_to_universe([f"G{i:03d}" for i in range(40)] + ["AAPL", "X:BTCUSD"])  # a crypto ticker listed as a stock too
    server.add_to_universe(["X:ETHUSD", "X:BTCUSD"], market="crypto")
    days = [synthetic.last_bar_date() - dt.timedelta(days=k) for k in [*range(0, 60, 3), 400, 401, 2000, 2001, 2002]]
    cached = {(d, c): server._grouped_rows(d, c) for d in days for c in (False, True)}
    monkeypatch.setattr(synthetic, "bar_fragment", lambda ticker, i: None)  # the whole-series path
    full = {(d, c): server._grouped_rows(d, c) for d in days for c in (False, True)}
    assert sum(len(rows) for rows in cached.values()) > 500
    assert cached == full
