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
from sqlalchemy.dialects import postgresql, sqlite

from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import ohlcv_daily, symbol_check_state
from market_pipeline.warehouse.stats_cache import _stamp, fingerprint
from market_pipeline.warehouse.store import as_date


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
        if not rows:
            return
        with self.engine.begin() as conn:
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(symbol_check_state)
            update = {c: insert.excluded[c] for c in rows[0] if c != "symbol"}
            conn.execute(insert.on_conflict_do_update(index_elements=["symbol"], set_=update), rows)

    def prints(self, cuts: Mapping[str, Iterable[dt.date]]) -> dict[str, Prints]:
        """symbol -> its fingerprints now, of all its bars and of those before each of its cuts: one
        aggregate per symbol (no bar leaves the database), on one connection."""
        out: dict[str, Prints] = {}
        c = ohlcv_daily.c
        with self.engine.connect() as conn:
            for symbol, symbol_cuts in cuts.items():
                symbol_cuts = sorted(set(symbol_cuts))
                columns = [sa.func.count(), sa.func.min(c.date), sa.func.max(c.date), sa.func.max(c.fetched_at)]
                for cut in symbol_cuts:
                    before = c.date < cut
                    columns += [
                        sa.func.coalesce(sa.func.sum(sa.case((before, 1), else_=0)), 0),
                        sa.func.max(sa.case((before, c.date))),
                        sa.func.max(sa.case((before, c.fetched_at))),
                    ]
                row = conn.execute(sa.select(*columns).where(c.symbol == symbol)).one()
                count, first, last, stamp = row[:4]
                full = fingerprint(count, as_date(first), as_date(last), _stamp(stamp))
                before_cuts = {}
                for i, cut in enumerate(symbol_cuts):
                    n, last_before, stamp_before = row[4 + 3 * i : 7 + 3 * i]
                    before_cuts[cut] = fingerprint(n, as_date(first), as_date(last_before), _stamp(stamp_before))
                out[symbol] = Prints(full, before_cuts)
        return out


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
