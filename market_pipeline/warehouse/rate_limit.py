"""The API plan's request budget, shared by every thread, op, run and process that uses one warehouse.

Polygon's plans cap requests per minute per key. A pacer inside one process cannot hold that line
when several runs (or machines) call Polygon at once, so the budget lives in the warehouse every run
worker already shares: table `api_rate_slots` holds, per API origin, one row per request the plan
allows in a window (R rows for R requests a minute), each with the time it was last used. Taking a
request is one short transaction: find the slot used longest ago; if that was at least a window ago,
stamp it with now and go, else wait until it frees. So in ANY 60-second window at most R requests
start, across the whole deployment, and retries count like every other request.

Transactions serialise on a PostgreSQL advisory lock per origin, on SQLite on the database's write
lock (the first statement writes). Times are each process's `time.time()`: machines sharing a
PostgreSQL warehouse need their clocks in sync (NTP), as they do for Dagster's own schedules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from market_pipeline.warehouse.engine import get_engine
from market_pipeline.warehouse.schema import api_rate_slots

WINDOW_SECONDS = 60.0
# A slot is stamped when a request is cleared to start; the request reaches the API a little later
# (thread scheduling, a busy machine, the connection), and the API counts arrivals. A slot therefore
# frees this much after a full window, so a request cleared at t and one cleared at t + window +
# margin cannot arrive within the API's 60 s (measured: 1-2 s of skew with 3 runs x 8 threads on 2
# cores; without the margin the sandbox answered 3 of 75 requests with 429).
ARRIVAL_MARGIN_SECONDS = 3.0
_PG_LOCK_NAMESPACE = 0x52415445  # "RATE": pg_advisory_xact_lock(namespace, hashtext(origin))
MAX_SLEEP = 5.0  # wake at least this often while waiting (a changed plan rate or a freed slot)


class SharedRateLimiter:
    """At most `per_minute` requests to `origin` in any `window` seconds, across the deployment."""

    def __init__(
        self,
        url: str,
        origin: str,
        per_minute: int,
        *,
        window: float = WINDOW_SECONDS + ARRIVAL_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if per_minute <= 0:
            raise ValueError("a shared rate limit needs a positive number of requests per minute")
        self.url, self.origin, self.per_minute, self.window = url, origin, per_minute, window
        self._clock, self._sleep = clock, sleep
        self._sized = False
        self._local = threading.Lock()  # threads of one process queue here first: one transaction at a time

    def wait(self, stop: threading.Event | None = None) -> float:
        """Block until a request may start; returns the seconds waited. When `stop` is set (the run is
        ending) it returns at once without taking a slot: the caller then sends nothing."""
        waited = 0.0
        while True:
            if stop is not None and stop.is_set():
                return waited
            with self._local:
                delay = self._take()
            if delay <= 0:
                return waited
            pause = min(delay, MAX_SLEEP)
            if stop is not None and self._sleep is time.sleep:
                stop.wait(pause)
            else:
                self._sleep(pause)
            waited += pause

    def _take(self) -> float:
        engine = get_engine(self.url)
        with engine.begin() as conn:
            self._lock(conn)
            if not self._sized:
                self._size_slots(conn)
            now = self._clock()
            slots = api_rate_slots.c
            oldest = conn.execute(
                sa.select(slots.slot, slots.used_at)
                .where(slots.origin == self.origin, slots.slot < self.per_minute)
                .order_by(slots.used_at, slots.slot)
                .limit(1)
            ).first()
            free_at = oldest.used_at + self.window
            if free_at > now:
                return free_at - now
            conn.execute(
                sa.update(api_rate_slots)
                .where(slots.origin == self.origin, slots.slot == oldest.slot)
                .values(used_at=now)
            )
            return 0.0

    def _lock(self, conn: sa.Connection) -> None:
        """Serialise the transaction with every other taker of this origin's budget."""
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PG_LOCK_NAMESPACE, self.origin))
        else:  # SQLite: a first statement that writes (no row matches) takes the database's write lock
            slots = api_rate_slots.c
            conn.execute(sa.update(api_rate_slots).where(slots.origin == self.origin, slots.slot < 0).values(used_at=0.0))

    def _size_slots(self, conn: sa.Connection) -> None:
        """One slot per request a window allows (slots beyond a lowered rate are ignored, not deleted,
        so processes still configured with the older rate keep working)."""
        slots = api_rate_slots.c
        have = set(conn.execute(sa.select(slots.slot).where(slots.origin == self.origin)).scalars())
        missing = [{"origin": self.origin, "slot": i, "used_at": 0.0} for i in range(self.per_minute) if i not in have]
        if missing:
            conn.execute(sa.insert(api_rate_slots), missing)
        self._sized = True


def requests_in_window(url: str, origin: str, now: float | None = None, window: float = WINDOW_SECONDS) -> int:
    """How many slots of `origin` were used in the last `window` seconds (for tests and `doctor` output)."""
    now = time.time() if now is None else now
    slots = api_rate_slots.c
    with get_engine(url).connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(slots.origin == origin, slots.used_at > now - window)
            ).scalar_one()
        )


def max_in_window(times: list[float], window: float = WINDOW_SECONDS) -> int:
    """The most of `times` (request starts or arrivals, seconds) inside any `window` seconds: what an
    API's sliding-window limit sees (tests and the rate-budget benchmark count with it)."""
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
