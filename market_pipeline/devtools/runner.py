"""The main job, headless: reconcile partitions with the registry, then materialise the symbols
through Dagster in this process (the same asset code the UI runs), then refresh symbol_stats."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dagster import DagsterInstance

from market_pipeline import settings
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.reconcile import contiguous_runs, plan_partitions, range_tags
from market_pipeline.warehouse.registry import SymbolRegistry

if TYPE_CHECKING:
    from market_pipeline.sandbox import SandboxServer

CLI_TAGS = {"market_pipeline/trigger": "cli_run"}
# the CLI prints its own summary and one line per failed symbol; Dagster's events, stack traces
# included, stay in the run's event log (`--verbose` shows them on stderr too)
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
VERBOSE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
DEMO_SYMBOLS = {"stock": ["AAPL", "MSFT"], "etf": ["SPY"], "crypto": ["BTCUSD", "ETHUSD"]}
DEMO_CORRECTED = "AAPL"  # the demo's late correction: its last two sessions, re-served 0.4% higher
DEMO_CORRECTION = 1.004


@contextlib.contextmanager
def keeping_sigterm() -> Iterator[None]:
    """SIGTERM's handler as it was before the block. Dagster's `capture_interrupts`, around every
    in-process run, ends by giving SIGTERM SIGINT's handler (`setup_interrupt_handlers`); in a process
    started with SIGINT ignored (a shell's background job: `nohup market-pipeline run &`, cron
    scripts) that leaves SIGTERM ignored, so `kill PID` could no longer stop the next run."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if saved is not None:  # None: a handler set outside Python, which Python cannot put back
            signal.signal(signal.SIGTERM, saved)


@dataclass
class RunOutcome:
    ok: bool
    symbols: list[str]
    run_ids: list[str]
    interrupted: bool = False  # a run was stopped by SIGTERM/SIGINT: no further run was started


@contextlib.contextmanager
def polygon_endpoint(out=None) -> Iterator["SandboxServer | None"]:
    """Use the real API when a key is set (None); otherwise start the built-in sandbox for the
    duration (the server: its knobs can change what it serves).

    Against the sandbox, pacing follows the sandbox's own limit (none), so the environment for
    this process says POLYGON_REQUESTS_PER_MINUTE=0.
    """
    out = out or sys.stdout
    if settings.polygon_api_key():
        print(f"Using Polygon at {settings.polygon_base_url()} (key from the environment).", file=out)
        yield None
        return
    from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer

    saved = {k: os.environ.get(k) for k in ("POLYGON_API_KEY", "POLYGON_BASE_URL", "POLYGON_REQUESTS_PER_MINUTE")}
    with SandboxServer(host="127.0.0.1", port=0) as server:
        os.environ.update(
            POLYGON_API_KEY=SANDBOX_API_KEY, POLYGON_BASE_URL=server.url, POLYGON_REQUESTS_PER_MINUTE="0"
        )
        print(
            f"No POLYGON_API_KEY set: using the built-in Polygon sandbox at {server.url}. "
            "The bars are SYNTHETIC, not market data.",
            file=out,
        )
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def register_demo_set(registry: SymbolRegistry, out=None) -> bool:
    """On an empty registry, track the demo set (two stocks, one ETF, two crypto pairs)."""
    out = out or sys.stdout
    if registry.list(include_inactive=True):
        return False
    for asset_class, symbols in DEMO_SYMBOLS.items():
        registry.add(symbols, asset_class)
    names = ", ".join(s for group in DEMO_SYMBOLS.values() for s in group)
    print(f"The registry was empty: tracking the demo set {names} (synthetic sandbox data).", file=out)
    return True


def ensure_pool(instance: DagsterInstance) -> None:
    """Create the `polygon_api` pool at its configured default limit before any run starts.

    Dagster 1.13 creates a pool lazily when the first op claims it; two processes doing so at the
    same moment can fail a run on PostgreSQL storage. Creating it up front, serially, avoids that.
    """
    from market_pipeline.defs.bars.assets import POLYGON_POOL

    storage = instance.event_log_storage
    if POLYGON_POOL not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(POLYGON_POOL)


def _process_tags() -> dict[str, str]:
    """Who runs a CLI run, so a later CLI can tell a run whose process was killed."""
    return {**CLI_TAGS, "market_pipeline/host": socket.gethostname(), "market_pipeline/pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead_runs(instance: DagsterInstance, registry: SymbolRegistry, out=None) -> list[str]:
    """Fail the CLI runs of this host whose process is gone (kill -9), mark the symbols they left
    `in_progress` as failed, and free the pool slots that ended runs still hold; otherwise the next
    run would wait for the `polygon_api` slot forever. Without `make dev`, no daemon does this."""
    from dagster import DagsterRunStatus, RunsFilter

    from market_pipeline.defs.bars.released import release_run
    from market_pipeline.defs.bars.sensors import free_pool_slots

    out = out or sys.stderr
    host = socket.gethostname()
    running = instance.get_runs(
        filters=RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING], tags=CLI_TAGS)
    )
    recovered = []
    for run in running:
        pid = run.tags.get("market_pipeline/pid")
        if run.tags.get("market_pipeline/host") != host or not pid or _alive(int(pid)):
            continue
        reason = f"the market-pipeline process (pid {pid}) that ran it is gone"
        instance.report_run_failed(run, reason)
        symbols = release_run(instance, registry, run.run_id, reason)
        print(f"Run {run.run_id} died with its process; marked failed ({', '.join(symbols) or 'no symbol in progress'}).", file=out)
        recovered.append(run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for run_id in storage.get_concurrency_run_ids():
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                free_pool_slots(instance, run_id)
    return recovered


def release_ended_runs(instance: DagsterInstance, registry: SymbolRegistry, out=None) -> dict[str, str]:
    """Symbols left `in_progress` by runs of this instance that have ended (a run stopped by a full
    disk that could not record its symbols, a run whose process died and was marked failed) are
    marked `failed` with the reason the run recorded for each. When the warehouse still cannot be
    written, each is reported on `out` (stderr) instead: symbol -> reason of those is returned."""
    import sqlalchemy as sa

    from market_pipeline.defs.bars.released import run_errors
    from market_pipeline.warehouse.faults import describe

    out = out or sys.stderr
    by_run: dict[str, list[str]] = {}
    for symbol, run_id in registry.in_progress().items():
        if run_id:
            by_run.setdefault(run_id, []).append(symbol)
    unrecorded: dict[str, str] = {}
    for run_id, symbols in by_run.items():
        run = instance.get_run_by_id(run_id)
        if run is None or not run.is_finished:  # another instance's run, or one still going
            continue
        errors = run_errors(instance, run_id)
        reason = _end_message(instance, run)
        try:
            registry.fail_in_progress_for_run(run_id, reason, errors)
        except sa.exc.DBAPIError as exc:
            for symbol in sorted(symbols):
                why = errors.get(symbol) or f"run {run_id} ended before this symbol finished: {reason}"
                unrecorded[symbol] = why
                print(f"market-pipeline: {symbol} failed: {why} (not recorded in the warehouse: {describe(exc)})", file=out)
    return unrecorded


def _end_message(instance: DagsterInstance, run) -> str:
    """How the run ended, in its own words (its failure or cancellation event), else its status."""
    from dagster import DagsterEventType

    for kind in (DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED):
        records = instance.get_records_for_run(run.run_id, of_type=kind).records
        if records and (records[-1].event_log_entry.message or "").strip():
            return records[-1].event_log_entry.message.strip()
    return f"the run ended {run.status.value.lower()}"


def reconcile_partitions(instance: DagsterInstance, registry: SymbolRegistry) -> tuple[list[str], list[str]]:
    """Make the `symbols` partitions equal the active symbols. Returns (added, deleted)."""
    name = symbols_partitions.name
    plan = plan_partitions([s for s, _ in registry.active_symbols()], instance.get_dynamic_partitions(name))
    if plan.to_add:
        instance.add_dynamic_partitions(name, plan.to_add)
    for key in plan.to_delete:
        instance.delete_dynamic_partition(name, key)
    return plan.to_add, plan.to_delete


def materialize_symbols(
    instance: DagsterInstance, symbols: Sequence[str], tags: dict | None = None, verbose: bool = False
) -> RunOutcome:
    """Run ohlcv_daily (with its checks) for `symbols` in as few in-process runs as partition order allows.

    Unlike a UI backfill (runs of MAX_PARTITIONS_PER_RUN, queued and spread over workers), the CLI
    runs each contiguous span of partitions as ONE run, however long: inside it each market plans its
    grouped-daily requests once, so a daily refresh of all symbols costs (missed sessions + re-fetch
    window) requests per market whatever the number of symbols, like the schedules. Memory stays flat:
    the op streams symbol by symbol."""
    from market_pipeline.definitions import defs

    from market_pipeline.defs.bars.interrupts import was_interrupted

    job = defs.resolve_job_def("ohlcv_daily_job")
    ordered = instance.get_dynamic_partitions(symbols_partitions.name)
    ok, run_ids = True, []
    log_config = VERBOSE if verbose else QUIET
    for batch in contiguous_runs(symbols, ordered, size=max(len(ordered), 1)):
        run_tags = {**(tags or {}), **_process_tags()}
        with keeping_sigterm():
            if len(batch) == 1:
                result = job.execute_in_process(
                    instance=instance, partition_key=batch[0], tags=run_tags, run_config=log_config, raise_on_error=False
                )
            else:
                result = job.execute_in_process(
                    instance=instance, tags={**run_tags, **range_tags(batch)}, run_config=log_config, raise_on_error=False
                )
        ok = ok and result.success
        run_ids.append(result.run_id)
        if was_interrupted(result):
            return RunOutcome(False, list(symbols), run_ids, interrupted=True)
    return RunOutcome(ok, list(symbols), run_ids)


def materialize_stats(instance: DagsterInstance, verbose: bool = False) -> bool:
    from market_pipeline.definitions import defs

    job = defs.resolve_job_def("symbol_stats_job")
    config = VERBOSE if verbose else QUIET
    with keeping_sigterm():
        return job.execute_in_process(instance=instance, run_config=config, raise_on_error=False, tags=_process_tags()).success


def keep_demo_correction(sandbox: "SandboxServer") -> list:
    """Later runs against a new sandbox: serve the dates the demo corrected (DEMO_CORRECTED's bars
    revised by exactly DEMO_CORRECTION) corrected again, so a refresh does not put the first values
    back. Returns those dates."""
    from market_pipeline.warehouse.revisions import RevisionStore

    dates = sorted({
        b.date for b in RevisionStore(settings.db_url()).of_symbol(DEMO_CORRECTED).bars
        if b.old.get("close") and b.new.get("close") and abs(b.new["close"] / b.old["close"] - DEMO_CORRECTION) < 1e-5  # prices kept to 4 decimals
    })
    if dates:
        sandbox.revise_bars(DEMO_CORRECTED, dates, DEMO_CORRECTION)
    return dates


def demo_late_correction(instance: DagsterInstance, sandbox: "SandboxServer", verbose: bool = False) -> tuple[list[str], list[str]]:
    """The demo's point-in-time read: after the first run, the sandbox corrects DEMO_CORRECTED's last
    two stored sessions (as Polygon revises recent bars after late trades) and a refresh of that symbol
    stores the new values, keeping the old ones with when they were replaced. Returns the lines that
    say what changed and how to read the history as first stored ([]: nothing to show), and the run
    ids of the refresh (whose checks are now the symbol's latest)."""
    import datetime as dt

    from market_pipeline.warehouse.revisions import RevisionStore
    from market_pipeline.warehouse.store import BarStore

    url = settings.db_url()
    stored = BarStore(url).read_bars(DEMO_CORRECTED)
    if len(stored) < 2:
        return [], []
    dates = [d.date() for d in stored["date"].iloc[-2:]]
    now = dt.datetime.now(dt.timezone.utc)
    before = now.replace(microsecond=0) + dt.timedelta(seconds=1)  # a whole second, after every bar of the first run
    time.sleep((before - now).total_seconds())  # and before any of the refresh
    sandbox.revise_bars(DEMO_CORRECTED, dates, DEMO_CORRECTION)
    refresh = materialize_symbols(instance, [DEMO_CORRECTED], verbose=verbose)
    if not refresh.ok:
        return [f"The demo's late correction of {DEMO_CORRECTED} did not refresh: see the run in the Dagster UI."], refresh.run_ids
    revised = RevisionStore(url).of_symbol(DEMO_CORRECTED, before).bars
    if not revised:
        return [], refresh.run_ids
    first = revised[0]
    return [
        f"Late correction (sandbox): {DEMO_CORRECTED}'s bars of {' and '.join(str(b.date) for b in revised)} were "
        f"re-served {100 * (DEMO_CORRECTION - 1):.1f}% higher; a refresh stored them and kept the old values "
        f"(close {first.old['close']:.4f} -> {first.new['close']:.4f} on {first.date}).",
        f"  What changed: market-pipeline revisions {DEMO_CORRECTED}",
        f"  As first stored: market-pipeline bars {DEMO_CORRECTED} --as-of {before.strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ], refresh.run_ids
