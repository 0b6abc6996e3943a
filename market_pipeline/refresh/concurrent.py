"""Refreshing many symbols with their Polygon requests in flight at once.

`refresh_symbols` runs `refresh_symbol`'s three steps for each row: prepare and store on the
calling thread (every database write stays there: SQLite has one writer, and the order is
deterministic), the fetches (HTTP and parsing only) in a pool of `max_in_flight` threads
(`market_pipeline.polygon.inflight`). At most 2 x `max_in_flight` symbols are prepared (marked
in_progress) but not yet stored at any moment. Results come in the order of `rows`. With
`max_in_flight=1` it is `refresh_symbol` for one row after another.

The pace stays the plan's: the client's pacer (the deployment-wide `SharedRateLimiter` when
`requests_per_minute > 0`) is called by every thread before each attempt. A symbol's `requests` are
the requests its own fetch sent (the client counts per thread). Leaving early (an interrupt raised
into the generator) cancels the fetches not started and stops the client: no further request is
sent; symbols prepared but not stored stay in_progress for the caller to mark failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator

from market_pipeline.polygon.client import PolygonClient
from market_pipeline.polygon.inflight import in_flight
from market_pipeline.refresh.ingest import (
    DEFAULT_HISTORY_DAYS,
    DEFAULT_REFETCH_SESSIONS,
    PreparedFetch,
    SymbolResult,
    fetch_symbol,
    prepare_symbol,
    store_symbol,
)
from market_pipeline.warehouse.registry import SymbolRegistry, TrackedSymbol
from market_pipeline.warehouse.store import BarStore


def refresh_symbols(
    client: PolygonClient,
    store: BarStore,
    registry: SymbolRegistry,
    rows: Iterable[TrackedSymbol],
    *,
    max_in_flight: int,
    run_id: str | None,
    today: dt.date | None = None,
    refetch_sessions: int = DEFAULT_REFETCH_SESSIONS,
    default_history_days: int = DEFAULT_HISTORY_DAYS,
    full_refetch: bool = False,
    completed_session: dt.date | Callable[[TrackedSymbol], dt.date | None] | None = None,
) -> Iterator[SymbolResult]:
    """Yield each row's SymbolResult as it is stored, in the order of `rows`. `completed_session`:
    a date, or a function of the row (its market's last completed session)."""

    def prepared() -> Iterator[SymbolResult | PreparedFetch]:
        for row in rows:
            session = completed_session(row) if callable(completed_session) else completed_session
            yield prepare_symbol(
                store, registry, row, run_id=run_id, today=today, refetch_sessions=refetch_sessions,
                default_history_days=default_history_days, full_refetch=full_refetch, completed_session=session,
            )

    for item, outcome in in_flight(
        prepared(),
        lambda prep: fetch_symbol(client, prep),
        max_in_flight=max_in_flight,
        skip=lambda prep: isinstance(prep, SymbolResult),
        on_stop=client.stop,
        gate=client.cpu_gate,
    ):
        yield item if isinstance(item, SymbolResult) else store_symbol(store, registry, item, outcome)
