"""Scenarios 1, 2 and 7: the floor (no Dagster), the main job (`market-pipeline run`) and its peak memory."""

from __future__ import annotations

import json

from benchmarks.common import clean_env, python_module, register, run_measured, repeat, start_date_for, universe
from benchmarks.context import Bench, pct, rate
from benchmarks.report import Section

FLOOR_MODES = {
    "bare": "Floor: requests + JSON + bars.parse_aggregate_results + BarStore.upsert_bars",
    "library": "No-Dagster loop: ingest.refresh_symbol (client, registry status, re-fetch plan, summary)",
}


def _floor_once(bench: Bench, mode: str, engine: str) -> dict:
    home = bench.temp_home(f"floor-{mode}")
    url = bench.warehouse_url(home, engine)
    try:
        register(url, bench.symbols, bench.start)
        symbols_file = home / "symbols.json"
        symbols_file.write_text(json.dumps(bench.symbols))
        argv = python_module(
            "benchmarks.floor", "--base-url", bench.sandbox.url, "--db-url", url,
            "--symbols-file", str(symbols_file), "--start", bench.start.isoformat(), "--mode", mode,
        )
        measured = run_measured(argv, clean_env()).check()
        out = measured.json()
        out["bars_per_second"] = rate(out["bars"], out["seconds"])
        out["rss_mb"] = measured.max_rss_mb
        out["process_seconds"] = measured.seconds
        return out
    finally:
        bench.drop_warehouse(url)
        bench.discard(home)


def floor(bench: Bench) -> Section:
    n, years, reps = len(bench.symbols), bench.years, bench.repeats
    section = Section(
        "floor" + bench.key_suffix,
        f"1. Floor: a bare loop without Dagster{bench.label}",
        f"{n} symbols x {years} years fetched from the sandbox one request per symbol, each parsed and "
        "upserted in its own transaction into a fresh warehouse (`benchmarks/floor.py`). The clock runs "
        "around the loop only (no interpreter start-up): this is the machine's ceiling for our job.",
        ["Loop", "Warehouse", "Bars", "Seconds", "Bars/s", "ms/symbol: HTTP", "JSON", "parse", "upsert"],
        align="llrrrrrrr",
    )
    engines = ["sqlite"] + (["postgresql"] if bench.postgres else [])
    for engine in engines:
        for mode in ("bare", "library"):
            bench.log(f"floor ({mode}, {engine}): {n} symbols x {years} years, {reps} run(s)")
            stats = repeat(reps, lambda i: _floor_once(bench, mode, engine), bench.log)
            bench.keep[f"floor_{mode}_{engine}"] = stats
            per = lambda k: f"{1000 * stats[k].median / n:.1f}" if mode == "bare" else "–"  # noqa: E731
            section.row(
                FLOOR_MODES[mode], engine, f"{int(stats['bars'].median):,}", stats["seconds"].fmt(2),
                stats["bars_per_second"].fmt(0), per("http"), per("json"), per("parse"), per("upsert"),
            )
            section.data[f"{mode}_{engine}"] = {k: v.values for k, v in stats.items()}
    section.notes.append(
        "The `library` row runs our own per-symbol code (`ingest.refresh_symbol`: registry status updates, "
        "re-fetch planning, summary query) without Dagster; the gap between it and the main job is Dagster's."
    )
    return section


MAIN_VARIANTS = {
    # key: (warehouse engine, Dagster storage on PostgreSQL)
    "sqlite": ("sqlite", False),
    "postgresql": ("postgresql", False),
    "postgresql+dagster": ("postgresql", True),
}
MAIN_LABELS = {
    "sqlite": "SQLite warehouse, Dagster on SQLite (default)",
    "postgresql": "PostgreSQL warehouse, Dagster on SQLite",
    "postgresql+dagster": "PostgreSQL warehouse, Dagster on PostgreSQL (dagster.postgres.yaml)",
}


def _main_once(bench: Bench, variant: str, keep_home: bool) -> dict:
    engine, dagster_postgres = MAIN_VARIANTS[variant]
    home = bench.temp_home("main")
    url = bench.warehouse_url(home, engine)
    register(url, bench.symbols, bench.start)
    out = bench.run_main_job(home, url, dagster_postgres=dagster_postgres)
    out["bars_per_second"] = rate(out["bars"], out["seconds"])
    if keep_home and variant == "sqlite":
        previous = bench.keep.pop("main_home", None)
        if previous is not None:
            bench.discard(previous)
        bench.keep["main_home"] = home
    else:
        bench.drop_warehouse(url)
        bench.discard(home)
    return out


def main_job(bench: Bench) -> Section:
    n, years, reps = len(bench.symbols), bench.years, bench.repeats
    section = Section(
        "main_job" + bench.key_suffix,
        f"2. Main job: `market-pipeline run`{bench.label}",
        f"The same {n} symbols x {years} years, registered with a start date {years} years back in a fresh "
        "warehouse and a fresh Dagster home; then `market-pipeline run` as a child process (reconcile the "
        "partitions, `ohlcv_daily` with both checks in one in-process run, then "
        "`symbol_stats`). Wall time of the whole command, start-up included.",
        ["Storage", "Bars", "Wall seconds", "Bars/s", "Ratio to floor", "Dagster runs", "Requests", "Peak RSS (MB)"],
    )
    variants = ["sqlite"] + (["postgresql", "postgresql+dagster"] if bench.postgres else [])
    for variant in variants:
        engine = MAIN_VARIANTS[variant][0]
        bench.log(f"main job ({variant}): {n} symbols x {years} years, {reps} run(s)")
        stats = repeat(reps, lambda i: _main_once(bench, variant, keep_home=True), bench.log)
        bench.keep[f"main_{variant}"] = stats
        floor_bps = bench.keep[f"floor_bare_{engine}"]["bars_per_second"].median
        ratio = stats["bars_per_second"].median / floor_bps
        ratios = [b / floor_bps for b in stats["bars_per_second"].values]
        section.row(
            MAIN_LABELS[variant], f"{int(stats['bars'].median):,}", stats["seconds"].fmt(1), stats["bars_per_second"].fmt(0),
            f"{pct(ratio)} ({pct(min(ratios))}–{pct(max(ratios))})" if len(ratios) > 1 else pct(ratio),
            f"{stats['runs'].median:,.0f}", f"{stats['requests'].median:,.0f}", stats["rss_mb"].fmt(0),
        )
        section.data[variant] = {k: v.values for k, v in stats.items()} | {"ratio_to_floor": ratio}
    return section


def memory(bench: Bench) -> Section:
    n, years = len(bench.symbols), bench.years
    small_n = max(1, n // 5)
    section = Section(
        "memory" + bench.key_suffix,
        f"7. Memory: peak RSS of the main job's process{bench.label}",
        "The peak resident set of the `market-pipeline run` process itself (`wait4` rusage), for the main-job "
        f"runs of scenario 2 ({n} symbols) and for one run with {small_n} symbols: the difference shows how "
        "memory grows with the number of symbols.",
        ["Symbols x years", "Runs", "Peak RSS (MB)"],
    )
    main_stats = bench.keep.get("main_sqlite")
    home = bench.temp_home("mem")
    try:
        symbols = universe(small_n)
        bench.sandbox.add(symbols)
        bench.sandbox.warm(symbols)
        register(bench.warehouse_url(home), symbols, start_date_for(years))
        bench.log(f"memory: main job with {small_n} symbols")
        small = bench.run_main_job(home)
    finally:
        bench.discard(home)
    section.row(f"{small_n} x {years}", 1, f"{small['rss_mb']:.0f}")
    peak = small["rss_mb"]
    if main_stats:
        section.row(f"{n} x {years}", len(main_stats["rss_mb"].values), main_stats["rss_mb"].fmt(0))
        peak = max(main_stats["rss_mb"].values)
        slope = (main_stats["rss_mb"].median - small["rss_mb"]) / max(n - small_n, 1)
        section.notes.append(
            f"Between {small_n} and {n} symbols the peak moves by {main_stats['rss_mb'].median - small['rss_mb']:+.0f} MB "
            f"({1000 * slope:+.0f} MB per 1,000 symbols; a straight line through both points reaches about "
            f"{main_stats['rss_mb'].median + slope * (10_000 - n):,.0f} MB at 10,000 symbols)."
        )
        section.data = {"small": small, "n": n, "small_n": small_n, "rss_mb": main_stats["rss_mb"].values, "slope_mb_per_symbol": slope}
        bench.keep["memory"] = {"peak_mb": peak, "small_mb": small["rss_mb"], "slope_mb_per_symbol": slope, "n": n, "small_n": small_n}
    return section
