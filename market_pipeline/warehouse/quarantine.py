"""`ohlcv_quarantine`: wire bars that were not stored, with their raw values and the reason.

A row per distinct bad bar of a symbol (the fingerprint is a hash of symbol, raw values and reason):
fetching the same bad bar again refreshes its run id and time instead of adding a row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from market_pipeline import settings
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import ohlcv_quarantine
from market_pipeline.warehouse.timestamps import utcnow

Q = ohlcv_quarantine


@dataclass(frozen=True)
class QuarantinedBar:
    symbol: str
    date: dt.date | None
    raw: str
    reason: str
    run_id: str | None
    quarantined_at: dt.datetime


def fingerprint(symbol: str, raw: str, reason: str) -> str:
    return hashlib.sha256("\x1f".join((symbol, raw, reason)).encode()).hexdigest()


class QuarantineStore:
    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or settings.db_url())

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    def record(self, symbol: str, bars: Sequence, run_id: str | None) -> int:
        """Store set-aside bars (objects with `date`, `raw`, `reason`) of `symbol`; returns how many."""
        if not bars:
            return 0
        now = utcnow()
        rows = {}
        for bar in bars:
            key = fingerprint(symbol, bar.raw, bar.reason)
            rows[key] = dict(
                fingerprint=key, symbol=symbol, date=bar.date, raw=bar.raw, reason=bar.reason, run_id=run_id,
                quarantined_at=now,
            )
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            stmt = insert(Q)
            stmt = stmt.on_conflict_do_update(
                index_elements=[Q.c.fingerprint],
                set_={"run_id": stmt.excluded.run_id, "quarantined_at": stmt.excluded.quarantined_at},
            )
            conn.execute(stmt, list(rows.values()))
        return len(bars)

    def list(self, symbol: str | None = None) -> list[QuarantinedBar]:
        query = sa.select(Q.c.symbol, Q.c.date, Q.c.raw, Q.c.reason, Q.c.run_id, Q.c.quarantined_at)
        if symbol is not None:
            query = query.where(Q.c.symbol == symbol)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(Q.c.symbol, Q.c.date, Q.c.reason)).all()
        return [QuarantinedBar(*row) for row in rows]
