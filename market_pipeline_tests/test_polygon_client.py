"""The Polygon client against the sandbox over real HTTP: routing, dates, pagination, errors,
retries, pacing, and the key never leaving the Authorization header."""

import datetime as dt
import logging
import time

import pytest

from market_pipeline.polygon.client import PolygonClient, PolygonError, RetryPolicy
from market_pipeline.sandbox import SANDBOX_API_KEY, synthetic_bars

FAST_RETRY = RetryPolicy(max_attempts=4, max_total_wait=10.0, backoff_base=0.01, backoff_max=0.05)


def client_for(sandbox, key=SANDBOX_API_KEY, rpm=0, retry=FAST_RETRY, **kw) -> PolygonClient:
    return PolygonClient(key, sandbox.url, rpm, retry=retry, **kw)


def test_stock_range_across_dst_change_matches_the_server(sandbox):
    with client_for(sandbox) as client:
        frame = client.daily_bars("AAPL", "stock", dt.date(2024, 3, 6), dt.date(2024, 3, 13))
    days = [d.date() for d in frame["date"]]
    assert days == [dt.date(2024, 3, d) for d in (6, 7, 8, 11, 12, 13)]  # DST began 2024-03-10
    expected = synthetic_bars("AAPL", dt.date(2024, 3, 6), dt.date(2024, 3, 13))
    assert frame["close"].tolist() == expected["c"].tolist()
    assert frame["volume"].tolist() == expected["v"].tolist()


def test_crypto_routes_to_x_ticker_and_utc_days(sandbox):
    with client_for(sandbox) as client:
        frame = client.daily_bars("BTCUSD", "crypto", dt.date(2024, 3, 8), dt.date(2024, 3, 11))
    assert [d.date() for d in frame["date"]] == [dt.date(2024, 3, d) for d in (8, 9, 10, 11)]  # weekend included
    paths = [entry.path for entry in sandbox.request_log()]
    assert any("/v2/aggs/ticker/X:BTCUSD/range/1/day/2024-03-08/2024-03-11" in p for p in paths)
    assert all("adjusted=true" in p and "sort=asc" in p and "limit=50000" in p for p in paths)


def test_holiday_only_range_is_empty(sandbox):
    with client_for(sandbox) as client:
        assert client.daily_bars("AAPL", "stock", dt.date(2024, 7, 4), dt.date(2024, 7, 4)).empty


def test_pagination_follows_next_url_with_the_header(sandbox):
    sandbox.page_size = 50
    with client_for(sandbox) as client:
        frame = client.daily_bars("MSFT", "stock", dt.date(2023, 1, 1), dt.date(2023, 12, 31))
    assert len(frame) == 250 and frame["date"].is_unique and frame["date"].is_monotonic_increasing
    assert sandbox.request_counts()["aggs_range"] == 5
    assert all(entry.key_source == "header" for entry in sandbox.request_log())


def test_delayed_status_is_success(sandbox):
    sandbox.delayed = True
    with client_for(sandbox) as client:
        assert len(client.daily_bars("SPY", "etf", dt.date(2024, 1, 2), dt.date(2024, 1, 5))) == 4


def test_retries_429_then_succeeds(sandbox):
    sandbox.rate_limit_per_minute = 1
    sandbox.retry_after_seconds = 0.2
    with client_for(sandbox) as client:
        client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 5))
        started = time.monotonic()
        sandbox.rate_limit_per_minute = None  # the window frees up after the server's Retry-After
        sandbox.fail_next(1, status=429)
        frame = client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 5))
    assert len(frame) == 4
    assert client.stats.retries == 1 and client.stats.requests == 3
    assert time.monotonic() - started >= 0.0


def test_retries_5xx_and_truncated_bodies(sandbox):
    sandbox.fail_next(2, status=503)
    with client_for(sandbox) as client:
        assert len(client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 5))) == 4
        assert client.stats.retries == 2
        sandbox.truncate_next(1)
        assert len(client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 5))) == 4
        assert client.stats.retries == 3


def test_gives_up_after_the_bound(sandbox):
    sandbox.fail_next(10, status=502)
    with client_for(sandbox) as client, pytest.raises(PolygonError) as info:
        client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 5))
    assert info.value.transient and "gave up after 4 attempts" in str(info.value) and "502" in str(info.value)
    assert sandbox.request_counts()["aggs_range"] == 4


def test_timeouts_are_retried_then_fail_clearly(sandbox):
    sandbox.latency_ms = 400
    with client_for(sandbox, read_timeout=0.1, retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02)) as client:
        with pytest.raises(PolygonError, match="timed out"):
            client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 5))


@pytest.mark.parametrize(
    "setup, status, text",
    [
        (lambda s: None, 401, "Unknown API Key"),
        (lambda s: setattr(s, "history_limit_days", 30), 403, "NOT_AUTHORIZED"),
    ],
)
def test_final_errors_name_symbol_status_and_polygon_text(sandbox, setup, status, text):
    setup(sandbox)
    key = "not-a-real-key-123" if status == 401 else SANDBOX_API_KEY
    with client_for(sandbox, key=key) as client, pytest.raises(PolygonError) as info:
        client.daily_bars("AAPL", "stock", dt.date(2020, 1, 2), dt.date(2020, 1, 5))
    message = str(info.value)
    assert message.startswith("AAPL: HTTP") and str(status) in message and text in message
    assert not info.value.transient and key not in message
    assert sandbox.request_counts()["aggs_range"] == 1  # final: not retried


def test_bad_date_is_a_final_400(sandbox):
    with client_for(sandbox) as client, pytest.raises(PolygonError, match="400") as info:
        client.daily_bars("AAPL", "stock", dt.date(2024, 1, 5), dt.date(2024, 1, 2))
    assert "cannot be a time that occurs before" in str(info.value)


def test_reference_lookup(sandbox):
    with client_for(sandbox) as client:
        assert client.ticker_exists("AAPL", "stock")
        assert client.ticker_exists("BTCUSD", "crypto")
        assert not client.ticker_exists("APPL", "stock")


def test_pacing_spaces_requests(sandbox):
    with client_for(sandbox, rpm=600) as client:  # one request every 0.1 s
        started = time.monotonic()
        for _ in range(4):
            client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 3))
    assert time.monotonic() - started >= 0.29
    assert client.stats.paced_seconds > 0.2


def test_key_never_in_urls_logs_or_errors(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    secret = SANDBOX_API_KEY
    sandbox.page_size = 20
    sandbox.fail_next(1, status=500)
    with client_for(sandbox) as client:
        client.daily_bars("AAPL", "stock", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
        assert secret not in repr(client)
    for entry in sandbox.request_log():
        assert secret not in entry.path and entry.key_source == "header"
    assert secret not in caplog.text


def test_missing_key_is_a_clear_error(sandbox):
    with client_for(sandbox, key=None) as client, pytest.raises(PolygonError, match="POLYGON_API_KEY"):
        client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 3))
    assert sandbox.request_counts()["total"] == 0
