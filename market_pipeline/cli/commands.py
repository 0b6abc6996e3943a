"""The command handlers behind `market-pipeline` (see main.py for the parser).

Each handler imports what it uses: a read-only command never loads Dagster, the code location or
the HTTP client (test_cli_first_hour.py holds them to that)."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING

from market_pipeline import settings
from market_pipeline.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from market_pipeline.cli.bars import cmd_bars  # noqa: F401  (market-pipeline bars)
from market_pipeline.cli.returns import cmd_returns  # noqa: F401  (market-pipeline returns)
from market_pipeline.cli.revisions import cmd_revisions  # noqa: F401  (market-pipeline revisions)

if TYPE_CHECKING:
    from market_pipeline.warehouse.registry import SymbolRegistry


def _registry() -> SymbolRegistry:
    from market_pipeline.warehouse.registry import SymbolRegistry

    return SymbolRegistry(settings.db_url())


def _instance(init=None):
    from market_pipeline.devtools.instance import open_instance

    return open_instance(init)


def _release_ended_runs(registry: SymbolRegistry) -> None:
    """Before showing symbols: those a run that has ended left `in_progress` (it stopped on a full
    disk and could not record them) are marked failed with its reason, or reported on stderr when
    the warehouse still cannot be written. Dagster is opened only when some symbol is in progress."""
    import sqlalchemy as sa

    try:
        if not registry.in_progress():
            return
    except sa.exc.DBAPIError:
        return  # the command itself reports what is wrong with the warehouse
    from market_pipeline.devtools import runner
    from market_pipeline.devtools.instance import DagsterStorageError

    try:
        instance = _instance()
    except DagsterStorageError:
        return
    runner.release_ended_runs(instance, registry)


# ---- symbols ------------------------------------------------------------------------------------
def cmd_symbols(args) -> int:
    if args.action in ("show", "rename"):  # Polygon's reference data: the HTTP client
        from market_pipeline.cli import lifecycle

        return getattr(lifecycle, args.action)(args)
    handlers = {"add": _add, "list": _list, "activate": _activate, "deactivate": _deactivate}
    return handlers[args.action](args)


def _add(args) -> int:
    registry = _registry()
    before = {row.symbol: row for row in registry.get_many(stored_forms(args.symbols, args.asset_class))}
    if args.verify:
        from market_pipeline.cli.lifecycle import verified_add

        outcomes = verified_add(registry, args.symbols, args.asset_class, args.start_date)
    else:
        outcomes = registry.add(args.symbols, args.asset_class, args.start_date)
    after = {row.symbol: row for row in registry.get_many([o.symbol for o in outcomes if o.symbol in before])}
    for outcome in outcomes:
        old, new = before.get(outcome.symbol), after.get(outcome.symbol)
        moved = old is not None and new is not None and new.start_date != old.start_date
        print(f"{outcome.symbol}: {outcome.action}" + (_start_moved(old, new.start_date) if moved else ""))
    return EXIT_OK


def stored_forms(symbols, asset_class) -> list[str]:
    """The stored forms of `symbols` ([] for bad input: registry.add refuses it, naming it)."""
    from market_pipeline.polygon.tickers import SymbolError, normalize_symbol

    try:
        return list(dict.fromkeys(normalize_symbol(s, asset_class) for s in symbols))
    except SymbolError:
        return []


def _start_moved(old, new) -> str:
    """What moving a tracked symbol's start date does, said when it happens (never silently)."""
    from market_pipeline.refresh.ingest import DEFAULT_HISTORY_DAYS

    was = str(old.start_date) if old.start_date else f"the default, {DEFAULT_HISTORY_DAYS} days before its first run"
    text = f": start date now {new} (was {was})"
    if old.history_from is not None and new < old.history_from:
        return text + f"; its bars start on {old.history_from}, so its next run fetches its whole history again from {new}"
    if old.history_from is not None:
        return text + f"; the bars stored before {new} are kept"
    return text


NAME_WIDTH = 30


def short_name(name: str | None, width: int = NAME_WIDTH) -> str:
    """`name` in at most `width` characters, cut at a word boundary with an ellipsis."""
    name = " ".join((name or "").split())
    if len(name) <= width:
        return name
    cut = name[: width - 1]
    if " " in cut and name[width - 1] != " ":
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-(") + "…"


def _list(args) -> int:
    """The tracked symbols with their status, bars (count and date range, as `symbol_stats` last
    counted them), Polygon's type, reference status and name, the bars' basis and a note."""
    from market_pipeline.warehouse.reference import ReferenceStore
    from market_pipeline.warehouse.stats_table import read_stats

    registry = _registry()
    _release_ended_runs(registry)
    rows = registry.list(include_inactive=args.all)
    refs = ReferenceStore(registry.url).get_many([r.symbol for r in rows]) if rows else {}
    counted = {s["symbol"]: s for s in read_stats(registry.engine)} if rows else {}
    if args.json:
        out = []
        for r in rows:
            ref, bars = refs.get(r.symbol), counted.get(r.symbol) or {}
            out.append({
                **r.as_dict(), "status": r.status,
                "record_count": bars.get("record_count"),
                "first_date": bars["first_date"].isoformat() if bars.get("first_date") else None,
                "last_date": bars["last_date"].isoformat() if bars.get("last_date") else None,
                "reference": ref.record.as_dict() | {"fetched_at": ref.fetched_at.isoformat()} if ref else None,
            })
        print(json.dumps(out, indent=2))
        return EXIT_OK
    if not rows:
        print("No symbols tracked. Add some: market-pipeline symbols add AAPL --asset-class stock")
        return EXIT_OK
    print(
        f"{'SYMBOL':<10} {'CLASS':<6} {'ACTIVE':<6} {'STATUS':<11} {'BARS':>6} {'FIRST':<10} {'LAST':<10} "
        f"{'LAST BACKFILL':<16} {'TYPE':<5} {'REFERENCE':<12} {'NAME':<{NAME_WIDTH}} {'BASIS':<9} {'CORP.ACTIONS':<12} NOTE"
    )
    for r in rows:
        last = r.last_backfill.strftime("%Y-%m-%d %H:%M") if r.last_backfill else "-"
        ref = refs.get(r.symbol)
        rec = ref.record if ref else None
        bars = counted.get(r.symbol) or {}
        count = bars.get("record_count")
        first, final = bars.get("first_date"), bars.get("last_date")
        note = (r.backfill_error or "").splitlines()[0][:100] if r.backfill_error and r.backfill_status == "failed" else ""
        if r.delisted_on:
            note = f"delisted {r.delisted_on}" + (f"; {note}" if note else "")
        if rec is not None and rec.status != "ok" and rec.status_text:
            note = f"{note}; {rec.status_text}" if note else rec.status_text
        if r.corporate_actions_error and r.corporate_actions_status == "failed":
            note = (note + "; " if note else "") + r.corporate_actions_error.splitlines()[0][:100]
        # 'adjusted': stored before the upgrade to as-traded bars; the next run re-fetches them
        basis = "adjusted (re-fetch)" if r.bars_basis == "adjusted" else r.bars_basis
        print(
            f"{r.symbol:<10} {r.asset_class:<6} {'yes' if r.active else 'no':<6} {r.status:<11} "
            f"{'-' if count is None else count:>6} {str(first or '-'):<10} {str(final or '-'):<10} {last:<16} "
            f"{(rec.type or '-') if rec else '-':<5} {rec.status if rec else 'not fetched':<12} "
            f"{short_name(rec.name if rec else ''):<{NAME_WIDTH}} {basis:<9} {r.corporate_actions_status or '-':<12} {note}".rstrip()
        )
    return EXIT_OK


def _activate(args) -> int:
    changed = _registry().set_active(args.symbols, True)
    print(f"activated: {', '.join(changed) if changed else 'nothing to change'}")
    return EXIT_OK


def _deactivate(args) -> int:
    changed = _registry().set_active(args.symbols, False)
    print(f"deactivated: {', '.join(changed) if changed else 'nothing to change'} (stored bars are kept)")
    return EXIT_OK


# ---- run ----------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from market_pipeline.devtools import runner

    registry = _registry()
    instance = _instance(runner.ensure_pool)  # once, under a lock on DAGSTER_HOME
    runner.recover_dead_runs(instance, registry)
    runner.release_ended_runs(instance, registry)
    demo: list[str] = []
    demo_runs: list[str] = []
    with runner.polygon_endpoint() as sandbox:
        first_demo = sandbox is not None and runner.register_demo_set(registry)
        if sandbox is not None and not first_demo:
            runner.keep_demo_correction(sandbox)  # the sandbox serves what the demo corrected as corrected
        added, deleted = runner.reconcile_partitions(instance, registry)
        if added or deleted:
            print(f"Partitions: {len(added)} added, {len(deleted)} removed.")
        if args.symbols:
            rows = registry.resolve(args.symbols)
            inactive = [r.symbol for r in rows if not r.active]
            if inactive:
                raise UsageError(f"inactive: {', '.join(inactive)}; activate with `market-pipeline symbols activate`")
            symbols = [r.symbol for r in rows]
        else:
            symbols = [s for s, _ in registry.active_symbols()]
        if not symbols:
            print("No active symbols. Add some: market-pipeline symbols add AAPL --asset-class stock")
            return EXIT_OK
        print(f"Materialising ohlcv_daily for {len(symbols)} symbol(s)...", flush=True)
        verbose = getattr(args, "verbose", False)
        outcome = runner.materialize_symbols(instance, symbols, verbose=verbose)
        unrecorded = runner.release_ended_runs(instance, registry)  # a run that could not record its failures
        if outcome.interrupted:  # stopped by SIGTERM/SIGINT: report and leave, nothing more runs
            _report_run(registry, symbols, False, outcome.run_ids, unrecorded)
            print("market-pipeline: interrupted: the run was stopped; unfinished symbols are marked failed", file=sys.stderr)
            return EXIT_INTERRUPTED
        stats_ok = runner.materialize_stats(instance, verbose=verbose)
        if first_demo and outcome.ok and runner.DEMO_CORRECTED in symbols:
            demo, demo_runs = runner.demo_late_correction(instance, sandbox, verbose=verbose)
    code = _report_run(registry, symbols, outcome.ok and stats_ok, outcome.run_ids, unrecorded, getattr(args, "fail_on_check", None),
                       check_runs=outcome.run_ids + demo_runs)
    for line in demo:
        print(line)
    return code


def _report_run(
    registry: SymbolRegistry, symbols: list[str], ok: bool, run_ids: list[str], unrecorded: dict[str, str] | None = None,
    fail_on_check: str | None = None, check_runs: list[str] | None = None,
) -> int:
    """One line per symbol; `unrecorded`: the failures the warehouse could not take (symbol -> reason);
    `fail_on_check`: exit 3 when a check of that severity failed (cli.checks); `check_runs`: the runs
    whose checks count (default `run_ids`)."""
    from market_pipeline.cli.checks import check_exit, run_checks
    from market_pipeline.warehouse.store import BarStore

    summary = BarStore(settings.db_url()).summary(symbols)
    rows = {r.symbol: r for r in registry.get_many(symbols)}
    failed = quarantined = 0
    unrecorded = unrecorded or {}
    checks, checks_line, outcomes = run_checks(symbols, check_runs or run_ids)
    for symbol in symbols:
        row = rows[symbol]
        if symbol in unrecorded:
            row = dataclasses.replace(row, backfill_status="failed", backfill_error=unrecorded[symbol])
        count, first, last = summary.get(symbol, (0, None, None))
        span = f"{first}..{last}" if first else "no bars"
        line = f"{symbol:<10} {row.asset_class:<7} {count:>6} rows  {span:<22} {row.backfill_status}"
        if row.backfill_status == "completed" and row.quarantined_bars:
            quarantined += row.quarantined_bars
            line += f"  {row.quarantined_bars} bar(s) quarantined"
        if row.backfill_status != "completed":
            failed += 1
            error = (row.backfill_error or "no reason recorded").splitlines()[0][:300]
            if symbol not in unrecorded:  # those were reported when the warehouse refused them
                print(f"market-pipeline: {symbol} {row.backfill_status}: {error}", file=sys.stderr)
            line += f"  {(row.backfill_error or '').splitlines()[0][:160] if row.backfill_error else ''}"
        elif row.asset_class != "crypto":
            line += _splits_note(symbol, first)
        if row.corporate_actions_status == "failed":
            line += f"  corporate actions not read: {(row.corporate_actions_error or '').splitlines()[0][:120]}"
        if row.backfill_status == "completed":
            line += f"  {checks[symbol]}"
        print(line)
    print(
        f"{len(symbols) - failed} of {len(symbols)} symbol(s) completed in {len(run_ids)} run(s); "
        f"{quarantined} bar(s) quarantined{' (see ohlcv_quarantine)' if quarantined else ''}."
    )
    print(checks_line)
    if any(rows[s].asset_class != "crypto" for s in symbols):
        print(
            "Stocks and ETFs are stored as traded (ohlcv_daily); split-adjusted: ohlcv_daily_adjusted, "
            "total return: ohlcv_daily_total_return (`market-pipeline bars SYMBOL --adjustment splits`)."
        )
    if not (ok and not failed):
        return EXIT_FAILED
    return check_exit(outcomes, fail_on_check) or EXIT_OK


def _splits_note(symbol: str, first) -> str:
    """`  splits: 2-for-1 2025-12-01` for the active splits inside the stored bars (the adjusted views differ before them)."""
    from market_pipeline.warehouse.corporate_actions import CorporateActionStore

    splits = [
        s for s in CorporateActionStore(settings.db_url()).splits(symbol)
        if s.status == "active" and first is not None and s.execution_date > first
    ]
    return ("  splits: " + ", ".join(f"{s.label} {s.execution_date}" for s in splits)) if splits else ""


# ---- sandbox, stats, db --------------------------------------------------------------------------
def cmd_sandbox(args) -> int:
    from market_pipeline.sandbox import serve_forever

    if args.latency_ms < 0:
        raise UsageError(f"--latency-ms must be 0 or more, got {args.latency_ms} (the real API answers in 100-300)")
    serve_forever(host=args.host, port=args.port, rate_limit_per_minute=args.rate_limit, latency_ms=args.latency_ms)
    return EXIT_OK


def cmd_stats(args) -> int:
    from market_pipeline.quality.report import cli_record, stats_for
    from market_pipeline.warehouse.store import BarStore

    registry = _registry()
    _release_ended_runs(registry)
    rows = registry.resolve(args.symbols) if args.symbols else registry.list(include_inactive=True)
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    records = [cli_record(r, s, now) for r, s in stats_for(rows, BarStore(settings.db_url()), now=now)]
    from market_pipeline.cli.checks import stats_checks
    from market_pipeline.quality.outcomes import CheckOutcome, symbol_line

    checks = stats_checks([rec["symbol"] for rec in records])
    for rec in records:  # every check's latest outcome, as the run that evaluated it recorded it
        rec["checks"] = checks.get(rec["symbol"], {})
    if args.json:
        print(json.dumps({rec.pop("symbol"): rec for rec in records}, indent=2))
        return EXIT_OK
    print(f"{'SYMBOL':<10} {'CLASS':<7} {'RECORDS':>8} {'START':<11} {'END':<11} {'VALID':>7} {'GAPS':>5} {'STATUS':<12} {'FRESHNESS':<12} CHECKS")
    for rec in records:
        rate = "-" if rec["validation_rate"] is None else f"{rec['validation_rate']:.4f}"
        start, end = rec["date_range"]["start"] or "-", rec["date_range"]["end"] or "-"
        outcomes = [CheckOutcome(rec["symbol"], c["asset"], name, c["passed"], c["severity"], c["summary"]) for name, c in rec["checks"].items()]
        print(f"{rec['symbol']:<10} {rec['asset_class']:<7} {rec['record_count']:>8} {start:<11} {end:<11} {rate:>7} {rec['gaps_detected']:>5} {rec['status']:<12} {_freshness_text(rec['freshness']):<12} {symbol_line(outcomes)}")
    return EXIT_OK


def _freshness_text(fresh: dict) -> str:
    if fresh["state"] == "stale":
        return f"stale: {fresh['sessions_missing']} session(s) behind (expected {fresh['expected_session']})"
    if fresh["state"] == "delisted":
        return f"delisted {fresh.get('delisted_on', '')} (expected-stale)"
    return fresh["state"]


def cmd_db(args) -> int:
    from market_pipeline.warehouse.engine import current_revision, get_engine, head_revision, open_engine

    if args.action == "current":  # read-only: no migration
        engine = open_engine(settings.db_url())
        current, head = current_revision(engine), head_revision()
        state = "up to date" if current == head else "behind: run `market-pipeline db upgrade`"
        if current is None:
            from market_pipeline.warehouse.engine import half_made_tables

            with engine.connect() as conn:
                half = half_made_tables(conn)  # names what is wrong with tables that are not ours
            if half:
                state = f"half-made by an interrupted first upgrade (tables {', '.join(half)}): `market-pipeline db upgrade` repairs it"
        print(f"warehouse schema at revision {current}, head {head} ({state}; {engine.url.render_as_string(hide_password=True)})")
        return EXIT_OK
    engine = get_engine(settings.db_url())  # upgrades to head on first use
    print(f"warehouse schema at revision {current_revision(engine)} ({engine.url.render_as_string(hide_password=True)})")
    return EXIT_OK
