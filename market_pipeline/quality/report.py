"""Per-symbol statistics for every tracked symbol: what the symbol_stats asset stores and the
`market-pipeline stats` command prints. One implementation, shared with the asset checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from dataclasses import dataclass

from market_pipeline.quality.stats import SymbolStats, compute_symbol_stats
from market_pipeline.quality.validation import ValidationThresholds
from market_pipeline.reference.freshness import Freshness, evaluate_freshness, last_trading_session
from market_pipeline.warehouse.registry import SymbolRegistry, TrackedSymbol
from market_pipeline.warehouse.store import BarStore, utcnow


@dataclass(frozen=True)
class CheckThresholds:
    """The check thresholds (the Dagster run config `CheckSettings` has the same fields and defaults)."""

    min_validation_rate: float = 0.99
    validation_error_below: float = 0.95
    large_move: float = 0.5
    max_gaps: int = 0
    gaps_error_above: int = 10


def compute_stats(
    symbol: str, asset_class: str, frame, settings: CheckThresholds | None = None, now: dt.datetime | None = None,
    delisted_on: dt.date | None = None,
) -> SymbolStats:
    """One symbol's stats at `now` under `settings` (a CheckThresholds or anything with its fields);
    a delisted symbol's gaps end at its last trading session."""
    settings = settings or CheckThresholds()
    return compute_symbol_stats(
        symbol,
        asset_class,
        frame,
        now=now or dt.datetime.now(dt.timezone.utc),
        validation_thresholds=ValidationThresholds(
            min_rate=settings.min_validation_rate, error_below=settings.validation_error_below, large_move=settings.large_move
        ),
        max_gaps=settings.max_gaps,
        gap_error_above=settings.gaps_error_above,
        last_session=last_trading_session(asset_class, delisted_on) if delisted_on else None,
    )


def freshness_of(stats: SymbolStats, now: dt.datetime, delisted_on: dt.date | None = None) -> Freshness:
    """Is the symbol's last stored bar the latest published session at `now` (see reference.freshness)."""
    last = dt.date.fromisoformat(stats.last_date) if stats.last_date else None
    return evaluate_freshness(stats.symbol, stats.asset_class, last, now, delisted_on=delisted_on)


def stats_for(
    tracked: Sequence[TrackedSymbol], store: BarStore, settings: CheckThresholds | None = None, now: dt.datetime | None = None
) -> list[tuple[TrackedSymbol, SymbolStats]]:
    """Each symbol's stats from its bars, read in one query per symbol."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return [
        (row, compute_stats(row.symbol, row.asset_class, store.read_bars(row.symbol), settings, now, row.delisted_on))
        for row in tracked
    ]


def cli_record(row: TrackedSymbol, stats: SymbolStats, now: dt.datetime | None = None) -> dict:
    """The seed system's response format, plus asset class, status (`delisted` for a delisted symbol
    whose history is complete) and freshness at `now`."""
    fresh = freshness_of(stats, now or dt.datetime.now(dt.timezone.utc), row.delisted_on)
    return {
        "symbol": row.symbol,
        **stats.seed_format(),
        "asset_class": row.asset_class,
        "status": row.status,
        "freshness": {
            "state": fresh.state,
            "expected_session": fresh.expected.isoformat(),
            "sessions_missing": fresh.missing_count,
            "missing_sessions": [d.isoformat() for d in fresh.missing],
            **({"delisted_on": row.delisted_on.isoformat()} if row.delisted_on else {}),
        },
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
        "backfill_status": row.status,
        "last_backfill": row.last_backfill,
        "computed_at": computed_at,
    }


def all_table_rows(registry: SymbolRegistry, store: BarStore, settings: CheckThresholds | None = None) -> list[dict]:
    computed_at = utcnow()
    return [table_row(r, s, computed_at) for r, s in stats_for(registry.list(include_inactive=True), store, settings)]
