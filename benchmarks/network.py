"""Scenario 8: throughput at the real API's latency. The sandbox answers every request `latency_ms` late
(150 ms by default, the middle of what Polygon answers in); side by side in one run: the bare loop one
request at a time, the bare loop with N requests in flight (bars only, and with the job's other
requests), `market-pipeline run` with the project's Dagster home and with an empty DAGSTER_HOME, and
the UI-path backfill, each for the same new symbols. CPU time per symbol beside each loop's."""

from __future__ import annotations

import json

from benchmarks.common import clean_env, python_module, register, repeat, run_measured
from benchmarks.context import Bench, pct, rate
from benchmarks.report import Section


def _floor_once(bench: Bench, in_flight: int, job_requests: bool = False) -> dict:
    home = bench.temp_home(f"net-floor-{in_flight}")
    url = bench.warehouse_url(home, "sqlite")
    try:
        register(url, bench.symbols, bench.start)
        symbols_file = home / "symbols.json"
        symbols_file.write_text(json.dumps(bench.symbols))
        argv = python_module(
            "benchmarks.floor", "--base-url", bench.sandbox.url, "--db-url", url, "--symbols-file", str(symbols_file),
            "--start", bench.start.isoformat(), "--mode", "bare", "--in-flight", str(in_flight),
        ) + (["--job-requests"] if job_requests else [])
        measured = run_measured(argv, clean_env()).check()
        out = measured.json()
        out["bars_per_second"] = rate(out["bars"], out["seconds"])
        out["cpu_seconds"] = measured.cpu_seconds
        return out
    finally:
        bench.drop_warehouse(url)
        bench.discard(home)


def _main_once(bench: Bench, empty_dagster_home: bool = False) -> dict:
    home = bench.temp_home("net-main")
    url = bench.warehouse_url(home, "sqlite")
    try:
        register(url, bench.symbols, bench.start)
        out = bench.run_main_job(home, url, empty_dagster_home=empty_dagster_home)
        out["bars_per_second"] = rate(out["bars"], out["seconds"])
        return out
    finally:
        bench.drop_warehouse(url)
        bench.discard(home)


def _ui_once(bench: Bench) -> dict:
    from benchmarks.ui_path import _once

    return _once(bench, timeout=max(900.0, 3.0 * len(bench.symbols)))


UI_LABEL = "UI-path backfill (webserver + daemon)"
MAIN_LABEL = "`market-pipeline run`"
EMPTY_HOME_LABEL = "`market-pipeline run`, DAGSTER_HOME an empty folder"
FLOOR_LABEL = "floor, {in_flight} requests in flight"
SAME_LABEL = "floor, {in_flight} requests in flight, the job's other requests too"
JOB_LABELS = (MAIN_LABEL, EMPTY_HOME_LABEL, UI_LABEL)


def network(bench: Bench) -> Section:
    n, years, reps, latency, in_flight = len(bench.symbols), bench.years, bench.repeats, bench.latency_ms, bench.in_flight
    floor_label, same_label = FLOOR_LABEL.format(in_flight=in_flight), SAME_LABEL.format(in_flight=in_flight)
    section = Section(
        "network" + bench.key_suffix,
        f"8. At the real API's latency ({latency:.0f} ms a request){bench.label}",
        f"{n} new symbols x {years} years from the sandbox slowed to {latency:.0f} ms a request, side by side: the "
        f"bare loop (requests + JSON + parse + bulk upsert, no Dagster) one request at a time and with {in_flight} in "
        "flight; the same loop also sending the job's other requests (the symbols' corporate-action batches and the "
        "pages of the list of tickers holding their reference data); `market-pipeline run` (default settings, "
        "`POLYGON_REQUESTS_PER_MINUTE=0`) with the project's Dagster home and with `DAGSTER_HOME` set to an empty "
        "folder (Dagster's default instance settings); and a backfill of every partition launched through the "
        "webserver's GraphQL as the UI does (scenario 3's stack: webserver + `market-pipeline daemon`), wall time "
        f"from the launch to the backfill marked complete. Ratios are to the bars-only {in_flight}-in-flight floor "
        "(targets: main job 70%, UI-path backfill 50%, at 1,000 x 20) and to the floor sending the same requests "
        "as the job. CPU is the process's own user + system time (with the processes it started and waited "
        "for: the decoding process) per symbol; the UI path's runs are in the daemon's processes (not counted).",
        ["Loop", "Requests", "Bars", "Seconds", "Bars/s", "CPU ms/symbol", f"Ratio to the {in_flight}-in-flight floor",
         "Ratio to the floor with the same requests"],
        align="lrrrrrrr",
    )
    bench.sandbox.set_latency(latency)
    try:
        rows = {}
        for label, fn in (
            ("floor, 1 request at a time", lambda i: _floor_once(bench, 1)),
            (floor_label, lambda i: _floor_once(bench, in_flight)),
            (same_label, lambda i: _floor_once(bench, in_flight, job_requests=True)),
            (MAIN_LABEL, lambda i: _main_once(bench)),
            (EMPTY_HOME_LABEL, lambda i: _main_once(bench, empty_dagster_home=True)),
            (UI_LABEL, lambda i: _ui_once(bench)),
        ):
            if label == UI_LABEL:
                from benchmarks.ui_path import stack_available

                if stack_available():
                    section.notes.append(f"UI-path backfill not measured: {stack_available()}.")
                    continue
            times = min(reps, bench.args.ui_repeats) if label == UI_LABEL else reps  # as scenario 3's repeats
            bench.log(f"network ({label}): {n} symbols x {years} years at {latency:.0f} ms, {times} run(s)")
            rows[label] = repeat(times, fn, bench.log)
    finally:
        bench.sandbox.set_latency(0)
    ceiling = rows[floor_label]["bars_per_second"].median
    same_requests = rows[same_label]["bars_per_second"].median
    for label, stats in rows.items():
        ratio = stats["bars_per_second"].median / ceiling
        like = stats["bars_per_second"].median / same_requests
        requests = f"{int(stats['requests'].median):,}" if "requests" in stats else "–"
        cpu = f"{stats['cpu_seconds'].median / n * 1000:.0f}" if "cpu_seconds" in stats else "–"
        section.row(
            label, requests, f"{int(stats['bars'].median):,}", stats["seconds"].fmt(1), stats["bars_per_second"].fmt(0),
            cpu, pct(ratio), pct(like) if label in JOB_LABELS else "",
        )
        section.data[label] = {k: v.values for k, v in stats.items()} | {"ratio": ratio, "ratio_same_requests": like}
    main = rows[MAIN_LABEL]
    section.notes.append(
        f"`market-pipeline run`'s requests (medians): {main['range_requests'].median:.0f} bars, "
        f"{main['reference_requests'].median:.0f} reference ({main['reference_pages'].median:.0f} of them pages of the "
        f"list of tickers), {main['corporate_action_requests'].median:.0f} corporate actions: "
        f"{main['requests'].median / n:.3f} per new symbol."
    )
    bench.keep["network_main_ratio"] = main["bars_per_second"].median / ceiling
    bench.keep["network_main_same_requests"] = main["bars_per_second"].median / same_requests
    bench.keep["network_empty_home_ratio"] = rows[EMPTY_HOME_LABEL]["bars_per_second"].median / ceiling
    bench.keep["first_run_requests"] = {"symbols": n, "requests": main["requests"].median}
    ui = rows.get(UI_LABEL)
    if ui is not None:
        bench.keep["network_ui_ratio"] = ui["bars_per_second"].median / ceiling
        bench.keep["network_ui_same_requests"] = ui["bars_per_second"].median / same_requests
        bench.keep["network_ui_runs"] = ui["runs"].median
        section.notes.append(
            f"UI-path backfill at {latency:.0f} ms, where its wall time goes (medians): {ui['runs'].median:.0f} run(s); "
            f"launch to the first run created {ui['to_first_run_created'].median:.1f} s, to the first run started "
            f"{ui['to_first_run_started'].median:.1f} s; first run start to last run end {ui['runs_span'].median:.1f} s "
            f"(the runs' own durations add up to {ui['run_seconds_sum'].median:.1f} s); last run end to the backfill "
            f"marked complete {ui['last_run_end_to_completed'].median:.1f} s."
        )
    return section
