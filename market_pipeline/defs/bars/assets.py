"""The `ohlcv_daily` asset: one partition per tracked symbol, its daily bars in the warehouse.

One op serves the asset and its two checks. For each symbol of the run (one partition, or a
batch of up to MAX_PARTITIONS_PER_RUN): mark it in_progress, fetch from the re-fetch window (or all
history from its start date), upsert in one transaction, mark it completed, record a
materialization and both check results for that partition. A failing symbol is marked failed with
its reason and does not stop the others; the run then fails naming it. An error every later symbol
would meet too (a full disk, Polygon asking for a wait longer than the client's longest) stops the
run at once instead (`market_pipeline.defs.bars.stopping`). The range requests run
`POLYGON_MAX_IN_FLIGHT` at a time in threads (`market_pipeline.refresh.concurrent`); every
database write and every Dagster event stays on the op's thread. On a step retry the symbols
this run already materialised are skipped, so a retry re-runs only what failed.

Symbols whose history is complete may instead come from the grouped-daily endpoints (one request per
date for every symbol of a market): `market_pipeline.refresh.planning` picks, per market, whichever split needs
fewer requests, and each materialization records the path (`fetch_path`: "range" or "grouped") and
the requests (`requests`; for grouped symbols the shared grouped requests, `requests_shared`).
`asset_classes` in the op config restricts a run to some classes (the schedules refresh one class
per run over a partition range that may interleave classes).
"""


import datetime as dt
from collections import Counter
from contextlib import closing

from dagster import (
    DagsterExecutionInterruptedError,
    AssetExecutionContext,
    AssetSpec,
    Backoff,
    BackfillPolicy,
    DagsterEventType,
    Failure,
    Jitter,
    MetadataValue,
    Output,
    RetryPolicy,
    TableColumn,
    TableSchema,
    multi_asset,
)
from pydantic import Field

from market_pipeline import settings
from market_pipeline.defs.bars.interrupts import interrupted_failure
from market_pipeline.defs.bars.stopping import claim, stopped_failure
from market_pipeline.defs.bars.checks import (
    CHECK_KEYS,
    OHLCV_KEY,
    CheckSettings,
    check_specs,
)
from market_pipeline.refresh.grouped import refresh_grouped
from market_pipeline.refresh.ingest import (
    DEFAULT_HISTORY_DAYS,
    DEFAULT_REFETCH_SESSIONS,
    SymbolResult,
    plan_fetch,
)
from market_pipeline.refresh.concurrent import refresh_symbols
from market_pipeline.defs.bars.lifecycle import TABLE_FRESHNESS, FirstRunReferences, reference_metadata
from market_pipeline.defs.bars.partitions import MAX_PARTITIONS_PER_RUN, symbols_partitions
from market_pipeline.defs.bars.run_start import start_run
from market_pipeline.defs.bars.records import CHECK_BATCH, TABLE_NAME, check_batch, materialization, quarantine_line, tally_line
from market_pipeline.refresh.planning import DEFAULT_MAX_GROUPED_DATES, SymbolWindow, market_of, plan_refresh, target_session
from market_pipeline.defs.resources import PolygonResource, WarehouseResource
from market_pipeline.defs.corporate_actions.ops import read_corporate_actions
from market_pipeline.defs.bars.views import RunViews
from market_pipeline.defs.returns.checks import RETURNS_CHECK_KEYS, RETURNS_KEY, returns_check_specs
from market_pipeline.defs.returns.records import changed_from, returns_batch, returns_spec
from market_pipeline.quality.outcomes import summary_line
from market_pipeline.returns.update import DEFAULT_THRESHOLD
from market_pipeline.warehouse.returns import ReturnsStore

POLYGON_POOL = "polygon_api"
FULL_REFETCH_TAG = "market_pipeline/full_refetch"
COLUMN_SCHEMA = TableSchema(
    columns=[
        TableColumn("symbol", "string", description="the tracked symbol (partition key)"),
        TableColumn("date", "date", description="the session date (New York for stocks/ETFs, UTC for crypto)"),
        TableColumn("open", "float", description="first trade price of the session, as traded (not split-adjusted), in the quote currency (USD)"),
        TableColumn("high", "float", description="highest trade price of the session, as traded, USD"),
        TableColumn("low", "float", description="lowest trade price of the session, as traded, USD"),
        TableColumn("close", "float", description="last trade price of the session, as traded, USD (adjusted: the ohlcv_daily_adjusted and ohlcv_daily_total_return views)"),
        TableColumn("volume", "float", description="shares traded in the session, as traded (units of the coin for crypto)"),
        TableColumn("vwap", "float", description="volume-weighted average price of the session, as traded, USD (may be null)"),
        TableColumn("transactions", "int", description="number of trades in the session (may be null)"),
        TableColumn("fetched_at", "timestamp", description="when the bar was last written (UTC)"),
    ]
)
PER_SYMBOL_LOG_LINES = 25  # runs of up to this many symbols log a line per symbol
PROGRESS_EVERY = 100  # bigger runs log a progress line every this many symbols


class OhlcvConfig(CheckSettings):
    refetch_sessions: int = Field(
        default=DEFAULT_REFETCH_SESSIONS, description="re-fetch the last N stored sessions (late corrections)"
    )
    default_history_days: int = Field(
        default=DEFAULT_HISTORY_DAYS, description="history to fetch for a symbol without a start date"
    )
    asset_classes: list[str] | None = Field(
        default=None,
        description=(
            "refresh only active symbols of these asset classes (stock, etf, crypto); symbols of other "
            "classes in the run's partition range are skipped, not touched. Default: every symbol of the run"
        ),
    )
    target_date: str | None = Field(
        default=None,
        description="last date to refresh, YYYY-MM-DD (default: the latest completed session of each market)",
    )
    use_grouped_daily: bool = Field(
        default=True,
        description=(
            "fetch from the grouped-daily endpoints (one request per date for all symbols of a market) "
            "whenever that needs fewer requests than one range request per symbol"
        ),
    )
    max_grouped_dates: int = Field(
        default=DEFAULT_MAX_GROUPED_DATES, description="at most this many grouped-daily requests per market per run"
    )
    full_refetch: bool = Field(
        default=False,
        description=(
            "fetch each symbol's whole history from its start date again (repairs a symbol), instead of "
            f"the re-fetch window; a backfill asks for it with the run tag {FULL_REFETCH_TAG}=true"
        ),
    )
    corporate_actions: str = Field(
        default="symbols",
        description=(
            "before fetching bars, read corporate actions: 'symbols' (the whole split and dividend lists of "
            "the run's stocks and ETFs, batched), 'recent' (every ticker's events of the last "
            "corporate_actions_lookback_days: what the daily schedule does) or 'none'"
        ),
    )
    corporate_actions_lookback_days: int = Field(
        default=60, description="look-back of the 'recent' corporate-actions read (events recorded weeks late)"
    )
    max_unexplained_return: float = Field(
        default=DEFAULT_THRESHOLD,
        description="unexplained_returns lists daily total returns beyond a factor of 1 + this either way with no recorded event",
    )

    def wants_full_refetch(self, tags) -> bool:
        return self.full_refetch or str(tags.get(FULL_REFETCH_TAG, "")).strip().lower() in ("true", "1", "yes")

    as_of: str | None = Field(
        default=None,
        description="evaluate the run (targets, gaps, freshness) as of this instant, ISO 8601 (default: now, UTC)",
    )

    def now(self) -> dt.datetime:
        if not self.as_of:
            return dt.datetime.now(dt.timezone.utc)
        moment = dt.datetime.fromisoformat(self.as_of)
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _already_materialized(context: AssetExecutionContext) -> set[str]:
    """Partitions this run recorded before (a step retry skips them)."""
    if context.retry_number == 0:
        return set()
    records = context.instance.get_records_for_run(
        context.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return {r.event_log_entry.dagster_event.partition for r in records if r.event_log_entry.dagster_event}


def _run_partition_keys(context: AssetExecutionContext) -> list[str]:
    if context.has_partition_key_range or context.has_partition_key:
        return list(context.partition_keys)
    return list(context.instance.get_dynamic_partitions(symbols_partitions.name))


@multi_asset(
    name="ohlcv_daily",
    specs=[
        AssetSpec(
            OHLCV_KEY,
            deps=["tracked_symbols", "symbol_reference"],
            freshness_policy=TABLE_FRESHNESS,
            group_name="market_data",
            kinds={"polygon", "sql"},
            skippable=True,  # materializations are recorded per symbol as each one is stored
            metadata={"dagster/table_name": TABLE_NAME, "dagster/column_schema": COLUMN_SCHEMA},
            description=(
                "Daily OHLCV bars from Polygon (Massive). One partition per tracked symbol: the rows of "
                "`ohlcv_daily` (symbol, session date, open, high, low, close, volume, vwap, transactions) "
                "for that symbol, from its start date to the latest session."
            ),
        ),
        returns_spec(),
    ],
    check_specs=[*check_specs, *returns_check_specs()],
    partitions_def=symbols_partitions,
    can_subset=True,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN),
    pool=POLYGON_POOL,
    retry_policy=RetryPolicy(
        max_retries=2, delay=settings.step_retry_delay(), backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
    ),
)
def ohlcv_daily(context: AssetExecutionContext, config: OhlcvConfig, polygon: PolygonResource, warehouse: WarehouseResource):
    start_run(context)  # the tag that finds every run of the bars, and a slow instance named
    try:
        scope: list[str] = []  # the symbols this run refreshes, once known
        yield from _ohlcv_daily(context, config, polygon, warehouse, scope)
    except settings.SettingsError as exc:  # a bad setting: fails the same way every time, not retried
        raise Failure(description=str(exc), allow_retries=False) from None
    except (DagsterExecutionInterruptedError, KeyboardInterrupt):
        # stop now: no retry (the retry policy would turn the interrupt into one), symbols failed
        context.log.error("interrupted: stopping this run without retrying")
        raise interrupted_failure(context, warehouse.registry(), scope) from None


def _ohlcv_daily(
    context: AssetExecutionContext, config: OhlcvConfig, polygon: PolygonResource, warehouse: WarehouseResource,
    scope: list[str],
):
    registry, store = warehouse.registry(), warehouse.bars()
    selected_checks = set(context.selected_asset_check_keys) & CHECK_KEYS
    returns_checks = set(context.selected_asset_check_keys) & RETURNS_CHECK_KEYS
    materialize = OHLCV_KEY in context.selected_asset_keys
    returns = RETURNS_KEY in context.selected_asset_keys
    keys = _run_partition_keys(context)
    tracked = {row.symbol: row for row in registry.get_many(keys)}
    now = config.now()
    refs_store = warehouse.references()

    failures: list[SymbolResult] = []
    if materialize:
        skip = _already_materialized(context)
        rows = []
        for symbol in keys:
            row = tracked.get(symbol)
            if symbol in skip:
                continue
            if row is None:
                failures.append(SymbolResult(symbol, "unknown", "failed", error=f"{symbol} is not in tracked_symbols"))
                continue
            if config.asset_classes is not None and (row.asset_class not in config.asset_classes or not row.active):
                continue  # another class's symbol inside this run's partition range: not touched
            rows.append(row)
            scope.append(row.symbol)
        if config.asset_classes is not None:
            context.log.info(f"{len(rows)} symbol(s) of {', '.join(config.asset_classes)} in {len(keys)} partition(s)")
        stop = None  # the result whose error stops the run (a full disk, Polygon's long Retry-After)
        stored: list[SymbolResult] = []
        checking: list[tuple[SymbolResult, object]] = []  # stored symbols whose checks are still to record
        returning: list[tuple[SymbolResult, object]] = []  # stored symbols whose returns are still to update
        views = RunViews(context, warehouse, rows, now, storing=True)
        table_rows = store.count_rows()  # the table's rows, kept current as each symbol adds its new ones
        tally = Counter()  # how the checks got their bars
        client = polygon.get_client(logger=context.log)  # a bad setting fails here, before anything is written
        try:
            claim(context, registry, scope)  # all in_progress in this run, before anything is fetched
        except BaseException:
            client.close()
            raise
        with client, closing(views.open()), closing(
            FirstRunReferences(context, client, registry, refs_store, rows)  # running ahead of the bars
        ) as lookups:
            refs = refs_store.get_many([row.symbol for row in rows if row.symbol not in lookups.pending])
            # splits and dividends first: the bars' factors and checks depend on them
            actions = yield from read_corporate_actions(context, config, client, warehouse.resolved_url(), rows, now)
            if actions is not None and actions.outcome is not None:
                views.factors_changed.update(actions.outcome.recomputed)
            refreshing = _refresh(context, config, client, store, registry, rows, now, lookups)
            for result, row in refreshing:
                symbol = row.symbol
                if result.status != "completed":
                    context.log.error(f"{symbol}: {result.error}")
                    failures.append(result)
                    if result.stop_reason is not None:
                        stop = result
                        break  # closing the refresh stops the fetches: nothing more is requested
                    continue
                if symbol not in refs and symbol in lookups.stored:
                    refs[symbol] = lookups.stored[symbol]
                stored.append(result)
                table_rows += result.rows_inserted
                # a line per symbol for small runs; big ones log progress (each symbol's materialization
                # carries the same numbers, and every event costs a write to Dagster's event log)
                if len(rows) <= PER_SYMBOL_LOG_LINES and not result.requests_shared:
                    context.log.info(
                        f"{symbol}: {result.rows_fetched} bars fetched ({result.fetch_from}..{result.fetch_to}), "
                        f"{result.rows_stored} stored, {result.rows_changed} changed, {result.requests} request(s)"
                    )
                elif len(stored) % PROGRESS_EVERY == 0:
                    context.log.info(f"{len(stored)} of {len(rows)} symbol(s) stored")
                yield from views.stored(
                    result, row,
                    lambda metadata, result=result, rows=table_rows, ref=refs.get(symbol): materialization(
                        result, rows, {**reference_metadata(ref), **metadata}
                    ),
                )
                if selected_checks:
                    checking.append((result, row))
                    if len(checking) >= CHECK_BATCH:
                        yield from views.held()  # the checks name the materializations they judge
                        yield from views.checked(check_batch(context, config, warehouse, checking, selected_checks, now, tally, views.recorded))
                        checking = []
                else:
                    result.stored_bars = None  # memory stays flat however many symbols the run holds
                returning.append((result, row))
                if len(returning) >= CHECK_BATCH:
                    yield from views.held()
                    yield from _returns(context, config, warehouse, returning, returns, returns_checks, views)
                    returning = []
                    views.flush()
            refreshing.close()
            yield from views.held()
            if stop is not None:
                raise stopped_failure(context, registry, scope, {r.symbol for r in stored}, failures, stop)
            if checking:
                yield from views.checked(check_batch(context, config, warehouse, checking, selected_checks, now, tally, views.recorded))
            yield from _returns(context, config, warehouse, returning, returns, returns_checks, views)
            views.flush()
            if selected_checks:
                context.log.info(tally_line(tally))
            context.log.info(views.chart_line())
            context.log.info(
                f"{len(stored)} symbol(s) stored ({sum(r.path == 'grouped' for r in stored)} from grouped-daily bars): "
                f"{sum(r.rows_fetched for r in stored)} bars fetched, {sum(r.rows_inserted for r in stored)} new, "
                f"{sum(r.rows_changed for r in stored)} changed by late corrections, "
                f"{quarantine_line(stored)}; {client.stats.requests} request(s) "
                f"({', '.join(f'{k} {v}' for k, v in sorted(client.stats.by_endpoint.items())) or 'none'})"
            )
            written = views.reference_materialization(refs_store, [row.symbol for row in rows])
            if written is not None:  # this run wrote reference rows (a new symbol's): the catalog says so
                yield written
    elif selected_checks or returns or returns_checks:  # on the stored bars: the same batches, kept states and cache
        rows = [
            tracked[symbol] for symbol in keys
            if symbol in tracked and (config.asset_classes is None or tracked[symbol].asset_class in config.asset_classes)
        ]
        views = RunViews(context, warehouse, rows, now, budget=settings.charts_per_run())
        summary = store.summary([row.symbol for row in rows]) if returns or returns_checks else {}
        tally = Counter()
        for i in range(0, len(rows), CHECK_BATCH):
            batch = [(SymbolResult(row.symbol, row.asset_class, "completed"), row) for row in rows[i : i + CHECK_BATCH]]
            if selected_checks:
                yield from views.checked(check_batch(context, config, warehouse, batch, selected_checks, now, tally))
            for result, _ in batch:
                result.rows_stored = summary.get(result.symbol, (0, None, None))[0]
            if returns or returns_checks:  # recomputed whole: the asset was asked for on its own
                yield from returns_batch(context, config, warehouse.resolved_url(), batch, returns_checks, views, materialize=returns, whole=True)
            views.flush()
        if selected_checks:
            context.log.info(tally_line(tally))

    # Each symbol's check results were recorded above with its partition. Dagster also expects one output per
    # selected check of the op; these carry no evaluation (the evaluations are the per-partition ones).
    for key in sorted(selected_checks | returns_checks, key=lambda k: k.name):
        yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
    if selected_checks or returns_checks:  # the run's last line: what its checks found
        context.log.info(summary_line(views.run_outcomes))

    if failures:
        summary = "; ".join(f"{r.symbol}: {r.error}" for r in failures[:20])
        raise Failure(
            description=f"{len(failures)} of {len(keys)} symbol(s) failed: {summary}",
            metadata={
                "failed_symbols": MetadataValue.json([r.symbol for r in failures]),
                "errors": MetadataValue.json({r.symbol: r.error for r in failures}),
            },
            allow_retries=any(r.transient for r in failures),
        )


def _refresh(context, config: OhlcvConfig, client, store, registry, rows, now: dt.datetime, lookups=None):
    """Plan each market's split between the grouped-daily and the range path (fewest requests),
    then refresh: the grouped symbols of each market first, then one range request per other symbol.
    Yields (SymbolResult, tracked row) as each symbol is stored. `lookups`: the new symbols' reference
    lookups (FirstRunReferences), resolved before each symbol is planned: a whole-history symbol takes
    the range path whatever its reference says, so its lookup is waited for only when its turn comes;
    any other is resolved before the plan."""
    requested = dt.date.fromisoformat(config.target_date) if config.target_date else None
    today = requested or now.date()
    targets = {market: target_session(market, now, requested) for market in ("stocks", "crypto")}
    full_refetch = config.wants_full_refetch(context.run.tags)
    if full_refetch:
        context.log.info("full re-fetch asked for: every symbol's whole history is fetched again")
    if lookups is not None and lookups.pending:
        # a new symbol with some bars stored (an earlier run stopped): its reference may change its plan
        with_bars = store.summary(sorted(lookups.pending))  # one GROUP BY, not a query per symbol
        early = [row.symbol for row in rows if row.symbol in with_bars]
        if early:
            lookups.resolve(early)
            rows = [lookups.fresh(row) for row in rows]  # those saved with them too
    windows, starts = [], {}
    try:  # one connection for all (a fault: each symbol asks on its own below, and its plan records it)
        refetch = {} if full_refetch else store.refetch_starts([row.symbol for row in rows], config.refetch_sessions)
    except Exception:
        refetch = {}
    for row in rows:
        try:
            refetch_from = None if full_refetch else (
                refetch[row.symbol] if row.symbol in refetch else store.refetch_start(row.symbol, config.refetch_sessions)
            )
            plan = plan_fetch(row, refetch_from, today, default_history_days=config.default_history_days)
            # a delisted symbol takes the range path (its own last session ends the fetch, or nothing is fetched)
            windows.append(SymbolWindow(row.symbol, row.asset_class, plan.start, plan.full or row.delisted_on is not None))
            starts[row.symbol] = plan.start
        except Exception as exc:  # the range path records the database fault for this symbol
            context.log.warning(f"{row.symbol}: could not plan a grouped refresh ({type(exc).__name__}: {exc})")
            windows.append(SymbolWindow(row.symbol, row.asset_class, today, True))
    plans = plan_refresh(
        windows, targets, max_grouped_dates=config.max_grouped_dates, allow_grouped=config.use_grouped_daily
    )
    by_symbol = {row.symbol: row for row in rows}
    for market, plan in plans.items():
        context.log.info(
            f"{market}: {len(plan.grouped)} symbol(s) from {len(plan.dates)} grouped-daily request(s) "
            f"({plan.dates[0] if plan.dates else '-'}..{plan.target}), {len(plan.ranged)} with a range request each: "
            f"{plan.requests} request(s) where one per symbol would be {plan.range_only_requests}"
        )
        grouped = [(by_symbol[s], starts[s]) for s in plan.grouped]
        for result in refresh_grouped(
            client, store, registry, grouped, plan.dates, plan.target, run_id=context.run_id,
            refetch_sessions=config.refetch_sessions, default_history_days=config.default_history_days,
        ):
            yield result, by_symbol[result.symbol]
    ranged = {s for plan in plans.values() for s in plan.ranged}
    ranged_rows = [row for row in rows if row.symbol in ranged]
    if len(ranged_rows) > 1 and client.max_in_flight > 1:
        context.log.info(f"{len(ranged_rows)} range request(s), up to {client.max_in_flight} in flight at once")
    fresh: dict[str, object] = {}

    def resolved_rows():  # each row as its saved reference left it, just before it is prepared
        for row in ranged_rows:
            if lookups is not None:
                if row.symbol in lookups.pending:
                    lookups.resolve([row.symbol])
                row = lookups.fresh(row)
            fresh[row.symbol] = row
            yield row

    # the fetches run in threads, their answers decoded in another process when there are many; every
    # database write stays on this thread (closing it stops them)
    with client.decoding(len(ranged_rows)) as decoder, closing(refresh_symbols(
        client, store, registry, resolved_rows(), max_in_flight=client.max_in_flight, run_id=context.run_id,
        today=today, refetch_sessions=config.refetch_sessions, default_history_days=config.default_history_days,
        full_refetch=full_refetch, completed_session=lambda row: targets[market_of(row.asset_class)],
    )) as results:
        for result in results:
            yield result, fresh.pop(result.symbol)
    if decoder is not None:
        context.log.info(
            f"{decoder.decoded} of {client.stats.by_endpoint.get('aggs_range', 0)} range answer(s) decoded in a "
            "separate process (POLYGON_DECODE_PROCESSES), the others in this one (while it started, or after it stopped)"
        )


def _returns(context, config, warehouse, batch, selected: bool, checks: set, views):
    """daily_returns of a batch of stored symbols: updated (selected), or, when the run stores bars
    without their returns, their kept state dropped for those whose bars changed (their next update
    recomputes them whole)."""
    if not batch:
        return
    if selected or checks:
        yield from returns_batch(context, config, warehouse.resolved_url(), batch, checks, views, materialize=selected)
        if selected:
            return
    changed = [result.symbol for result, _ in batch if changed_from(result) is not None]
    if changed:
        ReturnsStore(warehouse.resolved_url()).forget(changed)
