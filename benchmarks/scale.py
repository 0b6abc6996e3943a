"""Scenario 5: 10,000 tracked symbols: adding them, the sensor's tick, a schedule tick, `symbols list`."""

from __future__ import annotations

import time

from benchmarks.common import CLI, Stat, clean_env, pipeline_env, python_module, run_measured, start_date_for, stock_tickers
from benchmarks.context import Bench
from benchmarks.report import Section


SENSOR_TICKS_QUERY = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 10) { id status timestamp endTimestamp runIds skipReason error { message } } } }
    ... on PythonError { message }
  }
}
"""


def _daemon_ticks(bench: Bench, tickers: list[str], years: int, timeout: float) -> dict:
    """The sensor daemon's own record of tracked_symbols_sensor's first tick after `tickers` were
    added (and of the tick after it), with the webserver and daemon running on the project's config."""
    from market_pipeline.devtools.stack import DagsterStack

    home = bench.temp_home("scale-daemon")
    try:
        env = clean_env(MARKET_PIPELINE_HOME=str(home))
        run_measured([CLI, "symbols", "add", *tickers, "--asset-class", "stock", "--start-date",
                      start_date_for(years).isoformat()], env).check()
        stack = DagsterStack(home, pipeline_env(home, bench.sandbox.url), log_path=home / "dagster-dev.log")
        stack.start(timeout=300)
        try:
            selector = {"repositoryLocationName": stack.location_name, "repositoryName": stack.repository_name,
                        "sensorName": "tracked_symbols_sensor"}
            deadline = time.monotonic() + timeout
            done: list[dict] = []
            while time.monotonic() < deadline:
                state = stack.graphql(SENSOR_TICKS_QUERY, {"selector": selector})["sensorOrError"]
                ticks = sorted(state["sensorState"]["ticks"], key=lambda t: t["timestamp"])
                done = [t for t in ticks if t["status"] != "STARTED" and t["endTimestamp"]]
                if len(done) >= 2:
                    break
                time.sleep(1.0)
        finally:
            stack.stop()
        if not done:
            raise RuntimeError(f"no completed tick of tracked_symbols_sensor within {timeout:.0f} s")
        first = done[0]
        out = {"first_seconds": first["endTimestamp"] - first["timestamp"], "first_runs": len(first["runIds"]),
               "first_status": first["status"], "first_error": (first["error"] or {}).get("message")}
        if len(done) > 1:
            out.update(next_seconds=done[1]["endTimestamp"] - done[1]["timestamp"], next_status=done[1]["status"],
                       next_skip=done[1]["skipReason"])
        return out
    finally:
        bench.discard(home)


def scale(bench: Bench) -> Section:
    count, reps, years = bench.args.scale_symbols, bench.args.scale_repeats, bench.years
    section = Section(
        "scale",
        f"5. Scale: {count:,} tracked symbols",
        f"A fresh home per repetition. `market-pipeline symbols add` with {count:,} stock symbols in one "
        "command; `tracked_symbols_sensor` ticked in a child process (`benchmarks/dagster_worker.py`): the first "
        f"tick finds {count:,} new symbols, adds their partitions (one call) and requests the first backfill runs; "
        "then the following ticks with its cursor; every schedule of the code location "
        "evaluated once per repetition; `market-pipeline symbols list` printing all of them. Wall times of "
        "the CLI commands include interpreter start-up. Then, once, the whole stack (`DagsterStack`: webserver and "
        "daemon on the project's dagster.yaml) started over a fresh home with the same symbols added, and the sensor "
        "daemon's own record of its first tick (which also submits the backfill runs) and of the tick after it.",
        ["Step", "Seconds", "Detail"],
        align="lrl",
    )
    stats: dict[str, Stat] = {}
    detail: dict[str, str] = {}

    def add(name: str, value: float) -> None:
        stats.setdefault(name, Stat()).values.append(value)

    tickers = stock_tickers(count, seed=11)
    for i in range(reps):
        home = bench.temp_home("scale")
        env = clean_env(MARKET_PIPELINE_HOME=str(home))
        try:
            bench.log(f"scale {i + 1}/{reps}: add {count:,} symbols")
            argv = [CLI, "symbols", "add", *tickers, "--asset-class", "stock", "--start-date", start_date_for(years).isoformat()]
            add("add", run_measured(argv, env).check().seconds)
            bench.log(f"scale {i + 1}/{reps}: sensor ticks")
            sensor = run_measured(python_module("benchmarks.dagster_worker", "sensor", "--ticks", "3"), env).check().json()
            add("first_eval", sensor["first_eval_seconds"])
            for s in sensor["steady_seconds"]:
                add("steady", s)
            detail["first"] = (
                f"{sensor['partitions']:,} partitions added in the tick, {sensor['first_run_requests']} run requests, "
                f"{sensor['waiting_after_first']:,} symbols left waiting in the cursor"
            )
            detail["steady"] = f"{', '.join(map(str, sensor['steady_run_requests']))} run requests"
            bench.log(f"scale {i + 1}/{reps}: schedules")
            schedules = run_measured(python_module("benchmarks.dagster_worker", "schedules", "--ticks", "1"), env).check().json()
            for name, result in schedules["schedules"].items():
                for s in result["seconds"]:
                    add(f"schedule:{name}", s)
                detail[f"schedule:{name}"] = (
                    f"{result['run_requests']} run request(s)" + (f"; skip: {result['skip_message']}" if result["skip_message"] else "")
                )
            bench.log(f"scale {i + 1}/{reps}: symbols list")
            listed = run_measured([CLI, "symbols", "list"], env).check()
            add("list", listed.seconds)
            detail["list"] = f"{len(listed.stdout.splitlines()) - 1:,} rows printed"
        finally:
            bench.discard(home)

    daemon = None
    if bench.args.daemon_tick:
        from benchmarks.ui_path import stack_available

        why = stack_available()
        if why:
            detail["daemon"] = why
        else:
            bench.log(f"scale: the sensor daemon's first tick over {count:,} new symbols (webserver + daemon)")
            daemon = _daemon_ticks(bench, tickers, years, timeout=max(600.0, count * 0.1))
            section.data["daemon"] = daemon
            bench.keep["scale_daemon"] = daemon

    section.row(f"`symbols add` {count:,} symbols (one command)", stats["add"].fmt(2), "")
    if daemon:
        section.row(
            f"**Sensor, first tick in the daemon** ({count:,} new symbols; 1 measurement)", f"{daemon['first_seconds']:.1f}",
            f"{daemon['first_status']}, {daemon['first_runs']} runs submitted; as the daemon records it (tick start to end)",
        )
        if "next_seconds" in daemon:
            section.row("Sensor, the next tick in the daemon", f"{daemon['next_seconds']:.2f}",
                        f"{daemon['next_status']}" + (f": “{daemon['next_skip']}”" if daemon.get("next_skip") else ""))
    elif "daemon" in detail:
        section.row("Sensor, first tick in the daemon", "not available", detail["daemon"])
    section.row("Sensor, first tick in-process (evaluation, partitions included)", stats["first_eval"].fmt(2), detail.get("first", ""))
    section.row("Sensor, the following ticks in-process (cursor kept, no run submitted)", stats["steady"].fmt(2), detail.get("steady", ""))
    schedule_keys = [k for k in stats if k.startswith("schedule:")]
    for key in schedule_keys:
        section.row(f"Schedule `{key.split(':', 1)[1]}`: one tick (evaluation)", stats[key].fmt(2), detail.get(key, ""))
    if not schedule_keys:
        section.row("Schedule tick", "not available", "the code location defines no schedule yet (issue 4)")
    section.row(f"`symbols list` ({count:,} rows)", stats["list"].fmt(2), detail.get("list", ""))
    section.data = {k: v.values for k, v in stats.items()} | {"detail": detail}
    bench.keep["scale"] = stats
    return section
