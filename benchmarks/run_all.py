"""The benchmark suite: how close the pipeline runs to the machine's floor, at market scale.

`make bench` runs this with its defaults (a few minutes on two cores) and writes BENCHMARKS.md:

    1 floor       a bare loop without Dagster: requests + JSON + parse + the warehouse's bulk upsert
    2 main_job    `market-pipeline run` for the same symbols into a fresh warehouse
    3 ui_path     webserver + daemon, a partition backfill of every symbol launched through GraphQL
    4 requests    API requests per symbol (full history) and per daily refresh missing 1 and 3 sessions
    5 scale       10,000 tracked symbols: add, sensor tick, schedule tick, `symbols list`
    6 quality     both checks and symbol_stats over the main job's warehouse
    7 memory      peak RSS of the main job's process
    8 network     at the real API's latency (--latency-ms, 150): the bare loop one request at a time and
                  with --in-flight (8) requests at once, beside `market-pipeline run` and the UI-path backfill
    9 corporate_actions  read_bars adjusted vs unadjusted (one symbol, the N-symbol total-return panel)
                  and the requests of the daily corporate-actions read at --scale-symbols tracked
   10 rate_budget 3 concurrent `market-pipeline run`s against a sandbox limited to --rate-limit a
                  minute (30): 429s answered and the most requests in any 60 s
   11 daily_refresh  the `stocks_daily_refresh` run for --scale-symbols (10,000) stocks, checks on
   12 cli_start   `market-pipeline --help` and the read-only commands, as child processes, start-up included
   13 reference_refresh  the weekly `symbol_reference` refresh of --scale-symbols (10,000) tracked stocks at
                  --latency-ms: pages of the list of tickers, with list dates known and unknown
   14 reads       read_bars of the N x Y panel through the column blocks, each adjustment, beside the
                  pyarrow-from-Parquet floor and the row path; one symbol; peak memory (PostgreSQL too
                  with --postgres)
   15 point_in_time  read_bars(..., as_of=...) of the N x Y panel after a year of simulated daily revisions,
                  beside the current read on the same warehouse; the revisions' storage (300 stocks,
                  projected to 10,000)

    .venv/bin/python -m benchmarks.run_all                           # defaults
    .venv/bin/python -m benchmarks.run_all --full-size               # + floor/main job/UI path at 1,000 x 20
    .venv/bin/python -m benchmarks.run_all --symbols 1000 --years 20 --repeats 1 --only floor,main_job,memory
    .venv/bin/python -m benchmarks.run_all --postgres                # floor and main job on PostgreSQL too
    .venv/bin/python -m benchmarks.run_all --symbols 10 --years 2 --repeats 1 --ui-repeats 1 --only network
    .venv/bin/python -m benchmarks.run_all --symbols 1000 --repeats 1 --ui-repeats 1 --only network   # the 150 ms target
    .venv/bin/python -m benchmarks.run_all --only reference_refresh,daily_refresh                    # at 10,000 symbols

Never part of `make test`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
import warnings
from pathlib import Path

from benchmarks.common import REPO, SandboxProcess, machine_info, start_date_for, universe
from benchmarks.context import Bench, pct
from benchmarks.report import MET, MISSED, NOT_MEASURED, Results, Section

SCENARIOS = (
    "floor", "main_job", "ui_path", "requests", "scale", "quality", "memory", "network", "corporate_actions", "rate_budget",
    "daily_refresh", "cli_start", "reference_refresh", "reads", "point_in_time",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--symbols", type=int, default=100, help="N: symbols of the floor, main job, UI path, requests, quality (default 100)")
    parser.add_argument("--years", type=int, default=20, help="Y: years of history per symbol (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each timed scenario (default 3; the UI path and scale have their own)")
    parser.add_argument("--scale-symbols", type=int, default=10_000, help="tracked symbols of the scale scenario (default 10,000)")
    parser.add_argument("--scale-repeats", type=int, default=2, help="repetitions of the scale scenario (default 2)")
    parser.add_argument("--daemon-tick", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the sensor's first tick in a running daemon (scale scenario; about 30 s at "
                             "10,000 symbols; default on)")
    parser.add_argument("--ui-repeats", type=int, default=2, help="repetitions of the UI-path backfill (default 2)")
    parser.add_argument("--requests-symbols", type=int, default=250,
                        help="symbols of the daily-refresh case (default 250)")
    parser.add_argument("--requests-crypto-share", type=float, default=0.1, help="share of crypto pairs in the requests scenario (default 0.1)")
    parser.add_argument("--full-size", action="store_true", help="also run floor, main job, memory and UI path at --full-symbols x --full-years")
    parser.add_argument("--full-symbols", type=int, default=1000)
    parser.add_argument("--full-years", type=int, default=20)
    parser.add_argument("--full-repeats", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=150.0, help="the network scenario's latency per request (default 150)")
    parser.add_argument("--in-flight", type=int, default=8, help="requests in flight of the network scenario's second floor (default 8)")
    parser.add_argument("--rate-limit", type=int, default=30, help="R of the rate-budget scenario: the sandbox's 429 limit and the plan rate (default 30)")
    parser.add_argument("--postgres", action="store_true", help="also run the floor and the main job on a throwaway PostgreSQL warehouse")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers as JSON here")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    if "main_job" in args.only and "floor" not in args.only:
        args.only.insert(0, "floor")  # the main job's ratio needs the floor
    if "ui_path" in args.only and "floor" not in args.only:
        args.only.insert(0, "floor")
    return args


def _scenario_functions():
    from benchmarks.api_requests import requests_scenario
    from benchmarks.cli_start import cli_start
    from benchmarks.bench_point_in_time import scenario as point_in_time
    from benchmarks.bench_reads import scenario as reads
    from benchmarks.bench_corporate_actions import scenario as corporate_actions
    from benchmarks.daily_refresh import daily_refresh
    from benchmarks.network import network
    from benchmarks.quality import quality
    from benchmarks.rate_budget import rate_budget
    from benchmarks.reference_refresh import reference_refresh
    from benchmarks.scale import scale
    from benchmarks.throughput import floor, main_job, memory
    from benchmarks.ui_path import ui_path

    return {
        "floor": floor, "main_job": main_job, "ui_path": ui_path, "requests": requests_scenario,
        "scale": scale, "quality": quality, "memory": memory, "network": network,
        "corporate_actions": corporate_actions, "rate_budget": rate_budget, "daily_refresh": daily_refresh,
        "cli_start": cli_start,
        "reference_refresh": reference_refresh,
        "reads": reads,
        "point_in_time": point_in_time,
    }


def _run(bench: Bench, name: str, fn) -> None:
    started = time.perf_counter()
    try:
        section = fn(bench)
    except Exception as exc:
        bench.log(f"{name} FAILED: {exc}")
        traceback.print_exc()
        section = Section(name + bench.key_suffix, f"{name}{bench.label}: failed")
        lines = [line for line in str(exc).splitlines() if line.strip()]
        detail = lines[0] + (f" … {lines[-1].strip()}" if len(lines) > 1 else "") if lines else ""
        section.notes.append(f"The scenario failed: `{type(exc).__name__}: {detail}`")
    bench.log(f"{name}{bench.label} done in {time.perf_counter() - started:.0f} s")
    bench.results.sections.append(section)


def _ratio(bench: Bench | None, key: str) -> float | None:
    if bench is None or key not in bench.keep or "floor_bare_sqlite" not in bench.keep:
        return None
    return bench.keep[key]["bars_per_second"].median / bench.keep["floor_bare_sqlite"]["bars_per_second"].median


def evaluate_targets(results: Results, default: Bench, full: Bench | None) -> None:
    """One row per target of issue 6, from the largest size measured."""
    def size(b: Bench) -> str:
        return f"{len(b.symbols):,} x {b.years}"

    def at_full(b: Bench) -> bool:
        return len(b.symbols) >= 1000 and b.years >= 20

    def ratio_target(name: str, goal: str, ratio_of, minimum: float, note=lambda b: "") -> None:
        """A share-of-a-floor target: each size measured, the status from the full size (else the first)."""
        t = results.target(name, goal)
        parts, status = [], NOT_MEASURED
        for b in (default, full):
            r = ratio_of(b) if b is not None else None
            if r is None:
                continue
            parts.append(f"{pct(r)} at {size(b)}{note(b)}")
            if at_full(b) or status == NOT_MEASURED:
                status = (MET if r >= minimum else MISSED) + ("" if at_full(b) else f" (at {size(b)})")
        t.measured, t.status = "; ".join(parts) or "n/a", status

    # main job vs floor
    ratio_target("Main job vs floor", ">= 70% of the floor's bars/s at 1,000 symbols x 20 years",
                 lambda b: _ratio(b, "main_sqlite"), 0.7)

    # UI path
    t = results.target("UI-path backfill", "1,000 symbols in <= 10 runs, >= 50% of the floor")
    parts, status = [], NOT_MEASURED
    for b in (default, full):
        if b is None:
            continue
        if "ui" in b.keep:
            r, runs = _ratio(b, "ui"), b.keep["ui"]["runs"].median
            parts.append(f"{runs:.0f} run{'s' if runs != 1 else ''}, {pct(r)} at {size(b)}")
            ok = r >= 0.5 and runs <= max(10, len(b.symbols) / 100)
            if at_full(b) or status == NOT_MEASURED:
                status = (MET if ok else MISSED) + ("" if at_full(b) else f" (at {size(b)})")
        elif "ui_unavailable" in b.keep:
            parts.append("not available: " + b.keep["ui_unavailable"])
    t.measured, t.status = "; ".join(parts) or "n/a", status

    # requests
    t = results.target("Requests, full history", "1 request per symbol")
    per = default.keep.get("full_history_per_symbol")
    if per is not None:
        t.measured, t.status = f"{per:.2f} per symbol", MET if per <= 1.0 else MISSED
    t = results.target("Requests, daily refresh", "<= missed sessions + re-fetch window per asset class, any N")
    refresh = default.keep.get("refresh")
    if refresh:
        parts, met_by = [], {}
        for (label, missing), r in refresh.items():
            parts.append(f"{label.split(' (')[0]}, {missing} missed: {r['stock']} stock + {r['crypto']} crypto (limit {r['limit']} each)")
            met_by[label] = met_by.get(label, True) and max(r["stock"], r["crypto"]) <= r["limit"]
        t.measured = f"N={default.args.requests_symbols}: " + "; ".join(parts)
        if all(met_by.values()):
            t.status = MET
        elif any(met_by.values()):
            t.status = "met by " + ", ".join(k.split(" (")[0] for k, v in met_by.items() if v) + "; " + MISSED + " by the others"
        else:
            t.status = MISSED

    # scale: sensor
    t = results.target(f"Sensor tick, {default.args.scale_symbols:,} symbols", "< 10 s")
    scale, daemon = default.keep.get("scale"), default.keep.get("scale_daemon")
    if scale:
        first, steady = scale["first_eval"].median, scale["steady"].median
        if daemon:
            first = daemon["first_seconds"]
            t.measured = (f"daemon: first tick {first:.1f} s ({daemon['first_runs']} runs submitted), next tick "
                          f"{daemon.get('next_seconds', float('nan')):.2f} s; in-process: first tick {scale['first_eval'].median:.1f} s, "
                          f"following ticks {steady:.2f} s")
        else:
            t.measured = f"in-process: first tick {first:.1f} s (adds {default.args.scale_symbols:,} partitions); following ticks {steady:.2f} s"
        t.status = MET if first < 10 and steady < 10 else (MISSED + " (first tick)" if steady < 10 else MISSED)

    # memory
    t = results.target("Peak memory", "< 1 GB whatever the number of symbols")
    parts, status = [], NOT_MEASURED
    for b in (default, full):
        if b is not None and "memory" in b.keep:
            m = b.keep["memory"]
            parts.append(f"{m['peak_mb']:,.0f} MB at {size(b)} ({m['small_mb']:,.0f} MB at {m['small_n']:,} symbols)")
            # a growth rate is only worth extrapolating over a wide enough span of symbols
            projected = m["peak_mb"] + m["slope_mb_per_symbol"] * max(0, 10_000 - m["n"]) if m["n"] - m["small_n"] >= 200 else m["peak_mb"]
            status = MET if m["peak_mb"] < 1024 and projected < 1024 else MISSED
    t.measured, t.status = "; ".join(parts) or "n/a", status

    # at the real API's latency (issue 12)
    ratio_target("Main job at 150 ms latency", ">= 70% of the bare loop with 8 requests in flight, at 1,000 x 20",
                 lambda b: b.keep.get("network_main_ratio"), 0.7,
                 note=lambda b: f" ({pct(b.keep['network_main_same_requests'])} of a floor sending the job's other requests "
                 f"too; {pct(b.keep['network_empty_home_ratio'])} with an empty DAGSTER_HOME)")
    ratio_target(
        "UI-path backfill at 150 ms latency",
        ">= 50% of the bare loop with 8 requests in flight, launch to completion, at 1,000 x 20",
        lambda b: b.keep.get("network_ui_ratio"), 0.5,
        note=lambda b: f" ({b.keep['network_ui_runs']:.0f} run{'s' if b.keep['network_ui_runs'] != 1 else ''}; "
        f"{pct(b.keep['network_ui_same_requests'])} of a floor sending the job's other requests too)",
    )

    # the requests of a first run (bars, reference data in bulk, corporate actions)
    t = results.target("Requests of a first run", "<= 1,050 for 1,000 new stocks (1.05 per symbol)")
    parts, status = [], NOT_MEASURED
    for b in (default, full):
        first = b.keep.get("first_run_requests") if b is not None else None
        if first:
            parts.append(f"{first['requests']:,.0f} for {first['symbols']:,} new stocks")
            if first["symbols"] >= 1000 or status == NOT_MEASURED:
                status = (MET if first["requests"] <= 1.05 * first["symbols"] else MISSED) + (
                    "" if first["symbols"] >= 1000 else f" (at {first['symbols']:,})")
    t.measured, t.status = "; ".join(parts) or "n/a", status

    # the weekly reference refresh
    ref = default.keep.get("reference_refresh") if default is not None else None
    if ref:
        t = results.target(f"Weekly reference refresh, {ref['symbols']:,} symbols", "pages of the list, not a request per symbol")
        t.measured = "; ".join(f"{case}: {r['requests']:,} requests in {r['seconds']:.1f} s" for case, r in ref["cases"].items())
        steady = ref["cases"].get("list dates known")
        t.status = MET if steady and steady["requests"] <= ref["symbols"] / 100 else MISSED

    # the daily refresh at scale (issue 12)
    t = results.target("Daily refresh at scale", "< 120 s for 10,000 stocks (1 missed session, window 3, checks on), 4 bar requests")
    dr = default.keep.get("daily_refresh") if default is not None else None
    if dr:
        t.measured = f"{dr['seconds']:.0f} s for {dr['symbols']:,} stocks, {dr['requests']} bar requests"
        t.status = MET if dr["success"] and dr["seconds"] < 120 and dr["requests"] == 4 and dr["symbols"] >= 10_000 else MISSED
    else:
        t.measured, t.status = "n/a", NOT_MEASURED

    # the plan's rate across concurrent runs (issue 12)
    t = results.target("Plan rate across 3 concurrent runs", "zero 429s and at most R requests in any 60 s, counted by the sandbox")
    rb = default.keep.get("rate_budget") if default is not None else None
    if rb:
        t.measured = f"R = {rb['limit']}: {rb['status_429']} 429s, at most {rb['max_in_60s']} in 60 s ({rb['requests']} requests)"
        t.status = MET if rb["met"] else MISSED
    else:
        t.measured, t.status = "n/a", NOT_MEASURED

    # the command line's start-up
    started = default.keep.get("cli_start") if default is not None else None
    if started:
        t = results.target("CLI start-up", "`--help` < 0.5 s, read-only commands < 1 s, none loading Dagster (quiet machine)")
        t.measured = "; ".join(f"{label.replace('market-pipeline ', '')} {median:.2f} s" for label, (median, _, _) in started.items())
        t.status = MET if all(m < target and not dagster for m, target, dagster in started.values()) else MISSED
    # reads through the column blocks
    for b in (full, default):
        rd = b.keep.get("reads") if b is not None else None
        if not rd:
            continue
        r = rd["sqlite"]
        worst = max(r[f"blocks {a}"]["median"] / r[f"floor {a}"]["median"] for a in ("none", "splits", "total_return"))
        t = results.target("Whole-panel read", "<= 2x the pyarrow-from-Parquet floor, each adjustment, 1,000 x 20")
        t.measured = f"at most {worst:.2f}x at {size(b)}"
        t.status = (MET if worst <= 2 else MISSED) + ("" if at_full(b) else f" (at {size(b)})")
        t = results.target("One symbol, split-adjusted", "<= 10 ms median for 20 years")
        t.measured = f"{r['one symbol splits']['median_ms']:.1f} ms at {b.years} years"
        t.status = MET if r["one symbol splits"]["median_ms"] <= 10 else MISSED
        t = results.target("Peak memory of the whole-panel read", "no more than the row path's")
        t.measured = f"{r['peak rss blocks']['peak_mb']} MB against {r['peak rss rows']['peak_mb']} MB at {size(b)}"
        t.status = MET if r["peak rss blocks"]["peak_mb"] <= r["peak rss rows"]["peak_mb"] else MISSED
        break

    # point-in-time reads
    for b in (full, default):
        pit = b.keep.get("point_in_time") if b is not None else None
        if not pit:
            continue
        times = pit["sqlite"]["reads"]["times"]
        worst = max(v["median"] / times[f"now {k.rsplit(' ', 1)[1]}"]["median"] for k, v in times.items() if not k.startswith("now "))
        t = results.target("Point-in-time read of the whole panel", "<= 1.5x the current read after a year of daily revisions, 1,000 x 20")
        t.measured = f"at most {worst:.2f}x at {size(b)} (equal to the reads made then: {all(pit['sqlite']['reads']['equal'].values())})"
        t.status = (MET if worst <= 1.5 else MISSED) + ("" if at_full(b) else f" (at {size(b)})")
        break

    # corporate actions (issue 11)
    for b in (full, default):
        ca = b.keep.get("corporate_actions") if b is not None else None
        if not ca:
            continue
        t = results.target("Split-adjusted read of one symbol", "< 20 ms for 20 years")
        t.measured = f"{ca['one_symbol_splits_ms_median']:.1f} ms at {b.years} years"
        t.status = MET if ca["one_symbol_splits_ms_median"] < 20 else MISSED
        t = results.target("Total-return panel", "<= 1.5x the unadjusted read, 1,000 x 20")
        t.measured = f"{ca['panel_ratio']:.2f}x at {size(b)}"
        t.status = (MET if ca["panel_ratio"] <= 1.5 else MISSED) + ("" if at_full(b) else f" (at {size(b)})")
        t = results.target("Corporate-actions requests a day", f"<= 3 at {ca['tracked']:,} tracked")
        t.measured, t.status = f"{ca['daily_requests']} requests", MET if ca["daily_requests"] <= 3 else MISSED
        break


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    os.chdir(REPO)
    command = "python -m benchmarks.run_all" + (" " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else "")
    parameters = {
        "N (symbols)": args.symbols, "Y (years)": args.years, "repeats": args.repeats,
        "UI-path repeats": args.ui_repeats, "scale symbols": args.scale_symbols, "scale repeats": args.scale_repeats, "requests symbols": args.requests_symbols,
        "requests crypto share": args.requests_crypto_share, "daemon tick": args.daemon_tick,
        "latency (network scenario)": f"{args.latency_ms:.0f} ms", "in flight (network floor)": args.in_flight,
    }
    if args.full_size:
        parameters["full size"] = f"{args.full_symbols} x {args.full_years}, {args.full_repeats} repeat(s)"
    results = Results(machine=machine_info(), parameters=parameters, command=command)
    started = time.perf_counter()
    functions = _scenario_functions()
    postgres = None
    benches: list[Bench] = []
    with SandboxProcess() as sandbox:
        try:
            if args.postgres:
                from market_pipeline_tests.postgres_cluster import PostgresCluster

                postgres = PostgresCluster().start()
            symbols = universe(args.symbols)
            default = Bench(args, results, sandbox, symbols, start_date_for(args.years), args.years, args.repeats, postgres=postgres)
            benches.append(default)
            sandbox.add(symbols)
            default.log(f"sandbox at {sandbox.url}; rendering {len(symbols)} series took {sandbox.warm(symbols):.1f} s")
            for name in SCENARIOS:
                if name in args.only:
                    _run(default, name, functions[name])
            full = None
            if args.full_size:
                fsymbols = universe(args.full_symbols)
                full = Bench(
                    args, results, sandbox, fsymbols, start_date_for(args.full_years), args.full_years,
                    args.full_repeats, postgres=None, label=f" — full size ({args.full_symbols:,} x {args.full_years})",
                    key_suffix="_full",
                )
                benches.append(full)
                sandbox.add(fsymbols)
                full.log(f"full size: rendering {len(fsymbols)} series took {sandbox.warm(fsymbols):.1f} s")
                for name in ("floor", "main_job", "memory", "ui_path", "network", "corporate_actions", "reads", "point_in_time"):
                    _run(full, name, functions[name])
            evaluate_targets(results, default, full)
        finally:
            for b in benches:
                b.cleanup()
            if postgres is not None:
                postgres.stop()
    results.elapsed_seconds = time.perf_counter() - started
    results.write(args.output, args.json)
    print(f"wrote {args.output} in {results.elapsed_seconds / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
