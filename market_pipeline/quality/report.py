"""Per-symbol statistics for every tracked symbol: what the symbol_stats asset stores and the
`market-pipeline stats` command prints. One implementation, shared with the asset checks."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from dataclasses import dataclass

from market_pipeline.quality.stats import SymbolStats, compute_symbol_stats
from market_pipeline.quality.validation import ValidationThresholds
from market_pipeline import calendars
from market_pipeline.reference.freshness import Freshness, evaluate_freshness, last_trading_session
from market_pipeline.warehouse.registry import SymbolRegistry, TrackedSymbol
from market_pipeline.warehouse.stats_cache import NO_BARS, CachedStats, StatsCache
from market_pipeline.warehouse.store import BarStore, as_date, utcnow

# Bump when the rules behind the numbers change (validation, gaps): every cached entry is then recomputed.
STATS_RULES_VERSION = 1
STATS_BATCH = 50  # symbols whose bars symbol_stats reads at a time


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
    """Each symbol's stats, from its kept check state and the bars after its cut where one fits, else
    from its whole history (one query per symbol, 50 symbols at a time). Nothing is written: the
    states this computes are not kept."""
    from market_pipeline.quality.stored_checks import check_stored_in_batches  # it builds on this module

    now, settings = now or dt.datetime.now(dt.timezone.utc), settings or CheckThresholds()
    checked, _ = check_stored_in_batches(store, list(tracked), settings=settings, now=now, batch=STATS_BATCH)
    return [(row, done.stats) for row, done in checked]


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


def stats_basis(asset_class: str, settings, now: dt.datetime, delisted_on: dt.date | None = None) -> str:
    """Everything a symbol's stats depend on besides its bars, as text: the rules' version, the date at
    `now` (future-dated bars), the latest completed session (gaps), the delisting's last session and
    the thresholds."""
    settings = settings or CheckThresholds()
    last = _last_session(asset_class, delisted_on) if delisted_on else None
    thresholds = ",".join(
        repr(getattr(settings, name))
        for name in ("min_validation_rate", "validation_error_below", "large_move", "max_gaps", "gaps_error_above")
    )
    return f"v{STATS_RULES_VERSION}|{_sessions(asset_class, now)}|{last or ''}|{thresholds}"


@functools.lru_cache(maxsize=64)
def _sessions(asset_class: str, now: dt.datetime) -> str:
    return f"{asset_class}|{calendars.local_date(asset_class, now)}|{calendars.latest_completed_session(asset_class, now)}"


@functools.lru_cache(maxsize=4096)
def _last_session(asset_class: str, delisted_on: dt.date) -> dt.date:
    return last_trading_session(asset_class, delisted_on)


def cache_entry(stats: SymbolStats, fingerprint: str, basis: str) -> CachedStats:
    return CachedStats(
        stats.symbol, fingerprint, basis, stats.record_count,
        as_date(stats.first_date), as_date(stats.last_date),
        stats.validation_rate, stats.gaps_detected,
    )


def table_row(row: TrackedSymbol, stats: SymbolStats | CachedStats, computed_at: dt.datetime) -> dict:
    return {
        "symbol": row.symbol,
        "asset_class": row.asset_class,
        "record_count": stats.record_count,
        "first_date": as_date(stats.first_date),
        "last_date": as_date(stats.last_date),
        "validation_rate": stats.validation_rate,
        "gaps_detected": stats.gaps_detected,
        "backfill_status": row.status,
        "last_backfill": row.last_backfill,
        "computed_at": computed_at,
    }


def all_table_rows(
    registry: SymbolRegistry, store: BarStore, settings: CheckThresholds | None = None, now: dt.datetime | None = None
) -> list[dict]:
    """The symbol_stats rows of every tracked symbol at `now`. A symbol whose bars and basis are those of
    its symbol_stats_cache entry (its checks just computed them) is not read again; the others are
    computed and cached, from their kept check state and the bars after its cut where one fits (see
    stored_checks), else from their whole history, 50 symbols at a time."""
    from market_pipeline.quality.stored_checks import check_stored_in_batches  # it builds on this module
    from market_pipeline.warehouse.check_state import CheckStateStore

    now = now or dt.datetime.now(dt.timezone.utc)
    settings = settings or CheckThresholds()
    computed_at = utcnow()
    tracked = registry.list(include_inactive=True)
    cache = StatsCache(store.url)
    live = cache.fingerprints()  # taken before any bar is read: a write after it only makes entries look stale
    cached = cache.get_many()
    found: dict[str, CachedStats | SymbolStats] = {}
    missed = []
    bases = {row.symbol: stats_basis(row.asset_class, settings, now, row.delisted_on) for row in tracked}
    for row in tracked:
        hit = cached.get(row.symbol)
        if hit is not None and hit.fingerprint == live.get(row.symbol, NO_BARS) and hit.basis == bases[row.symbol]:
            found[row.symbol] = hit
        else:
            missed.append(row)
    checked, states = check_stored_in_batches(store, missed, settings=settings, now=now, batch=STATS_BATCH)
    fresh = []
    for row, done in checked:
        found[row.symbol] = done.stats
        fresh.append(cache_entry(done.stats, done.bars_print, bases[row.symbol]))
    cache.put_many(fresh, computed_at)
    CheckStateStore(store.url).put_many(states, computed_at)
    return [table_row(row, found[row.symbol], computed_at) for row in tracked]
