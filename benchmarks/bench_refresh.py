"""Requests and time of one scheduled daily refresh of N tracked stocks, grouped-daily vs range path.

    .venv/bin/python -m benchmarks.bench_refresh [--symbols 1000] [--windows 1 3] [--missed 1 3]
                                                 [--history-sessions 60] [--checks] [--kept-states] [--no-range]
                                                 [--dagster-defaults] [--json FILE]

For each (re-fetch window, missed sessions): a fresh SQLite warehouse holding N stocks whose
history (synthetic, written straight into the warehouse) ends `missed` sessions before the target, a
fresh Dagster instance with their partitions, the sandbox listing them on its grouped endpoint. The
`stocks_daily_refresh` schedule is evaluated at a fixed tick (target 2025-03-05) and the run it
requests is executed in-process, as the daemon would launch it. The sandbox counts the requests.
The sandbox renders the grouped-daily answers once before the timed run (it runs in this
process; its work is not the pipeline's). Then the same refresh with the grouped path switched off (`use_grouped_daily: false`) on a copy of
the same warehouse: the per-symbol cost it replaces. The asset checks are left out unless `--checks`
(they cost the same on both paths and dominate the time with the SQLite event log).

Target: requests = missed + window, whatever N; never more than the per-symbol path (N).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import tempfile
import time
import warnings
import zoneinfo
from pathlib import Path

TICK = dt.datetime(2025, 3, 5, 18, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
TARGET = dt.date(2025, 3, 5)


def _symbols(n: int) -> list[str]:
    return [f"R{i // 17576 % 26 + 65:c}{i // 676 % 26 + 65:c}{i // 26 % 26 + 65:c}{i % 26 + 65:c}" for i in range(n)]


def _bars(symbol: str, start: dt.date, end: dt.date):
    from market_pipeline.polygon.bars import BAR_COLUMNS
    from market_pipeline.sandbox import as_traded_bars

    frame = as_traded_bars(symbol, start, end).rename(
        columns={"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap", "n": "transactions"}
    )
    frame["transactions"] = frame["transactions"].astype("Int64")
    return frame[list(BAR_COLUMNS)]


def _seed(url: str, symbols: list[str], history_sessions: int, missed: int) -> None:
    from market_pipeline.refresh.planning import session_dates
    from market_pipeline.warehouse import BarStore, SymbolRegistry

    sessions = session_dates("stocks", TARGET - dt.timedelta(days=2 * history_sessions + 30), TARGET)
    start, last = sessions[-(history_sessions + missed)], sessions[-1 - missed]
    registry, store = SymbolRegistry(url), BarStore(url)
    registry.add(symbols, "stock", start)
    for symbol in symbols:
        store.upsert_bars(symbol, _bars(symbol, start, last))
        registry.mark_completed(symbol, "seed", history_from=start)


def _keep_states(url: str, symbols: list[str], window: int) -> None:
    """Each symbol's checks state as the previous day's refresh kept it (untimed): its bars before the
    cut folded, with their fingerprint, exactly as the ohlcv_daily op keeps it; and its daily returns
    (without them, as on the first refresh after an upgrade, each history's returns are computed whole)."""
    from market_pipeline.quality.checks_fold import evaluate, fold_basis, state_cut
    from market_pipeline.quality.report import CheckThresholds
    from market_pipeline.warehouse import BarStore
    from market_pipeline.warehouse.check_state import CheckStateStore, StoredState
    from market_pipeline.warehouse.store import utcnow

    before = TICK - dt.timedelta(days=1)
    settings, store, states = CheckThresholds(), BarStore(url), CheckStateStore(url)
    cut = state_cut("stock", before, window_sessions=window)
    prints = states.prints({symbol: [cut] for symbol in symbols})
    kept = []
    for symbol in symbols:
        outcome = evaluate(symbol, "stock", store.read_bars(symbol), now=before, settings=settings, cut=cut)
        kept.append(StoredState(symbol, cut, prints[symbol].before[cut], fold_basis("stock", settings, []), outcome.state.to_json()))
    states.put_many(kept, utcnow())
    # and its daily returns, as that refresh computed them
    from market_pipeline.returns.update import ReturnsRequest, update_returns

    for i in range(0, len(symbols), 500):
        update_returns(url, [ReturnsRequest(symbol, whole=True) for symbol in symbols[i : i + 500]])


def _refresh(instance, url: str, window: int, grouped: bool, checks: bool) -> tuple[bool, float]:
    """Evaluate the schedule at TICK and execute the run it requests; (success, seconds)."""
    from dagster import build_schedule_context

    from market_pipeline.defs.bars.checks import OHLCV_KEY
    from market_pipeline.definitions import defs
    from market_pipeline.defs.resources import WarehouseResource

    repository = defs.get_repository_def()
    schedule = repository.get_schedule_def("stocks_daily_refresh")
    with build_schedule_context(
        instance=instance, scheduled_execution_time=TICK,
        resources={"warehouse": WarehouseResource(url=url)}, repository_def=repository,
    ) as context:
        data = schedule.evaluate_tick(context)
    if len(data.run_requests or []) != 1:
        raise RuntimeError(f"stocks_daily_refresh requested {data.run_requests} ({data.skip_message})")
    (request,) = data.run_requests
    config = {
        **request.run_config["ops"]["ohlcv_daily"]["config"], "refetch_sessions": window, "use_grouped_daily": grouped,
        "as_of": TICK.isoformat(),  # the checks' sessions and gaps as at the tick, as the daemon's run would see them
    }
    job = defs.resolve_job_def("ohlcv_daily_job")
    if not checks:
        job = job.get_subset(asset_selection={OHLCV_KEY}, asset_check_selection=set())
    run_config = {
        "ops": {"ohlcv_daily": {"config": config}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    began = time.perf_counter()
    result = job.execute_in_process(instance=instance, tags=request.tags, run_config=run_config, raise_on_error=False)
    return result.success, time.perf_counter() - began


def _warm(sandbox, sessions: int) -> None:
    """Render the grouped-daily answers of the last sessions before the timed run (untimed, no request
    counted): the sandbox runs in this process, and building 10,000 tickers' rows is its work, not the
    pipeline's (the real API answers from its own caches)."""
    from market_pipeline.refresh.planning import session_dates

    for day in session_dates("stocks", TARGET - dt.timedelta(days=3 * sessions + 10), TARGET)[-(sessions + 2):]:
        sandbox._grouped_rows(day, False, False)


def scenario(sandbox, symbols, window, missed, history_sessions, checks, compare_range, workdir: Path, kept_states: bool = False,
             dagster_defaults: bool = False) -> dict:
    from dagster import instance_for_test

    from market_pipeline.defs.bars.partitions import symbols_partitions
    from market_pipeline.storage.config import project_event_log_storage

    url = f"sqlite:///{workdir / 'warehouse.sqlite'}"
    os.environ["MARKET_PIPELINE_DB_URL"] = url
    began = time.perf_counter()
    _seed(url, symbols, history_sessions, missed)
    seed_seconds = time.perf_counter() - began
    if kept_states:
        _keep_states(url, symbols, window)
    if compare_range:  # the backup API copies what is still in the WAL file too
        with sqlite3.connect(workdir / "warehouse.sqlite") as source, sqlite3.connect(workdir / "range.sqlite") as copy:
            source.backup(copy)
    out = {"symbols": len(symbols), "window": window, "missed": missed, "target": window + missed, "seed_seconds": seed_seconds}
    paths = [("grouped", True, url)]
    if compare_range:
        paths.append(("range", False, f"sqlite:///{workdir / 'range.sqlite'}"))
    for label, grouped, path_url in paths:
        os.environ["MARKET_PIPELINE_DB_URL"] = path_url
        home = workdir / f"dagster-{label}"
        home.mkdir()
        # the project's dagster.yaml's event log, or Dagster's own (an instance without the project's dagster.yaml)
        overrides = {} if dagster_defaults else project_event_log_storage(home)
        with instance_for_test(temp_dir=str(home), overrides=overrides) as instance:
            instance.add_dynamic_partitions(symbols_partitions.name, symbols)
            _warm(sandbox, window + missed)
            sandbox.reset_counts()
            ok, seconds = _refresh(instance, path_url, window, grouped, checks)
        counts = sandbox.request_counts()
        out[label] = {
            "success": ok, "seconds": seconds, "requests": counts["grouped_stocks"] + counts["aggs_range"],
            "other_requests": counts["total"] - counts["grouped_stocks"] - counts["aggs_range"],
            "grouped_requests": counts["grouped_stocks"], "range_requests": counts["aggs_range"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000, help="tracked stocks (default 1000)")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 3], help="re-fetch windows (default 1 3)")
    parser.add_argument("--missed", type=int, nargs="+", default=[1, 3], help="missed sessions (default 1 3)")
    parser.add_argument("--history-sessions", type=int, default=60, help="stored sessions per symbol (default 60)")
    parser.add_argument("--checks", action="store_true", help="run the two asset checks too")
    parser.add_argument("--no-range", action="store_true", help="skip the per-symbol comparison run")
    parser.add_argument(
        "--kept-states", action="store_true",
        help="with --checks: the checks' states as the previous day's refresh kept them (default: none, "
        "as on the first refresh after an upgrade or a full re-fetch: every history is read whole)",
    )
    parser.add_argument(
        "--dagster-defaults", action="store_true",
        help="Dagster's default instance (what a DAGSTER_HOME without the project's dagster.yaml gives) instead of "
        "the project's pooled event log",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    options = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer

    symbols = _symbols(options.symbols)
    results = []
    with SandboxServer() as sandbox:
        os.environ.update(POLYGON_API_KEY=SANDBOX_API_KEY, POLYGON_BASE_URL=sandbox.url, POLYGON_REQUESTS_PER_MINUTE="0")
        sandbox.add_to_universe(symbols)
        print(f"{options.symbols} stocks, refresh up to {TARGET} (stocks_daily_refresh at {TICK.isoformat()}), "
              f"checks {'on' if options.checks else 'off'}", flush=True)
        print(f"{'window':>6} {'missed':>6} {'target':>6} | {'grouped path':>28} | {'per-symbol path':>28}")
        for window in options.windows:
            for missed in options.missed:
                workdir = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
                try:
                    row = scenario(sandbox, symbols, window, missed, options.history_sessions, options.checks,
                                   not options.no_range, workdir, options.kept_states, options.dagster_defaults)
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
                results.append(row)
                cells = []
                for label in ("grouped", "range"):
                    r = row.get(label)
                    cells.append("-" if r is None else f"{r['requests']:>5} req {r['seconds']:>7.1f} s{'' if r['success'] else ' FAILED'}")
                print(f"{window:>6} {missed:>6} {window + missed:>6} | {cells[0]:>28} | {cells[1]:>28}", flush=True)
    other = max((r[label].get("other_requests", 0) for r in results for label in ("grouped", "range") if r.get(label)), default=0)
    if other:
        print(f"(requests are bar requests; each run also read corporate actions in {other} request(s))", flush=True)
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    met = all(r["grouped"]["requests"] == r["target"] and r["grouped"]["success"] for r in results)
    print("target met: requests = missed + window for every case" if met else "TARGET MISSED", flush=True)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
