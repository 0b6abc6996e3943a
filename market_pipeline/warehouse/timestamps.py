"""How the warehouse stores time: naive UTC timestamps and plain dates (no pandas, so the command
line's read-only commands import it cheaply)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import contextmanager


_clock: Callable[[], dt.datetime] | None = None  # `clock_at`: the instant every stamp takes (tests)


def utcnow() -> dt.datetime:
    """Naive UTC now: how the warehouse stores timestamps on every engine (every `fetched_at`,
    revision and event stamp the warehouse writes comes from here)."""
    if _clock is not None:
        return _clock()
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@contextmanager
def clock_at(moment: dt.datetime | Callable[[], dt.datetime]):
    """Within the block, `utcnow()` answers `moment` (naive UTC, or aware: converted), or what the
    callable returns: how tests inject the instants writes are stamped with, instead of the wall clock."""
    global _clock
    if isinstance(moment, dt.datetime):
        fixed = moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
        source = lambda: fixed  # noqa: E731
    else:
        source = moment
    saved, _clock = _clock, source
    try:
        yield
    finally:
        _clock = saved


def as_date(value) -> dt.date | None:
    """A date as a database or a report gives it (a date, ISO text, or None) as a date or None."""
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])
