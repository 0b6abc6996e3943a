"""Scenario 8: throughput at the real API's latency. The sandbox answers every request `latency_ms` late
(150 ms by default, the middle of what Polygon answers in); side by side in one run: the bare loop one
request at a time, the bare loop with N requests in flight, `market-pipeline run` and the UI-path
backfill, each for the same symbols."""

from __future__ import annotations

import json

from benchmarks.common import clean_env, python_module, register, repeat, run_measured
from benchmarks.context import Bench, pct, rate
from benchmarks.report import Section


def _floor_once(bench: Bench, in_flight: int, with_reference: bool = False) -> dict:
    home = bench.temp_home(f"net-floor-{in_flight}")
    url = bench.warehouse_url(home, "sqlite")
    try:
        register(url, bench.symbols, bench.start)
        symbols_file = home / "symbols.json"
        symbols_file.write_text(json.dumps(bench.symbols))
        argv = python_module(
            "benchmarks.floor", "--base-url", bench.sandbox.url, "--db-url", url, "--symbols-file", str(symbols_file),
            "--start", bench.start.isoformat(), "--mode", "bare", "--in-flight", str(in_flight),
        ) + (["--with-reference"] if with_reference else [])
        out = run_measured(argv, clean_env()).check().json()
        out["bars_per_second"] = rate(out["bars"], out["seconds"])
        return out
    finally:
        bench.drop_warehouse(url)
        bench.discard(home)


def _main_once(bench: Bench) -> dict:
    home = bench.temp_home("net-main")
    url = bench.warehouse_url(home, "sqlite")
    try:
        register(url, bench.symbols, bench.start)
        out = bench.run_main_job(home, url)
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
REF_LABEL = "floor, {in_flight} requests in flight, each symbol's reference lookup too"


def network(bench: Bench) -> Section:
    n, years, reps, latency, in_flight = len(bench.symbols), bench.years, bench.repeats, bench.latency_ms, bench.in_flight
    section = Section(
        "network" + bench.key_suffix,
        f"8. At the real API's latency ({latency:.0f} ms a request){bench.label}",
        f"{n} symbols x {years} years from the sandbox slowed to {latency:.0f} ms a request, side by side: the bare "
        f"loop (requests + JSON + parse + bulk upsert, no Dagster) one request at a time and with {in_flight} in flight, "
        "then `market-pipeline run` (default settings, `POLYGON_REQUESTS_PER_MINUTE=0`) and a backfill of every "
        "partition launched through the webserver's GraphQL as the UI does (scenario 3's stack: webserver + "
        "`market-pipeline daemon`), wall time from the launch to the backfill marked complete. The ratio is to the "
        f"{in_flight}-in-flight floor, the targets of issue 12 (main job 70%, UI-path backfill 50%, at 1,000 x 20). "
        "A new symbol's first run also looks up its reference data (`/v3/reference/tickers/{ticker}`, issue 13): "
        "twice the floor's requests on the same slots, so the last column compares with a bare loop sending "
        "those requests too.",
        ["Loop", "Requests", "Bars", "Seconds", "Bars/s", "Ratio to the in-flight floor", "Ratio to the floor with the same requests"],
        align="lrrrrrr",
    )
    bench.sandbox.set_latency(latency)
    try:
        rows = {}
        for label, fn in (
            ("floor, 1 request at a time", lambda i: _floor_once(bench, 1)),
            (f"floor, {in_flight} requests in flight", lambda i: _floor_once(bench, in_flight)),
            (REF_LABEL.format(in_flight=in_flight), lambda i: _floor_once(bench, in_flight, with_reference=True)),
            (MAIN_LABEL, lambda i: _main_once(bench)),
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
    ceiling = rows[f"floor, {in_flight} requests in flight"]["bars_per_second"].median
    same_requests = rows[REF_LABEL.format(in_flight=in_flight)]["bars_per_second"].median
    for label, stats in rows.items():
        ratio = stats["bars_per_second"].median / ceiling
        like = stats["bars_per_second"].median / same_requests
        requests = f"{int(stats['requests'].median):,}" if "requests" in stats else "–"
        section.row(
            label, requests, f"{int(stats['bars'].median):,}", stats["seconds"].fmt(1), stats["bars_per_second"].fmt(0),
            pct(ratio), pct(like) if label in (MAIN_LABEL, UI_LABEL) else "",
        )
        section.data[label] = {k: v.values for k, v in stats.items()} | {"ratio": ratio, "ratio_same_requests": like}
    bench.keep["network_main_ratio"] = rows[MAIN_LABEL]["bars_per_second"].median / ceiling
    bench.keep["network_main_same_requests"] = rows[MAIN_LABEL]["bars_per_second"].median / same_requests
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
