"""Waiting in tests for events, not fixed seconds, on a machine of any load.

A timeout in a test says how long a quiet machine may take at worst. On a busy machine (the
developer's own, running the suite at load 10 on 2 cores) everything takes several times longer,
so every timeout here is stretched by the machine's load per core, read again at each poll
(`time_factor`, at least 1; MARKET_PIPELINE_TEST_TIME_FACTOR sets it instead). A wait that can see
progress (runs finishing one after another, symbols completing) passes `progress`: its time then
starts again whenever progress changes, so it fails only when nothing moves for that long.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

MAX_FACTOR = 8.0


def time_factor() -> float:
    """How many times slower than a quiet machine this one is now: the 1-minute load average per
    core, at least 1 (at most 8); MARKET_PIPELINE_TEST_TIME_FACTOR, when set, instead."""
    raw = os.environ.get("MARKET_PIPELINE_TEST_TIME_FACTOR")
    if raw:
        return max(1.0, float(raw))
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 1.0
    return max(1.0, min(load, MAX_FACTOR))


def scaled(seconds: float) -> float:
    """`seconds` stretched by the machine's load now: for subprocess and thread timeouts."""
    return seconds * time_factor()


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.5,
    progress: Callable[[], object] | None = None,
):
    """Poll `predicate` until it returns something truthy (returned). Fails after `timeout` seconds
    scaled by the load (the highest factor seen while waiting), counted from the last change of
    `progress()` when given."""
    started = time.monotonic()
    factor = time_factor()
    last = progress() if progress is not None else None
    while True:
        value = predicate()
        if value:
            return value
        if progress is not None:
            now = progress()
            if now != last:
                last, started = now, time.monotonic()
        factor = max(factor, time_factor())
        waited = time.monotonic() - started
        if waited > timeout * factor:
            since = " without progress" if progress is not None else ""
            raise AssertionError(f"timed out after {waited:.0f}s{since} waiting for {what} (load factor {factor:.1f})")
        time.sleep(poll)
