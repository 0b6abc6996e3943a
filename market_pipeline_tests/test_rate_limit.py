"""The plan's request budget in the warehouse: never more than R request starts in any window, across
threads and real processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from market_pipeline.warehouse.rate_limit import (
    ARRIVAL_MARGIN_SECONDS,
    WINDOW_SECONDS,
    SharedRateLimiter,
    requests_in_window,
)
from market_pipeline_tests.waiting import scaled

ORIGIN = "http://127.0.0.1:1"


class FakeTime:
    def __init__(self):
        self.now = 1_000_000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_window_holds_with_an_injected_clock(sqlite_url):
    fake = FakeTime()
    limiter = SharedRateLimiter(sqlite_url, ORIGIN, 3, clock=fake.clock, sleep=fake.sleep)
    starts = []
    for _ in range(7):
        limiter.wait()
        starts.append(fake.now)
    base = starts[0]
    assert [s - base for s in starts[:3]] == [0, 0, 0]  # the first three go at once
    window = WINDOW_SECONDS + ARRIVAL_MARGIN_SECONDS  # 60 s, and the margin for the request to arrive
    assert starts[3] - base == pytest.approx(window)  # the fourth when the first leaves the window
    assert starts[6] - base == pytest.approx(2 * window)
    assert requests_in_window(sqlite_url, ORIGIN, now=fake.now, window=window) == 1  # 4-6 started exactly a window ago
    assert requests_in_window(sqlite_url, ORIGIN, now=fake.now - 1, window=window) == 3


def test_a_lower_rate_in_another_process_config_still_holds(sqlite_url):
    fake = FakeTime()
    SharedRateLimiter(sqlite_url, ORIGIN, 5, clock=fake.clock, sleep=fake.sleep).wait()
    lower = SharedRateLimiter(sqlite_url, ORIGIN, 2, clock=fake.clock, sleep=fake.sleep)
    lower.wait()  # the second request of the window: the lower rate allows it
    began = fake.now
    lower.wait()  # two requests already in this window: wait for the first to leave it
    assert fake.now - began == pytest.approx(WINDOW_SECONDS + ARRIVAL_MARGIN_SECONDS)


def _taker(url: str, per_minute: int, window: float, count: int, queue) -> None:
    limiter = SharedRateLimiter(url, ORIGIN, per_minute, window=window)
    stamps = []
    for _ in range(count):
        limiter.wait()
        stamps.append(time.time())
    queue.put(stamps)


def _max_in_any_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best, lo = 0, 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_processes_and_threads_share_one_budget(engine, sqlite_url, request):
    url = sqlite_url if engine == "sqlite" else request.getfixturevalue("postgres_url")
    SharedRateLimiter(url, ORIGIN, 4, window=1.5).wait()  # create the table and the slots first
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_taker, args=(url, 4, 1.5, 5, queue)) for _ in range(3)]
    for w in workers:
        w.start()
    local: list[float] = []

    def thread_taker():
        limiter = SharedRateLimiter(url, ORIGIN, 4, window=1.5)
        for _ in range(3):
            limiter.wait()
            local.append(time.time())

    threads = [threading.Thread(target=thread_taker) for _ in range(2)]
    for t in threads:
        t.start()
    stamps = [s for _ in workers for s in queue.get(timeout=scaled(120))]
    for w in workers:
        w.join(60)
    for t in threads:
        t.join(60)
    stamps += local
    assert len(stamps) == 3 * 5 + 2 * 3
    # 21 requests at 4 per 1.5 s: never more than 4 start in any 1.5 s window (0.05 s of clock jitter allowed)
    assert _max_in_any_window(stamps, 1.5 - 0.05) <= 4
    assert max(stamps) - min(stamps) >= (len(stamps) // 4 - 1) * 1.5 - 0.1  # and they did have to wait


def test_the_pipeline_client_takes_its_requests_from_the_shared_budget(polygon_env, warehouse_url):
    """Every request of the resource's client (as ops and the CLI use it) is counted in the warehouse."""
    import datetime as dt

    from market_pipeline.defs.resources import PolygonResource

    with PolygonResource(requests_per_minute=3).get_client() as client:
        assert isinstance(client.pacer, SharedRateLimiter)
        client.daily_bars("AAPL", "stock", dt.date(2024, 1, 2), dt.date(2024, 1, 31))
        client.daily_bars("BTCUSD", "crypto", dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    assert requests_in_window(warehouse_url, polygon_env.url) == 2
    with PolygonResource(requests_per_minute=0).get_client() as client:
        assert not isinstance(client.pacer, SharedRateLimiter)  # 0: no pacing at all
