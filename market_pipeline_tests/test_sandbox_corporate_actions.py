"""The sandbox's corporate actions over real HTTP: as traded vs adjusted, list endpoints, knobs."""

import datetime as dt

import pytest
import requests

from market_pipeline.sandbox import SANDBOX_API_KEY

HEADERS = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}


def closes(server, ticker, start, end, adjusted):
    body = requests.get(
        f"{server.url}/v2/aggs/ticker/{ticker}/range/1/day/{start}/{end}",
        params={"adjusted": str(adjusted).lower(), "limit": 50000}, headers=HEADERS, timeout=10,
    ).json()
    assert body["adjusted"] is adjusted
    return {dt.datetime.fromtimestamp(bar["t"] / 1000, dt.timezone.utc).date(): bar for bar in body["results"]}


def get(server, path, **params):
    response = requests.get(f"{server.url}{path}", params=params, headers=HEADERS, timeout=10)
    return response.status_code, response.json()


def test_demo_symbol_split_as_traded_and_adjusted(sandbox):
    """MSFT (a `make run` demo symbol) splits 2-for-1 on 2025-12-01."""
    raw = closes(sandbox, "MSFT", "2025-11-25", "2025-12-03", adjusted=False)
    adj = closes(sandbox, "MSFT", "2025-11-25", "2025-12-03", adjusted=True)
    before, after = dt.date(2025, 11, 28), dt.date(2025, 12, 1)
    assert raw[before]["c"] == pytest.approx(2 * adj[before]["c"], abs=1e-4)
    assert raw[before]["v"] == pytest.approx(adj[before]["v"] / 2, abs=1e-3)
    assert raw[after] == adj[after]
    assert raw[after]["o"] / raw[before]["c"] < 0.6  # the as-traded open halves overnight
    # grouped daily follows `adjusted` too
    status, grouped = get(sandbox, f"/v2/aggs/grouped/locale/us/market/stocks/{before}", adjusted="false")
    (row,) = [r for r in grouped["results"] if r["T"] == "MSFT"]
    assert row["c"] == raw[before]["c"]


def test_v1_splits_filters_and_pagination(sandbox):
    status, body = get(sandbox, "/stocks/v1/splits", **{"ticker.any_of": "NVDA,INTC,MSFT", "limit": 2})
    assert status == 200 and len(body["results"]) == 2 and "next_url" in body
    rows = body["results"]
    while "next_url" in body:
        body = requests.get(body["next_url"], headers=HEADERS, timeout=10).json()
        rows += body["results"]
    assert sorted((r["ticker"], r["execution_date"]) for r in rows) == [
        ("INTC", "2023-03-20"), ("MSFT", "2025-12-01"), ("NVDA", "2021-07-20"), ("NVDA", "2024-06-10")]
    intc = next(r for r in rows if r["ticker"] == "INTC")
    assert set(intc) == {"id", "ticker", "execution_date", "split_from", "split_to", "adjustment_type",
                         "historical_adjustment_factor"}
    assert (intc["split_from"], intc["split_to"], intc["adjustment_type"]) == (2, 1, "reverse_split")
    nvda = sorted((r for r in rows if r["ticker"] == "NVDA"), key=lambda r: r["execution_date"])
    assert nvda[0]["historical_adjustment_factor"] == pytest.approx(1 / 40)  # cumulative
    status, recent = get(sandbox, "/stocks/v1/splits", **{"execution_date.gte": "2024-01-01", "execution_date.lt": "2025-01-01"})
    assert [(r["ticker"], r["execution_date"]) for r in recent["results"]] == [("NVDA", "2024-06-10")]
    status, error = get(sandbox, "/stocks/v1/splits", **{"execution_date.gte": "last week"})
    assert status == 400 and "execution_date.gte" in error["error"]


def test_dividends_v1_and_v3_shapes(sandbox):
    status, body = get(sandbox, "/stocks/v1/dividends", ticker="KO", **{"ex_dividend_date.gte": "2024-01-01",
                                                                        "ex_dividend_date.lte": "2024-12-31"})
    assert status == 200 and len(body["results"]) == 4
    row = body["results"][0]
    assert {"id", "ticker", "ex_dividend_date", "declaration_date", "record_date", "pay_date", "cash_amount",
            "currency", "split_adjusted_cash_amount", "distribution_type", "frequency"} <= set(row)
    assert row["currency"] == "USD" and row["cash_amount"] > 0 and row["frequency"] == 4
    status, v3 = get(sandbox, "/v3/reference/dividends", ticker="KO", limit=3)
    assert status == 200 and len(v3["results"]) == 3 and "next_url" in v3
    assert v3["results"][0]["dividend_type"] == "CD"
    assert v3["results"][0]["ex_dividend_date"] > v3["results"][1]["ex_dividend_date"]  # newest first
    status, splits = get(sandbox, "/v3/reference/splits", ticker="GOOGL")
    assert [(r["execution_date"], r["split_from"], r["split_to"]) for r in splits["results"]] == [("2022-07-18", 1, 20)]


def test_late_split_duplicate_and_withdrawal_knobs(sandbox):
    sandbox.add_split("AAPL", "2023-03-20", 2, 1, recorded=False)  # the late reverse split
    raw = closes(sandbox, "AAPL", "2023-03-17", "2023-03-20", adjusted=False)
    adj = closes(sandbox, "AAPL", "2023-03-17", "2023-03-20", adjusted=True)
    friday, monday = dt.date(2023, 3, 17), dt.date(2023, 3, 20)
    assert raw[monday]["o"] / raw[friday]["c"] > 1.6  # the reverse split doubles the price
    assert adj[friday] == raw[friday]  # not recorded yet: adjusted=true is not adjusted for it
    assert get(sandbox, "/stocks/v1/splits", ticker="AAPL")[1]["results"] == []
    sandbox.record_split("AAPL", "2023-03-20")
    adj = closes(sandbox, "AAPL", "2023-03-17", "2023-03-20", adjusted=True)
    assert adj[friday]["c"] == pytest.approx(2 * raw[friday]["c"], abs=1e-4)
    assert len(get(sandbox, "/stocks/v1/splits", ticker="AAPL")[1]["results"]) == 1
    # a duplicated listing a week later: adjusted=true applies it twice (what users see from Polygon)
    sandbox.duplicate_split("AAPL", "2023-03-20", "2023-03-27")
    assert len(get(sandbox, "/stocks/v1/splits", ticker="AAPL")[1]["results"]) == 2
    adj = closes(sandbox, "AAPL", "2023-03-17", "2023-03-17", adjusted=True)
    assert adj[friday]["c"] == pytest.approx(4 * raw[friday]["c"], abs=1e-4)
    assert closes(sandbox, "AAPL", "2023-03-17", "2023-03-17", adjusted=False)[friday] == raw[friday]
    sandbox.withdraw_split("AAPL", "2023-03-27")
    assert [r["execution_date"] for r in get(sandbox, "/stocks/v1/splits", ticker="AAPL")[1]["results"]] == ["2023-03-20"]


def test_v1_can_be_switched_off_for_the_v3_fallback(sandbox):
    sandbox.corporate_actions_v1 = False
    status, body = get(sandbox, "/stocks/v1/splits", ticker="NVDA")
    assert status == 404 and body["status"] == "NOT_FOUND"
    assert get(sandbox, "/v3/reference/splits", ticker="NVDA")[0] == 200
    counts = sandbox.request_counts()
    assert (counts["splits"], counts["splits_v3"]) == (1, 1)
