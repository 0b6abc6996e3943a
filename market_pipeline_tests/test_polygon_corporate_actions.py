"""The corporate-actions client against the sandbox over real HTTP: batching, pagination, v3 fallback."""

import datetime as dt

import pytest

from market_pipeline.polygon.corporate_actions import CorporateActionsClient
from market_pipeline.polygon.client import PolygonClient, PolygonError, RetryPolicy
from market_pipeline.sandbox import SANDBOX_API_KEY

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_wait=5.0, backoff_base=0.01, backoff_max=0.02)


@pytest.fixture
def client(sandbox):
    with PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, retry=FAST_RETRY) as base:
        yield CorporateActionsClient(base, batch_size=2)


def test_whole_lists_are_batched_and_paginated(sandbox, client):
    read = client.splits(["NVDA", "TSLA", "INTC", "MSFT", "AAPL"])  # 3 batches of at most 2
    assert sorted((s.symbol, s.execution_date.isoformat(), s.label) for s in read.events) == [
        ("INTC", "2023-03-20", "1-for-2"), ("MSFT", "2025-12-01", "2-for-1"),
        ("NVDA", "2021-07-20", "4-for-1"), ("NVDA", "2024-06-10", "10-for-1"),
        ("TSLA", "2020-08-31", "5-for-1"), ("TSLA", "2022-08-25", "3-for-1"),
    ]
    assert read.requests == 3 and sandbox.request_counts()["splits"] == 3
    assert read.complete_symbols == ["AAPL", "INTC", "MSFT", "NVDA", "TSLA"]
    paths = [entry.path for entry in sandbox.request_log()]
    assert all("ticker.any_of=" in p and "apiKey" not in p for p in paths)
    assert all(entry.key_source == "header" for entry in sandbox.request_log())
    # a long list follows next_url
    sandbox.reset_counts()
    dividends = client.dividends(["KO"])
    assert len(dividends.events) > 80 and all(d.status == "active" for d in dividends.events)
    assert len({d.provider_id for d in dividends.events}) == len(dividends.events)
    assert dividends.requests == 1  # limit=5000 holds KO's whole list


def test_recent_events_of_every_ticker_in_a_constant_number_of_requests(sandbox, client):
    read = client.splits(None, since=dt.date(2024, 1, 1))
    assert read.requests == 1 and read.complete_symbols == []
    assert {(s.symbol, s.execution_date.isoformat()) for s in read.events} >= {("NVDA", "2024-06-10"), ("MSFT", "2025-12-01")}
    assert all(s.execution_date >= dt.date(2024, 1, 1) for s in read.events)
    assert "execution_date.gte=2024-01-01" in sandbox.request_log()[-1].path


def test_v3_fallback_on_404_only(sandbox, client):
    sandbox.corporate_actions_v1 = False
    read = client.splits(["GOOGL"])
    assert [(s.symbol, s.price_factor) for s in read.events] == [("GOOGL", 0.05)]
    assert read.version == "v3" and client.version == "v3"
    counts = sandbox.request_counts()
    assert (counts["splits"], counts["splits_v3"]) == (1, 1)
    dividends = client.dividends(["KO"])  # stays on v3 and pages through next_url (limit 1000 there)
    assert dividends.version == "v3" and len(dividends.events) > 80
    assert sandbox.request_counts()["dividends"] == 0


def test_other_errors_do_not_fall_back(sandbox, client):
    sandbox.fail_next(3, status=503)  # every attempt
    with pytest.raises(PolygonError, match="gave up"):
        client.splits(["NVDA"])
    assert sandbox.request_counts()["splits_v3"] == 0 and client.version == "v1"
    sandbox.fail_next(1, status=503)
    assert len(client.splits(["NVDA"]).events) == 2  # retried


def test_batches_in_flight_read_the_same_lists_and_fall_back_together(sandbox):
    """With requests in flight the batches go out at once: the same events in the same order as one
    batch after another, every request counted; when v1 answers 404 every batch, even those already
    on the wire, falls back to v3 (none is lost), and the fallback is logged once."""
    tickers = ["NVDA", "TSLA", "INTC", "MSFT", "AAPL", "GOOGL"]
    with PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, retry=FAST_RETRY) as one:
        expected = CorporateActionsClient(one, batch_size=1).splits(tickers)
    sandbox.reset_counts()
    warnings = []
    with PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, retry=FAST_RETRY, max_in_flight=4) as many:
        many.log = type("Log", (), {"warning": lambda self, *args: warnings.append(args)})()
        read = CorporateActionsClient(many, batch_size=1).splits(tickers)
    assert [(s.symbol, s.provider_id) for s in read.events] == [(s.symbol, s.provider_id) for s in expected.events]
    assert read.requests == expected.requests == 6 == sandbox.request_counts()["splits"]

    sandbox.corporate_actions_v1 = False
    sandbox.reset_counts()
    with PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, retry=FAST_RETRY, max_in_flight=4) as many:
        many.log = type("Log", (), {"warning": lambda self, *args: warnings.append(args)})()
        fallen = CorporateActionsClient(many, batch_size=1).splits(tickers)
    assert fallen.version == "v3" and sorted(s.symbol for s in fallen.events) == sorted(s.symbol for s in expected.events)
    counts = sandbox.request_counts()
    assert counts["splits_v3"] == 6 and 1 <= counts["splits"] <= 4
    assert len(warnings) == 1 and "v3" in warnings[0][0]
