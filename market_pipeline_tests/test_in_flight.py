"""Issue 12, part 1: Polygon requests in flight at once, within the plan.

POLYGON_MAX_IN_FLIGHT (checked at start-up), the ohlcv_daily op's fetches in a thread pool (real
Dagster runs against the sandbox over HTTP, real SQLite), results identical to one request at a time,
a failing symbol failing only itself, the plan's budget holding across the threads, and an interrupt
stopping every fetch."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time

import pytest

from market_pipeline import settings
from market_pipeline.definitions import defs
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.reconcile import range_tags
from market_pipeline.defs.resources import PolygonResource
from market_pipeline.polygon.client import PolygonClient, RetryPolicy, Stopped
from market_pipeline.refresh.concurrent import refresh_symbols
from market_pipeline.refresh.ingest import refresh_symbol
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.rate_limit import SharedRateLimiter, max_in_window
from market_pipeline_tests.dagster_helpers import materialization_metadata, served, wait_for
from market_pipeline_tests.waiting import scaled

START = "2024-01-02"
SYMBOLS = [f"Z{chr(65 + i)}A" for i in range(16)]  # ZAA, ZBA, ... ZPA: 16 stocks of the sandbox's universe
TODAY = dt.date(2025, 6, 2)


# ---- the setting ------------------------------------------------------------------------------


def test_the_setting_defaults_to_8_and_reads_whole_numbers(monkeypatch):
    monkeypatch.delenv("POLYGON_MAX_IN_FLIGHT", raising=False)
    assert settings.max_in_flight() == 8
    monkeypatch.setenv("POLYGON_MAX_IN_FLIGHT", " 3 ")
    assert settings.max_in_flight() == 3
    monkeypatch.setenv("POLYGON_MAX_IN_FLIGHT", "")
    assert settings.max_in_flight() == 8


@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5", "1e3", "８"])
def test_a_bad_setting_is_one_line_naming_it_and_a_valid_value(monkeypatch, value):
    monkeypatch.setenv("POLYGON_MAX_IN_FLIGHT", value)
    with pytest.raises(settings.SettingsError) as raised:
        settings.validate()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"POLYGON_MAX_IN_FLIGHT={value!r} is not a whole number of 1 or more")
    assert "POLYGON_MAX_IN_FLIGHT=8" in message


def test_the_client_carries_the_setting(polygon_env, monkeypatch):
    monkeypatch.setenv("POLYGON_MAX_IN_FLIGHT", "5")
    with PolygonResource().get_client() as client:
        assert client.max_in_flight == 5
        assert client._session.get_adapter(polygon_env.url).poolmanager.connection_pool_kw["maxsize"] == 10
    with PolygonResource(max_in_flight=16).get_client() as client:  # the resource's field wins
        assert client.max_in_flight == 16
        assert client._session.get_adapter(polygon_env.url).poolmanager.connection_pool_kw["maxsize"] == 16


def test_a_bad_setting_stops_the_code_location_loading(tmp_path):
    env = {**os.environ, "POLYGON_MAX_IN_FLIGHT": "abc", "MARKET_PIPELINE_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", "import market_pipeline.definitions"], env=env, capture_output=True, text=True, timeout=scaled(120)
    )
    assert done.returncode != 0
    assert "POLYGON_MAX_IN_FLIGHT='abc' is not a whole number of 1 or more" in done.stderr
    assert not (tmp_path / "home").exists()  # nothing created


def track(url, instance, symbols, sandbox=None):
    registry = SymbolRegistry(url)
    registry.add(symbols, "stock", START)
    if instance is not None:
        instance.add_dynamic_partitions(symbols_partitions.name, list(symbols))
    if sandbox is not None:
        sandbox.add_to_universe(symbols)
    return registry


def run(instance, keys, **kw):
    job = defs.resolve_job_def("ohlcv_daily_job")
    return job.execute_in_process(instance=instance, tags=range_tags(keys), raise_on_error=False, **kw)


@pytest.mark.parametrize("how", ["environment", "resource"])
def test_a_dagster_run_with_a_bad_value_is_refused_before_anything_is_fetched_or_written(
    polygon_env, instance, warehouse_url, monkeypatch, how
):
    registry = track(warehouse_url, instance, ["AAPL", "MSFT"], polygon_env)
    before = {r.symbol: (r.backfill_status, r.backfill_error) for r in registry.get_many(["AAPL", "MSFT"])}
    config = None
    if how == "environment":
        monkeypatch.setenv("POLYGON_MAX_IN_FLIGHT", "0")
    else:
        config = {"resources": {"polygon": {"config": {"max_in_flight": 0}}}}
    result = run(instance, ["AAPL", "MSFT"], run_config=config)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]  # not retried
    description = failure.step_failure_data.user_failure_data.description
    assert "\n" not in description and "is not a whole number of 1 or more" in description
    assert description.startswith("POLYGON_MAX_IN_FLIGHT='0'" if how == "environment" else "PolygonResource max_in_flight=0")
    assert polygon_env.request_counts()["total"] == 0  # nothing fetched
    assert BarStore(warehouse_url).summary(["AAPL", "MSFT"]) == {}  # nothing written
    assert {r.symbol: (r.backfill_status, r.backfill_error) for r in registry.get_many(["AAPL", "MSFT"])} == before


# ---- real runs: in flight at once, the same results --------------------------------------------


def _materialize(instance, url, sandbox, in_flight: int, monkeypatch) -> dict:
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
    monkeypatch.setenv("POLYGON_MAX_IN_FLIGHT", str(in_flight))
    track(url, instance, SYMBOLS, sandbox)
    sandbox.reset_counts()
    result = run(instance, SYMBOLS)
    assert result.success
    store = BarStore(url)
    return {
        "peak": sandbox.max_concurrent(),
        "counts": sandbox.request_counts(),
        "bars": {s: store.read_bars(s).drop(columns=["fetched_at"], errors="ignore") for s in SYMBOLS},
        "meta": {s: materialization_metadata(instance, s) for s in SYMBOLS},
        "status": {r.symbol: (r.backfill_status, r.history_from) for r in SymbolRegistry(url).get_many(SYMBOLS)},
    }


def test_eight_in_flight_stores_what_one_at_a_time_stores(sandbox, tmp_path, monkeypatch):
    """16 new symbols at 100 ms a request: with 8 in flight the sandbox answers several requests at once
    (never more than 8), with 1 never more than one; the warehouse and every symbol's metadata are the same."""
    from dagster import instance_for_test

    monkeypatch.setenv("POLYGON_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("POLYGON_BASE_URL", sandbox.url)
    monkeypatch.setenv("POLYGON_REQUESTS_PER_MINUTE", "0")
    sandbox.latency_ms = 100
    runs = {}
    for in_flight in (1, 2, 8):
        with instance_for_test() as instance:
            runs[in_flight] = _materialize(instance, f"sqlite:///{tmp_path / f'w{in_flight}.sqlite'}", sandbox, in_flight, monkeypatch)
    assert runs[1]["peak"] == 1
    # the reference reads run beside the bars in their own threads, on the same in-flight slots
    assert runs[2]["peak"] == 2 and runs[2]["counts"] == runs[1]["counts"]
    assert 1 < runs[8]["peak"] <= 8
    assert runs[1]["counts"] == runs[8]["counts"]  # the same requests: one range per symbol, one list page
    assert runs[8]["counts"]["aggs_range"] == len(SYMBOLS) and runs[8]["counts"]["tickers"] == 1
    assert runs[8]["counts"]["ticker_detail"] == 0
    assert runs[1]["status"] == runs[8]["status"]
    for symbol in SYMBOLS:
        one, eight = runs[1]["bars"][symbol], runs[8]["bars"][symbol]
        assert len(eight) == len(served(symbol, "stock", dt.date.fromisoformat(START))) > 0
        assert one.equals(eight), symbol
        m1, m8 = runs[1]["meta"][symbol], runs[8]["meta"][symbol]
        assert m8["requests"] == 1 and m8["fetch_path"] == "range" and not m8["requests_shared"]
        skip = ("dagster/row_count",)  # the table's rows when this symbol was stored: order-dependent
        assert {k: v for k, v in m1.items() if k not in skip} == {k: v for k, v in m8.items() if k not in skip}


# ---- refresh_symbols against the sandbox -------------------------------------------------------


def _client(sandbox, in_flight: int, **kw) -> PolygonClient:
    kw.setdefault("retry", RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02))
    return PolygonClient(SANDBOX_API_KEY, sandbox.url, 0, max_in_flight=in_flight, **kw)


def _refresh_all(client, url, symbols, in_flight):
    registry = SymbolRegistry(url)
    rows = registry.get_many(symbols)
    return list(refresh_symbols(
        client, BarStore(url), registry, rows, max_in_flight=in_flight, run_id="r1", today=TODAY
    ))


def test_a_failing_symbol_among_concurrent_ones_fails_only_itself(sandbox, sqlite_url):
    symbols = SYMBOLS[:10]
    track(sqlite_url, None, symbols)
    sandbox.fail_ticker(symbols[2], 404)  # final at once
    sandbox.fail_ticker(symbols[6], 503)  # transient, every attempt: exhausted after 3
    sandbox.latency_ms = 20
    with _client(sandbox, 8) as client:
        results = _refresh_all(client, sqlite_url, symbols, 8)
    assert [r.symbol for r in results] == symbols  # the order of the rows
    by = {r.symbol: r for r in results}
    assert by[symbols[2]].status == "failed" and "HTTP 404" in by[symbols[2]].error and not by[symbols[2]].transient
    assert by[symbols[6]].status == "failed" and "gave up after 3 attempts" in by[symbols[6]].error
    assert by[symbols[6]].transient
    # each symbol's own requests, though other threads sent theirs at the same time
    assert by[symbols[2]].requests == 1 and by[symbols[6]].requests == 3
    registry, store = SymbolRegistry(sqlite_url), BarStore(sqlite_url)
    rows = {r.symbol: r for r in registry.get_many(symbols)}
    for symbol in symbols:
        if symbol in (symbols[2], symbols[6]):
            assert rows[symbol].backfill_status == "failed" and rows[symbol].backfill_error == by[symbol].error
            assert store.read_bars(symbol).empty
            continue
        assert by[symbol].status == "completed" and by[symbol].requests == 1, by[symbol]
        assert rows[symbol].backfill_status == "completed"
        assert len(store.read_bars(symbol)) == by[symbol].rows_fetched > 0
    assert sandbox.request_counts()["aggs_range"] == 8 + 1 + 3


def test_one_in_flight_is_refresh_symbol_one_after_another(sandbox, tmp_path):
    symbols = SYMBOLS[:4]
    urls = [f"sqlite:///{tmp_path / f'{name}.sqlite'}" for name in ("loop", "one")]
    for url in urls:
        track(url, None, symbols)
    with _client(sandbox, 1) as client:
        registry = SymbolRegistry(urls[0])
        looped = [
            refresh_symbol(client, BarStore(urls[0]), registry, row, run_id="r1", today=TODAY)
            for row in registry.get_many(symbols)
        ]
    with _client(sandbox, 1) as client:
        main = threading.get_ident()
        seen = set()
        original = client.fetch_daily_bars
        client.fetch_daily_bars = lambda *a, **k: seen.add(threading.get_ident()) or original(*a, **k)
        one = _refresh_all(client, urls[1], symbols, 1)
    assert seen == {main}  # no thread at all
    assert [r.as_dict() for r in looped] == [r.as_dict() for r in one]


# ---- the plan's budget across threads ----------------------------------------------------------


class _Recording:
    """A limiter that records when each request it admitted may start."""

    def __init__(self, inner, clock=time.time):
        self.inner, self.clock, self.starts = inner, clock, []
        self._lock = threading.Lock()

    def wait(self, stop=None):
        waited = self.inner.wait(stop=stop)
        with self._lock:
            self.starts.append(self.clock())
        return waited


def test_eight_threads_keep_to_the_shared_budget(sandbox, sqlite_url):
    """4 requests per 1.5 s window (the plan's shape, shortened) with 8 in flight: never more than 4 start
    in any window, every symbol completes with its one request."""
    symbols = SYMBOLS[:12]
    track(sqlite_url, None, symbols)
    limiter = _Recording(SharedRateLimiter(sqlite_url, sandbox.url, 4, window=1.5))
    with _client(sandbox, 8, limiter=limiter) as client:
        results = _refresh_all(client, sqlite_url, symbols, 8)
    assert [(r.status, r.requests) for r in results] == [("completed", 1)] * 12
    assert len(limiter.starts) == sandbox.request_counts()["aggs_range"] == 12
    assert max_in_window(limiter.starts, 1.5 - 0.05) <= 4
    assert max(limiter.starts) - min(limiter.starts) >= 2 * 1.5 - 0.1  # they did wait for the budget


class _FakeTime:
    """A clock every thread shares; sleeping moves it on (and yields the thread)."""

    def __init__(self):
        self.now = 1_000_000.0
        self._lock = threading.Lock()

    def clock(self):
        with self._lock:
            return self.now

    def sleep(self, seconds):
        with self._lock:
            self.now += seconds
        time.sleep(0.001)


def test_the_free_plan_with_eight_in_flight_just_waits(sandbox, sqlite_url):
    """5 requests a minute (fake clock): 12 symbols with 8 in flight all complete, at most 5 a minute."""
    symbols = SYMBOLS[:12]
    track(sqlite_url, None, symbols)
    fake = _FakeTime()
    limiter = _Recording(SharedRateLimiter(sqlite_url, sandbox.url, 5, clock=fake.clock, sleep=fake.sleep), fake.clock)
    with _client(sandbox, 8, limiter=limiter) as client:
        results = _refresh_all(client, sqlite_url, symbols, 8)
    assert [(r.status, r.requests) for r in results] == [("completed", 1)] * 12
    assert len(limiter.starts) == 12
    assert max_in_window(limiter.starts, 60.0) <= 5
    assert max(limiter.starts) - min(limiter.starts) >= 120.0  # 12 requests at 5 a minute: two minutes and more


# ---- stopping ----------------------------------------------------------------------------------


def test_an_interrupt_cancels_the_queued_fetches_and_sends_nothing_more(sandbox, sqlite_url):
    symbols = SYMBOLS[:10]
    registry = track(sqlite_url, None, symbols)
    sandbox.latency_ms = 300
    client = _client(sandbox, 2)
    results = refresh_symbols(
        client, BarStore(sqlite_url), registry, registry.get_many(symbols), max_in_flight=2, run_id="r1", today=TODAY
    )
    first = next(results)
    assert first.status == "completed"
    with pytest.raises(KeyboardInterrupt):
        results.throw(KeyboardInterrupt)
    # the fetches running when it was thrown finish: every request that reached the sandbox is answered
    wait_for(lambda: len([r for r in sandbox.request_log() if r.endpoint == "aggs_range"]) == sandbox.request_counts()["aggs_range"],
             30, "the requests on the wire to be answered", poll=0.05)
    sent = sandbox.request_counts()["aggs_range"]
    assert 1 < sent <= 1 + 2 + 2  # the first, the next ones (two threads) that ran before and at the throw
    time.sleep(1.0)  # nothing queued starts, nothing is retried
    assert sandbox.request_counts()["aggs_range"] == sent
    with pytest.raises(Stopped):
        client.fetch_daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    statuses = {r.symbol: r.backfill_status for r in registry.get_many(symbols)}
    assert statuses[symbols[0]] == "completed"
    # prepared (in_progress) but never stored: the op's interrupt handler marks them failed
    assert {s for s, status in statuses.items() if status == "in_progress"} <= set(symbols[1:5])
    assert all(status in ("pending", "completed", "in_progress", None) for status in statuses.values()), statuses
    client.close()


def test_the_gate_keeps_the_fetches_decoding_only_while_the_consumer_waits():
    """With a gate, the CPU part of each fetch (what it does holding the gate) never runs while the
    consumer works on a result: it fills the consumer's waits. Results stay in order; no deadlock."""
    import threading
    import time

    from market_pipeline.polygon.inflight import in_flight

    gate = threading.RLock()
    busy = threading.Event()  # the consumer is working on a result
    overlaps = []

    def fetch(i):
        time.sleep(0.005)  # the network
        with gate:
            if busy.is_set():
                overlaps.append(i)
            time.sleep(0.001)  # decoding
        return i * i

    seen = []
    for item, result in in_flight(range(40), fetch, max_in_flight=4, gate=gate):
        busy.set()
        seen.append((item, result))
        time.sleep(0.002)  # storing
        busy.clear()
    assert seen == [(i, i * i) for i in range(40)]
    assert overlaps == []
    assert gate.acquire(blocking=False)  # let go at the end
    gate.release()
