"""Answers that must not be waited for or read to the end: a gzip bomb from the sandbox is cut at the
decoded-size limit with bounded memory, and a `Retry-After` longer than the client's longest wait
fails at once, stops the run, and is not retried by Dagster's step retry."""

from __future__ import annotations

import datetime as dt
import time
import tracemalloc

import pytest

from market_pipeline.cli.main import main
from market_pipeline.definitions import defs
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.reconcile import range_tags
from market_pipeline.defs.resources import PolygonResource
from market_pipeline.polygon.client import PolygonClient, PolygonError, RetryPolicy
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline_tests.waiting import scaled

FAST = RetryPolicy(max_attempts=3, max_total_wait=10.0, backoff_base=0.01, backoff_max=0.05)
START, END = dt.date(2024, 1, 2), dt.date(2024, 12, 31)
BILLION = 1_000_000_000


def client_for(sandbox, **kw) -> PolygonClient:
    kw.setdefault("retry", FAST)
    return PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, **kw)


# ---- the decoded-size limit ---------------------------------------------------------------------
def test_a_gzip_bomb_is_cut_at_the_limit_at_once_with_bounded_memory(sandbox):
    sandbox.gzip_bomb("AAPL")  # about 1 MB on the wire, 1 GiB inflated
    with client_for(sandbox) as client:
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(PolygonError) as info:
                client.fetch_daily_bars("AAPL", "stock", START, END)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    message = str(info.value)
    assert message.startswith("AAPL: the answer from /v2/aggs/ticker/AAPL/range/1/day/2024-01-02/2024-12-31 (gzip-compressed")
    assert "decodes to more than 25 MB" in message and "POLYGON_MAX_ANSWER_MB" in message
    assert not info.value.transient and sandbox.request_counts()["aggs_range"] == 1  # final: not retried
    assert peak < 80_000_000, peak  # the limit and a few chunks, never the gibibyte
    assert time.monotonic() - started < scaled(60)
    # the same client goes on: another symbol's answer is read as usual
    with client_for(sandbox) as client:
        assert len(client.daily_bars("MSFT", "stock", START, dt.date(2024, 1, 31))) > 15


def test_the_limit_holds_for_plain_answers_too_and_comes_from_the_setting(sandbox, monkeypatch):
    with client_for(sandbox, max_answer_bytes=2_000) as client, pytest.raises(PolygonError) as info:
        client.fetch_daily_bars("AAPL", "stock", START, END)
    assert "decodes to more than 0.002 MB" in str(info.value) and "compressed" not in str(info.value)
    monkeypatch.setenv("POLYGON_MAX_ANSWER_MB", "0.5")
    with PolygonResource(base_url=sandbox.url).get_client() as client:
        assert client.max_answer_bytes == 500_000
    monkeypatch.delenv("POLYGON_MAX_ANSWER_MB")
    with PolygonResource(base_url=sandbox.url).get_client() as client:
        assert client.max_answer_bytes == 25_000_000


@pytest.mark.parametrize("value", ["abc", "0", "-1", "5000", "nan"])
def test_a_bad_answer_limit_setting_is_one_line_exit_2(monkeypatch, capsys, tmp_path, value):
    monkeypatch.setenv("MARKET_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("POLYGON_MAX_ANSWER_MB", value)
    assert main(["run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"market-pipeline: error: POLYGON_MAX_ANSWER_MB={value!r}") and "set e.g. POLYGON_MAX_ANSWER_MB=25" in line
    assert not (tmp_path / "home").exists()


def run(instance, symbols, polygon_config=None):
    job = defs.resolve_job_def("ohlcv_daily_job")
    config = {"resources": {"polygon": {"config": {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05,
                                                    "max_attempts": 2, **(polygon_config or {})}}}}
    tags = range_tags(symbols) if len(symbols) > 1 else {}
    kwargs = {"tags": tags} if tags else {"partition_key": symbols[0]}
    return job.execute_in_process(instance=instance, raise_on_error=False, run_config=config, **kwargs)


def retried(result) -> bool:
    return any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def test_a_run_with_a_gzip_bomb_fails_that_symbol_with_the_reason_and_stores_the_others(polygon_env, instance, warehouse_url):
    sandbox = polygon_env
    registry = SymbolRegistry(warehouse_url)
    registry.add(["AAPL", "MSFT"], "stock", START)
    instance.add_dynamic_partitions(symbols_partitions.name, ["AAPL", "MSFT"])
    sandbox.gzip_bomb("MSFT")
    result = run(instance, ["AAPL", "MSFT"])
    assert not result.success and not retried(result)  # final: Dagster's step retry does not ask again
    msft = registry.get("MSFT")
    assert msft.backfill_status == "failed" and "decodes to more than 25 MB" in msft.backfill_error
    assert registry.get("AAPL").backfill_status == "completed"
    assert BarStore(warehouse_url).summary(["MSFT"]) == {}
    assert sandbox.request_counts()["aggs_range"] == 2


# ---- a Retry-After beyond the longest wait -------------------------------------------------------
def test_a_retry_after_beyond_the_longest_wait_fails_at_once_naming_it_and_nothing_more_is_sent(sandbox):
    sandbox.fail_next(1, status=429, retry_after=BILLION)
    with client_for(sandbox) as client:
        started = time.monotonic()
        with pytest.raises(PolygonError) as info:
            client.daily_bars("AAPL", "stock", START, END)
        assert time.monotonic() - started < scaled(10)
        message = str(info.value)
        assert "asking to wait 1000000000 s (about 31.7 years) before the next request (Retry-After)" in message
        assert "longer than the longest wait of 0.05 s" in message and "not retried" in message
        assert info.value.stops_run.startswith("Polygon answered HTTP 429") and not info.value.transient
        # every later request of this client fails at once, unsent, with the same reason
        with pytest.raises(PolygonError, match="not sent: Polygon answered HTTP 429 asking to wait 1000000000 s"):
            client.daily_bars("MSFT", "stock", START, END)
    assert sandbox.request_counts()["aggs_range"] == 1
    # a wait within the longest is still waited for, then retried
    sandbox.fail_next(1, status=503, retry_after=0.01)
    with client_for(sandbox) as client:
        assert len(client.daily_bars("AAPL", "stock", START, dt.date(2024, 1, 31))) > 15
        assert client.stats.retries == 1


def test_a_run_told_to_wait_too_long_stops_fails_every_symbol_naming_the_wait_and_is_not_retried(
    polygon_env, instance, warehouse_url
):
    sandbox = polygon_env
    symbols = ["BTCUSD", "ETHUSD", "SOLUSD", "XRPUSD"]
    registry = SymbolRegistry(warehouse_url)
    registry.add(symbols, "crypto", START)
    instance.add_dynamic_partitions(symbols_partitions.name, symbols)
    sandbox.fail_next(1, status=429, retry_after=BILLION)  # the run's first request, whichever it is
    started = time.monotonic()
    result = run(instance, symbols, {"max_in_flight": 1})
    assert time.monotonic() - started < scaled(60)  # not 300 s of capped waits, then a step retry
    assert not result.success and not retried(result)
    assert sandbox.request_counts()["total"] == 1  # the answer that said to wait, nothing after it
    rows = {r.symbol: r for r in registry.get_many(symbols)}
    for symbol in symbols:
        assert rows[symbol].backfill_status == "failed", symbol
        assert "asking to wait 1000000000 s (about 31.7 years) before the next request" in rows[symbol].backfill_error
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "the run stopped: Polygon answered HTTP 429 asking to wait 1000000000 s" in failure.step_failure_data.user_failure_data.description
    # once the wait has passed (a new run, a new client), the symbols are fetched
    assert run(instance, symbols).success
    assert {r.backfill_status for r in registry.get_many(symbols)} == {"completed"}
