"""symbol_stats_cache: each symbol's statistics as last computed, keyed by what they came from.

An entry is reused only when the symbol's bars still have the fingerprint they had (bar count, first
and last date, latest `fetched_at`: every write of a bar stamps `fetched_at`, so any rewrite, late
correction or new bar changes it, and a deletion changes the count) and the basis is the same (the
sessions at the time, the thresholds, the delisting date, the rules' version: see
quality.report.stats_basis). Anything else is recomputed from the bars. A fingerprint is always taken
before (or with) the bars it describes, never after: a write in between can only make an entry look
stale, never make a stale entry look current.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import ohlcv_daily, symbol_stats_cache
from market_pipeline.warehouse.timestamps import as_date

NO_BARS = "0|||"  # the fingerprint of a symbol without any stored bar


def fingerprint(count: int, first: dt.date | str | None, last: dt.date | str | None, fetched_at: dt.datetime | None) -> str:
    """The fingerprint of a symbol's stored bars, as text."""
    if not count:
        return NO_BARS

    def text(value) -> str:
        return "" if value is None else value.isoformat() if hasattr(value, "isoformat") else str(value)

    return f"{int(count)}|{text(first)}|{text(last)}|{text(fetched_at)}"


@dataclass(frozen=True)
class CachedStats:
    symbol: str
    fingerprint: str
    basis: str
    record_count: int
    first_date: dt.date | None
    last_date: dt.date | None
    validation_rate: float | None
    gaps_detected: int


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class StatsCache:
    """The cache of the warehouse at `url`."""

    def __init__(self, url: str):
        self.url = normalize_url(url)

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    def fingerprints(self, symbols: Sequence[str] | None = None) -> dict[str, str]:
        """symbol -> the fingerprint of its stored bars now (symbols without bars are absent): one
        GROUP BY over the bars (all symbols, or `symbols` in chunks)."""
        query = sa.select(
            ohlcv_daily.c.symbol, sa.func.count(), sa.func.min(ohlcv_daily.c.date), sa.func.max(ohlcv_daily.c.date),
            sa.func.max(ohlcv_daily.c.fetched_at),
        ).group_by(ohlcv_daily.c.symbol)
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            parts = [None] if symbols is None else list(_chunks(list(symbols)))
            for part in parts:
                q = query if part is None else query.where(ohlcv_daily.c.symbol.in_(part))
                for symbol, count, first, last, fetched_at in conn.execute(q):
                    out[symbol] = fingerprint(count, as_date(first), as_date(last), _stamp(fetched_at))
        return out

    def get_many(self, symbols: Sequence[str] | None = None) -> dict[str, CachedStats]:
        query = sa.select(symbol_stats_cache)
        out: dict[str, CachedStats] = {}
        with self.engine.connect() as conn:
            parts = [None] if symbols is None else list(_chunks(list(symbols)))
            for part in parts:
                q = query if part is None else query.where(symbol_stats_cache.c.symbol.in_(part))
                for row in conn.execute(q):
                    m = row._mapping
                    out[m["symbol"]] = CachedStats(
                        m["symbol"], m["fingerprint"], m["basis"], m["record_count"], m["first_date"], m["last_date"],
                        m["validation_rate"], m["gaps_detected"],
                    )
        return out

    def put_many(self, entries: Sequence[CachedStats], computed_at: dt.datetime) -> None:
        """Insert or replace the entries, in one transaction."""
        if not entries:
            return
        rows = [
            {
                "symbol": e.symbol, "fingerprint": e.fingerprint, "basis": e.basis, "record_count": e.record_count,
                "first_date": e.first_date, "last_date": e.last_date, "validation_rate": e.validation_rate,
                "gaps_detected": e.gaps_detected, "computed_at": computed_at,
            }
            for e in {e.symbol: e for e in entries}.values()
        ]
        put_symbol_rows(self.engine, symbol_stats_cache, rows)


def put_symbol_rows(engine: sa.Engine, table: sa.Table, rows: list[dict]) -> None:
    """Insert or replace rows of a table keyed by `symbol` (each row has every column), in one transaction."""
    if not rows:
        return
    with engine.begin() as conn:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
        update = {c: insert.excluded[c] for c in rows[0] if c != "symbol"}
        conn.execute(insert.on_conflict_do_update(index_elements=["symbol"], set_=update), rows)


def _stamp(value) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))
