"""What an ohlcv_daily run records for each symbol it stored: the partition's materialization (with
Dagster's row-count and table keys) and its check evaluations, evaluated in batches of symbols so their
inputs are read with one query per batch, not one per symbol."""

from dagster import AssetMaterialization

from market_pipeline.defs.bars.checks import OHLCV_KEY, SPLIT_CHECK, evaluations, materialization_targets
from market_pipeline.defs.corporate_actions.checks import split_evaluation
from market_pipeline.quality.report import cache_entry, compute_stats, stats_basis
from market_pipeline.refresh.ingest import SymbolResult
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.stats_cache import NO_BARS, StatsCache, fingerprint
from market_pipeline.warehouse.store import utcnow

TABLE_NAME = "ohlcv_daily"
CHECK_BATCH = 50  # symbols whose checks are evaluated together (one event-log and one splits query)


def materialization(result: SymbolResult, table_rows: int, extra: dict | None = None) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=OHLCV_KEY,
        partition=result.symbol,
        metadata={
            # Dagster's keys: the partition's rows, and the whole table's (what the catalog's "Row count" shows)
            "dagster/partition_row_count": result.rows_stored,
            "dagster/row_count": table_rows,
            "dagster/table_name": TABLE_NAME,
            "asset_class": result.asset_class,
            "rows_fetched": result.rows_fetched,
            "rows_upserted": result.rows_upserted,
            "rows_inserted": result.rows_inserted,
            "rows_changed": result.rows_changed,
            "first_date": result.first_date or "",
            "last_date": result.last_date or "",
            "fetch_from": result.fetch_from or "",
            "fetch_to": result.fetch_to or "",
            "fetch_path": result.path,
            "requests": result.requests,
            # grouped: `requests` were shared by every symbol of the market stored from them
            "requests_shared": result.requests_shared,
            # wire bars of this fetch set aside in ohlcv_quarantine (non-finite, missing, misdated, future)
            "quarantined": result.quarantined,
            **({"note": result.note} if result.note else {}),
            **(extra or {}),
        },
    )


def check_batch(context, config, warehouse, batch, selected_checks, now):
    """The check evaluations of a batch of just-stored symbols: their materializations and their splits
    are read in one query each (not one per symbol), then each symbol's checks are evaluated. The stats
    they come from are cached (symbol_stats_cache) with the fingerprint of the bars they were computed
    from, so the symbol_stats asset does not read those bars again."""
    store = warehouse.bars()
    symbols = [result.symbol for result, _ in batch]
    targets = materialization_targets(context.instance, symbols)
    wants_splits = any(k.name == SPLIT_CHECK for k in selected_checks)
    equities = [row.symbol for _, row in batch if row.asset_class != "crypto"]
    splits = CorporateActionStore(warehouse.resolved_url()).splits_by_symbol(equities) if wants_splits else {}
    cache = StatsCache(store.url)
    to_read = [result.symbol for result, _ in batch if result.stored_bars is None]
    live = cache.fingerprints(to_read) if to_read else {}  # taken before those bars are read
    read = store.read_bars_many(to_read) if to_read else {}
    entries = []
    for result, row in batch:
        in_memory = result.stored_bars is not None
        bars = result.stored_bars if in_memory else read.pop(row.symbol)
        result.stored_bars = None  # memory stays flat however many symbols the run holds
        target = targets.get(row.symbol)
        stats = compute_stats(row.symbol, row.asset_class, bars, config, now, row.delisted_on)
        if in_memory:  # every stored bar is one of these, written at stored_at
            bars_print = fingerprint(stats.record_count, stats.first_date, stats.last_date, result.stored_at)
        else:
            bars_print = live.get(row.symbol, NO_BARS)
        entries.append(cache_entry(stats, bars_print, stats_basis(row.asset_class, config, now, row.delisted_on)))
        yield from evaluations(stats, selected_checks, now=now, delisted_on=row.delisted_on, target=target)
        if wants_splits:
            yield split_evaluation(row.symbol, row.asset_class, bars, splits.get(row.symbol, []), target=target)
    try:
        cache.put_many(entries, utcnow())
    except Exception as exc:  # only a cache: symbol_stats recomputes what it misses
        context.log.warning(f"could not cache the stats of {len(entries)} symbol(s): {type(exc).__name__}: {exc}")
