"""Requests in flight: run a fetch for each item in a small thread pool, results in the items' order.

`in_flight(items, fetch, max_in_flight=N)` pulls `items` lazily on the calling thread (so whatever
produces them, database writes included, stays on that thread), hands `fetch(item)` to one of N
worker threads and yields `(item, fetch(item))` in the order of `items`. At most `window` items
(default 2 x N) are pulled but not yet yielded, so memory stays flat however many items there are.
`fetch` should do HTTP only and return its errors rather than raise them; an exception it raises
is raised again when its item's turn comes.

N = 1 runs everything on the calling thread, one item after another (no pool at all).

`gate` (e.g. `PolygonClient.cpu_gate`, which the fetches take while they decode and parse): the
calling thread holds it while it works on the items and results (storing them, and whatever its
consumer does between two results) and lets it go only while it waits for a fetch. The decoding then
fills the caller's waits instead of stalling its every database call behind the GIL.

Leaving early (an interrupt raised into the generator, `close()`, an exception in the consumer)
cancels the fetches not started, calls `on_stop` (e.g. `PolygonClient.stop`, so the fetches still
running send no further request) and shuts the pool down without waiting for them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


def in_flight(
    items: Iterable[T],
    fetch: Callable[[T], R],
    *,
    max_in_flight: int,
    window: int | None = None,
    skip: Callable[[T], bool] | None = None,
    on_stop: Callable[[], None] | None = None,
    gate=None,
) -> Iterator[tuple[T, R | None]]:
    """Yield `(item, fetch(item))` per item, in order; `(item, None)` for an item `skip` says needs
    no fetch (it still keeps its place in the order)."""
    if max_in_flight <= 1:
        for item in items:
            yield item, (None if skip is not None and skip(item) else fetch(item))
        return
    window = max(window or 2 * max_in_flight, max_in_flight)
    pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="polygon-in-flight")
    pending: deque[tuple[T, Future | None]] = deque()
    source = iter(items)
    finished = False
    held = _Held(gate)
    try:
        held.take()
        while True:
            while len(pending) < window:
                item = next(source, _END)
                if item is _END:
                    break
                needs_fetch = skip is None or not skip(item)
                pending.append((item, pool.submit(fetch, item) if needs_fetch else None))
            if not pending:
                break
            item, future = pending.popleft()
            if future is not None and not future.done():
                held.let_go()  # the fetch threads decode while this thread waits
                try:
                    future.exception()  # waits; the result (or its exception) is taken below
                finally:
                    held.take()
            yield item, (None if future is None else future.result())
        finished = True
    finally:
        if not finished:
            for _, future in pending:
                if future is not None:
                    future.cancel()
            if on_stop is not None:
                on_stop()
        held.let_go()  # before waiting for the pool: its threads may be waiting for the gate
        pool.shutdown(wait=finished, cancel_futures=True)


class _Held:
    """Whether the calling thread holds the gate (None: no gate)."""

    def __init__(self, gate):
        self.gate, self.held = gate, False

    def take(self) -> None:
        if self.gate is not None and not self.held:
            self.gate.acquire()
            self.held = True

    def let_go(self) -> None:
        if self.held:
            self.held = False
            try:
                self.gate.release()
            except RuntimeError:  # finalised on another thread: the gate dies with its owner's client
                pass
