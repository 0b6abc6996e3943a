"""How the warehouse stores time: naive UTC timestamps and plain dates (no pandas, so the command
line's read-only commands import it cheaply)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Naive UTC now: how the warehouse stores timestamps on every engine."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def as_date(value) -> dt.date | None:
    """A date as a database or a report gives it (a date, ISO text, or None) as a date or None."""
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])
