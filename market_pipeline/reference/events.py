"""Ticker changes (`/vX/reference/tickers/{id}/events?types=ticker_change`) and rename planning. Pure.

The composite FIGI is a security's stable identity; a ticker is only its current name. A rename
moves a symbol's history to another ticker only when both name the same security: the same
composite FIGI, or the new ticker's own ticker_change history lists the old ticker. A ticker reused
by another security (different FIGI) is never merged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


class RenameRefused(ValueError):
    """A rename that would merge two securities or cannot be confirmed; the message is user-facing."""


@dataclass(frozen=True)
class TickerChange:
    date: dt.date
    ticker: str


@dataclass(frozen=True)
class TickerEvents:
    figi: str | None
    name: str | None
    changes: tuple[TickerChange, ...]  # oldest first
    problems: tuple[str, ...] = ()

    @property
    def current_ticker(self) -> str | None:
        return self.changes[-1].ticker if self.changes else None

    def tickers(self) -> list[str]:
        return [c.ticker for c in self.changes]


def parse_ticker_events(body) -> TickerEvents:
    """The ticker changes of one security, oldest first; malformed events are skipped and named."""
    result = body.get("results") if isinstance(body, dict) else None
    if not isinstance(result, dict):
        return TickerEvents(None, None, (), ("no `results` in the events answer",))
    changes, problems = [], []
    events = result.get("events")
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("type") != "ticker_change":
            continue
        change = event.get("ticker_change")
        ticker = change.get("ticker") if isinstance(change, dict) else None
        try:
            day = dt.date.fromisoformat(str(event.get("date"))[:10])
        except ValueError:
            problems.append(f"event with unreadable date {event.get('date')!r}")
            continue
        if not isinstance(ticker, str) or not ticker.strip():
            problems.append(f"event of {day} names no ticker")
            continue
        changes.append(TickerChange(day, ticker.strip().upper()))
    changes.sort(key=lambda c: c.date)
    figi = result.get("figi") if isinstance(result.get("figi"), str) else None
    name = result.get("name") if isinstance(result.get("name"), str) else None
    return TickerEvents(figi, name, tuple(changes), tuple(problems))


def rename_detected(symbol: str, events: TickerEvents) -> TickerChange | None:
    """The change that moved this security off `symbol` (its latest ticker is another one), or None."""
    current = events.current_ticker
    if current is None or current == symbol or symbol not in events.tickers():
        return None
    return events.changes[-1]


@dataclass(frozen=True)
class RenamePlan:
    old: str
    new: str
    figi: str | None
    evidence: str  # why both tickers are one security


def plan_rename(
    old: str,
    new: str,
    *,
    old_figi: str | None,
    new_figi: str | None,
    new_events: TickerEvents | None = None,
) -> RenamePlan:
    """Allow moving OLD's history to NEW only when both are one security; raise `RenameRefused` else."""
    if old == new:
        raise RenameRefused(f"{old} and {new} are the same symbol: nothing to rename")
    if old_figi and new_figi:
        if old_figi != new_figi:
            raise RenameRefused(
                f"{new} is a different security from {old} (composite FIGI {new_figi}, not {old_figi}): "
                f"a reused ticker is never merged; track {new} as a new symbol instead"
            )
        return RenamePlan(old, new, old_figi, f"same composite FIGI {old_figi}")
    if new_events is not None and old in new_events.tickers() and new_events.current_ticker == new:
        if old_figi and new_events.figi and new_events.figi != old_figi:
            raise RenameRefused(
                f"{new}'s ticker history belongs to FIGI {new_events.figi}, not {old}'s {old_figi}: never merged"
            )
        return RenamePlan(old, new, new_events.figi or old_figi, f"{new}'s ticker_change events list {old}")
    raise RenameRefused(
        f"cannot confirm that {new} is the security {old} traded as (no composite FIGI to compare and "
        f"{new}'s ticker_change events do not list {old}): nothing was changed"
    )
