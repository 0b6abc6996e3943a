"""symbol_check_state: each symbol's checks folded over its bars dated before a cut
(market_pipeline.quality.checks_fold), kept with what they were folded from.

A state is used again only when the bars before its cut still have the fingerprint they had (count,
first and last date, latest `fetched_at`, as in symbol_stats_cache: any rewrite, late correction,
insertion or deletion before the cut changes it) and its basis is the same. The fingerprints are
taken before the bars they describe are read: a write in between can only make a state look stale.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import symbol_check_state
from market_pipeline.warehouse.stats_cache import _chunks, _stamp, fingerprint, put_symbol_rows
from market_pipeline.warehouse.timestamps import as_date


@dataclass(frozen=True)
class StoredState:
    symbol: str
    cut: dt.date
    fingerprint: str  # of the bars dated before `cut`
    basis: str
    state: str  # JSON (checks_fold.CheckState.to_json)


@dataclass(frozen=True)
class Prints:
    """A symbol's fingerprints now: of all its bars, and of its bars dated before each cut asked for."""

    full: str
    before: dict[dt.date, str]


class CheckStateStore:
    """The states of the warehouse at `url`."""

    def __init__(self, url: str):
        self.url = normalize_url(url)

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    def get_many(self, symbols: Sequence[str]) -> dict[str, StoredState]:
        out: dict[str, StoredState] = {}
        with self.engine.connect() as conn:
            for part in _chunks(list(symbols)):
                for row in conn.execute(sa.select(symbol_check_state).where(symbol_check_state.c.symbol.in_(part))):
                    m = row._mapping
                    out[m["symbol"]] = StoredState(m["symbol"], as_date(m["cut"]), m["fingerprint"], m["basis"], m["state"])
        return out

    def put_many(self, states: Iterable[StoredState], computed_at: dt.datetime) -> None:
        """Insert or replace the states, in one transaction."""
        rows = [
            {"symbol": s.symbol, "cut": s.cut, "fingerprint": s.fingerprint, "basis": s.basis, "state": s.state, "computed_at": computed_at}
            for s in {s.symbol: s for s in states}.values()
        ]
        put_symbol_rows(self.engine, symbol_check_state, rows)

    def prints(self, cuts: Mapping[str, Iterable[dt.date]]) -> dict[str, Prints]:
        """symbol -> its fingerprints now, of its bars before each of its cuts and of all of them: one
        aggregate per cut over the bars before it, and one over the bars from the earliest cut on,
        which with the first gives the whole (no bar leaves the database; a symbol's bars are found
        through the (symbol, date) key, so a refresh's query scans that symbol's index entries only).
        One statement per 500 ranges."""
        ranges: list[tuple[str, dt.date, dt.date]] = []  # (symbol, from, before): dates from <= date < before
        for symbol, symbol_cuts in cuts.items():
            symbol_cuts = sorted(set(symbol_cuts))
            ranges += [(symbol, dt.date(1, 1, 1), cut) for cut in symbol_cuts]
            ranges.append((symbol, symbol_cuts[0], dt.date(9999, 12, 31)))
        found: list[tuple] = []
        with self.engine.connect() as conn:
            for offset in range(0, len(ranges), 500):
                part = ranges[offset : offset + 500]
                found += [(offset + k, *row) for k, *row in _aggregates(conn, part)]
        rows = {k: tuple(row) for k, *row in found}
        out: dict[str, Prints] = {}
        k = 0
        for symbol, symbol_cuts in cuts.items():
            symbol_cuts = sorted(set(symbol_cuts))
            parts = {cut: rows.get(k + i, (0, None, None, None)) for i, cut in enumerate(symbol_cuts)}
            after = rows.get(k + len(symbol_cuts), (0, None, None, None))
            k += len(symbol_cuts) + 1
            before = {cut: _print(*row) for cut, row in parts.items()}
            out[symbol] = Prints(_print(*_joined(parts[symbol_cuts[0]], after)), before)
        return out


def _aggregates(conn: sa.Connection, ranges: list[tuple[str, dt.date, dt.date]]) -> list[tuple]:
    """(k, count, first date, last date, latest fetched_at) of the bars of each range k (symbol, from,
    before) that has any: one statement."""
    if conn.dialect.name == "postgresql":
        result = conn.exec_driver_sql(
            "SELECT s.k, a.n, a.first, a.last, a.stamp FROM unnest(%s::int4[], %s::text[], %s::date[], %s::date[]) AS s(k, symbol, lo, hi) "
            "CROSS JOIN LATERAL (SELECT count(*) AS n, min(d.date) AS first, max(d.date) AS last, max(d.fetched_at) AS stamp "
            "FROM ohlcv_daily d WHERE d.symbol = s.symbol AND d.date >= s.lo AND d.date < s.hi) a WHERE a.n > 0",
            (list(range(len(ranges))), [r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges]),
        )
    else:
        result = conn.exec_driver_sql(
            f"WITH s(k, symbol, lo, hi) AS (VALUES {', '.join(['(?, ?, ?, ?)'] * len(ranges))}) "
            "SELECT s.k, count(*), min(d.date), max(d.date), max(d.fetched_at) FROM s CROSS JOIN ohlcv_daily d "
            "WHERE d.symbol = s.symbol AND d.date >= s.lo AND d.date < s.hi GROUP BY s.k",
            tuple(v for k, (symbol, lo, hi) in enumerate(ranges) for v in (k, symbol, lo.isoformat(), hi.isoformat())),
        )
    try:
        return result.all()
    finally:
        result.close()


def _print(count, first, last, stamp) -> str:
    return fingerprint(count, as_date(first), as_date(last), _stamp(stamp))


def _joined(head, tail) -> tuple:
    """The aggregate (count, first, last, latest fetched_at) of two adjacent date ranges' bars."""
    stamps = [_stamp(s) for s in (head[3], tail[3]) if s is not None]
    return (
        head[0] + tail[0],
        as_date(head[1]) if head[0] else as_date(tail[1]),
        as_date(tail[2]) if tail[0] else as_date(head[2]),
        max(stamps) if stamps else None,
    )
