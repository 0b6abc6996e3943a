"""Scenario 3: the UI path. The webserver and daemon running (`market_pipeline.devtools.stack.DagsterStack`),
a partition backfill of every symbol launched through GraphQL as the UI does, timed to completion."""

from __future__ import annotations

import time

from benchmarks.common import clean_env, pipeline_env, python_module, register, repeat, run_measured, stored_bars
from benchmarks.context import Bench, pct, rate
from benchmarks.report import Section

RUNS_QUERY = """
query BackfillRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName creationTime startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""


def stack_available() -> str | None:
    """None when `market_pipeline.devtools.stack.DagsterStack` can be used, else why not."""
    try:
        from market_pipeline.devtools.stack import DagsterStack  # noqa: F401
    except Exception as exc:  # absent or broken
        return f"market_pipeline.devtools.stack.DagsterStack is not available ({type(exc).__name__}: {exc})"
    return None


def _runs(stack, backfill_id: str | None = None) -> list[dict]:
    """The backfill's runs (every run of the instance when `backfill_id` is None)."""
    run_filter = {"tags": [{"key": "dagster/backfill", "value": backfill_id}]} if backfill_id else {}
    runs = stack.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]
    if runs.get("__typename") != "Runs":
        raise RuntimeError(f"runsOrError: {runs}")
    return runs["results"]


def _once(bench: Bench, timeout: float) -> dict:
    from market_pipeline.devtools.stack import DagsterStack

    home = bench.temp_home("ui")
    url = bench.warehouse_url(home)
    try:
        register(url, bench.symbols, bench.start)
        env = pipeline_env(home, bench.sandbox.url)
        # the partitions exist before the daemon starts, so tracked_symbols_sensor has nothing to do and
        # every run comes from the backfill
        run_measured(python_module("benchmarks.dagster_worker", "partitions"), clean_env(MARKET_PIPELINE_HOME=str(home))).check()
        stack = DagsterStack(home, env, log_path=home / "dagster-dev.log")
        started = time.perf_counter()
        stack.start(timeout=300)
        startup = time.perf_counter() - started
        try:
            started, launched_at = time.perf_counter(), time.time()
            backfill_id = stack.launch_partition_backfill(asset_key="ohlcv_daily", partition_names=None)
            status = stack.wait_backfill(backfill_id, timeout, poll=0.5)
            wall = time.perf_counter() - started
            runs = _runs(stack, backfill_id)
            everything = _runs(stack)
        finally:
            stack.stop()
        if str(status).upper() not in ("COMPLETED", "COMPLETED_SUCCESS", "SUCCESS"):
            raise RuntimeError(f"backfill {backfill_id} ended {status}")
        bars = stored_bars(url)
        failed = [r for r in runs if r["status"] != "SUCCESS"]
        first_created = min((r["creationTime"] for r in runs), default=launched_at)
        first_start = min((r["startTime"] or launched_at for r in runs), default=launched_at)
        last_end = max((r["endTime"] or launched_at for r in runs), default=launched_at)
        return {
            "seconds": wall, "startup_seconds": startup, "runs": len(runs), "failed_runs": len(failed),
            "other_runs": len(everything) - len(runs), "bars": bars, "bars_per_second": rate(bars, wall),
            "to_first_run_created": first_created - launched_at,
            "to_first_run_started": first_start - launched_at,
            "runs_span": last_end - first_start,
            "run_seconds_sum": sum((r["endTime"] or 0) - (r["startTime"] or 0) for r in runs if r["startTime"]),
            "last_run_end_to_completed": launched_at + wall - last_end,
        }
    finally:
        bench.discard(home)


def ui_path(bench: Bench) -> Section:
    n, years = len(bench.symbols), bench.years
    reps = bench.args.ui_repeats if not bench.key_suffix else bench.repeats
    section = Section(
        "ui_path" + bench.key_suffix,
        f"3. UI path: webserver + daemon, a partition backfill launched through GraphQL{bench.label}",
        f"A fresh home per repetition with {n} symbols x {years} years registered and their partitions created; "
        "`DagsterStack` starts `dagster-webserver` and `dagster-daemon`; the benchmark launches a backfill of "
        "every `ohlcv_daily` partition with the same GraphQL mutation the UI's backfill dialog sends, then "
        "polls it to completion. Wall time runs from the launch to the backfill's completion.",
        ["Symbols x years", "Backfill wall seconds", "Runs launched", "Bars", "Bars/s", "Ratio to floor", "Stack start-up seconds"],
    )
    why = stack_available()
    if why:
        section.row(f"{n} x {years}", "not available", "–", "–", "–", "–", "–")
        section.notes.append(f"Not measured: {why}.")
        bench.keep["ui_unavailable"] = why
        return section
    bench.log(f"UI path: {n} symbols x {years} years, {reps} run(s)")
    timeout = max(900.0, 3.0 * n)
    stats = repeat(reps, lambda i: _once(bench, timeout), bench.log)
    floor_bps = bench.keep["floor_bare_sqlite"]["bars_per_second"].median
    ratio = stats["bars_per_second"].median / floor_bps
    section.row(
        f"{n} x {years}", stats["seconds"].fmt(1), f"{stats['runs'].median:.0f}", f"{int(stats['bars'].median):,}",
        stats["bars_per_second"].fmt(0), pct(ratio), stats["startup_seconds"].fmt(1),
    )
    section.notes.append(
        "Where the backfill's wall time goes (medians): launch to the first run created "
        f"{stats['to_first_run_created'].median:.1f} s (the backfill daemon's iteration), to the first run started "
        f"{stats['to_first_run_started'].median:.1f} s (run queue, run worker start-up); first run start to last run end "
        f"{stats['runs_span'].median:.1f} s (the runs' own durations add up to {stats['run_seconds_sum'].median:.1f} s); "
        f"last run end to the backfill marked complete {stats['last_run_end_to_completed'].median:.1f} s (the next daemon iteration)."
    )
    if stats["other_runs"].hi:
        section.notes.append(
            f"Other runs during the backfill (e.g. `symbol_stats` recomputed by its automation condition): "
            f"{stats['other_runs'].median:.0f}; they share the 2 run slots and the cores."
        )
    if stats["failed_runs"].hi:
        section.notes.append(f"Some backfill runs did not succeed (at most {stats['failed_runs'].hi:.0f} per repetition).")
    section.data = {k: v.values for k, v in stats.items()} | {"ratio_to_floor": ratio}
    bench.keep["ui"] = stats
    bench.keep["ui_ratio"] = ratio
    return section
