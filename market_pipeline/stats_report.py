"""Per-symbol statistics for every tracked symbol: what the symbol_stats asset stores and the
`market-pipeline stats` command prints. One implementation, shared with the asset checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from market_pipeline.checks import CheckSettings, compute_stats
from market_pipeline.quality import SymbolStats
from market_pipeline.warehouse.registry import SymbolRegistry, TrackedSymbol
from market_pipeline.warehouse.store import BarStore, utcnow


def stats_for(
    tracked: Sequence[TrackedSymbol], store: BarStore, settings: CheckSettings | None = None, now: dt.datetime | None = None
) -> list[tuple[TrackedSymbol, SymbolStats]]:
    """Each symbol's stats from its bars, read in one query per symbol."""
    settings = settings or CheckSettings()
    now = now or dt.datetime.now(dt.timezone.utc)
    return [(row, compute_stats(row.symbol, row.asset_class, store.read_bars(row.symbol), settings, now)) for row in tracked]


def cli_record(row: TrackedSymbol, stats: SymbolStats) -> dict:
    """The seed system's response format, plus asset class and status."""
    return {
        "symbol": row.symbol,
        **stats.seed_format(),
        "asset_class": row.asset_class,
        "status": row.backfill_status,
    }


def table_row(row: TrackedSymbol, stats: SymbolStats, computed_at: dt.datetime) -> dict:
    return {
        "symbol": row.symbol,
        "asset_class": row.asset_class,
        "record_count": stats.record_count,
        "first_date": dt.date.fromisoformat(stats.first_date) if stats.first_date else None,
        "last_date": dt.date.fromisoformat(stats.last_date) if stats.last_date else None,
        "validation_rate": stats.validation_rate,
        "gaps_detected": stats.gaps_detected,
        "backfill_status": row.backfill_status,
        "last_backfill": row.last_backfill,
        "computed_at": computed_at,
    }


def all_table_rows(registry: SymbolRegistry, store: BarStore, settings: CheckSettings | None = None) -> list[dict]:
    computed_at = utcnow()
    return [table_row(r, s, computed_at) for r, s in stats_for(registry.list(include_inactive=True), store, settings)]
