"""Freshness of one symbol's stored bars. Pure: "now" is always given.

A symbol is fresh when its last stored bar is the latest completed session of its market (XNYS for
stocks and ETFs, the UTC day for crypto) as Polygon has published it: a session counts as expected
only `PUBLICATION_DELAY` after it ends. A delisted symbol whose history reaches its last trading
session is expected-stale (passes). Otherwise it is stale, naming the missing sessions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from market_pipeline import calendars

# Polygon publishes a day's aggregates some time after the session ends (the free plan is also
# 15 minutes delayed); the refresh schedules run at 18:30 New York and 00:15 UTC.
PUBLICATION_DELAY = {"stock": dt.timedelta(hours=3), "etf": dt.timedelta(hours=3), "crypto": dt.timedelta(hours=2)}
MAX_NAMED = 20


def last_trading_session(asset_class: str, delisted_on: dt.date) -> dt.date:
    """The last session on or before the delisting date (Polygon's `delisted_utc`: the last day traded)."""
    days = calendars.session_days(asset_class, np.datetime64(delisted_on - dt.timedelta(days=14), "D"), np.datetime64(delisted_on, "D"))
    return days[-1].astype(dt.date) if len(days) else delisted_on


@dataclass(frozen=True)
class Freshness:
    state: str  # "fresh", "stale", "delisted" (expected-stale), "empty" (no bars)
    passed: bool
    expected: dt.date  # the session the last stored bar should be
    last_stored: dt.date | None
    missing: tuple[dt.date, ...]  # the first MAX_NAMED missing sessions
    missing_count: int
    description: str

    def as_metadata(self) -> dict:
        return {
            "freshness": self.state,
            "expected_session": self.expected.isoformat(),
            "last_stored": self.last_stored.isoformat() if self.last_stored else None,
            "sessions_missing": self.missing_count,
            "missing_sessions": [d.isoformat() for d in self.missing],
        }


def expected_session(asset_class: str, now: dt.datetime, delisted_on: dt.date | None = None) -> dt.date:
    """The latest session Polygon has published at `now`, capped at a delisted symbol's last session."""
    delay = PUBLICATION_DELAY.get(asset_class, dt.timedelta(hours=3))
    expected = calendars.latest_completed_session(asset_class, now - delay)
    if delisted_on is not None:
        expected = min(expected, last_trading_session(asset_class, delisted_on))
    return expected


def evaluate_freshness(
    symbol: str,
    asset_class: str,
    last_stored: dt.date | None,
    now: dt.datetime,
    *,
    delisted_on: dt.date | None = None,
) -> Freshness:
    """Fresh, stale (missing sessions named), delisted (expected-stale) or empty, at `now` (tz-aware)."""
    if now.tzinfo is None:
        raise ValueError("evaluate_freshness needs a timezone-aware now")
    expected = expected_session(asset_class, now, delisted_on)
    if last_stored is None:
        return Freshness("empty", False, expected, None, (), 0, f"{symbol}: no bars stored yet (expected up to {expected})")
    if last_stored >= expected:
        if delisted_on is not None:
            return Freshness(
                "delisted", True, expected, last_stored, (), 0,
                f"{symbol}: delisted on {delisted_on}; history complete up to its last session {expected} (expected-stale)",
            )
        return Freshness("fresh", True, expected, last_stored, (), 0, f"{symbol}: up to date ({last_stored})")
    days = calendars.session_days(asset_class, np.datetime64(last_stored + dt.timedelta(days=1), "D"), np.datetime64(expected, "D"))
    missing = tuple(d.astype(dt.date) for d in days[:MAX_NAMED])
    named = ", ".join(d.isoformat() for d in missing) + (f" and {len(days) - MAX_NAMED} more" if len(days) > MAX_NAMED else "")
    return Freshness(
        "stale", False, expected, last_stored, missing, len(days),
        f"{symbol}: {len(days)} session(s) behind (last stored {last_stored}, expected {expected}): missing {named}",
    )
