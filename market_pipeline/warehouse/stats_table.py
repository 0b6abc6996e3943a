"""The `symbol_stats` table: one row per tracked symbol, rewritten by the symbol_stats asset."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from market_pipeline.warehouse.schema import symbol_stats


def replace_stats(engine: sa.Engine, rows: Sequence[dict]) -> int:
    """Replace the table's content with `rows` in one transaction (overlapping writers queue)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("LOCK TABLE symbol_stats IN SHARE ROW EXCLUSIVE MODE"))
        conn.execute(symbol_stats.delete())
        if rows:
            conn.execute(symbol_stats.insert(), list(rows))
    return len(rows)


def read_stats(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(symbol_stats).order_by(symbol_stats.c.symbol))]
