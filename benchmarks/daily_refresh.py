"""Scenario 11: the scheduled daily refresh at scale. `python -m benchmarks.bench_refresh` in a child
process for --scale-symbols tracked stocks (1 missed session, re-fetch window 3, checks on, 250 stored
sessions each): the `stocks_daily_refresh` schedule's run executed as the daemon launches it, timed
from the run's start to its end; the sandbox counts the bar requests."""

from __future__ import annotations

import json

from benchmarks.common import clean_env, python_module, run_measured
from benchmarks.context import Bench
from benchmarks.report import Section

TARGET_SECONDS = 120.0


def daily_refresh(bench: Bench) -> Section:
    n = bench.args.scale_symbols
    section = Section(
        "daily_refresh",
        f"11. The daily refresh of {n:,} tracked stocks (schedule run, checks on)",
        f"`python -m benchmarks.bench_refresh --symbols {n} --windows 3 --missed 1 --history-sessions 250 --checks "
        "--no-range`: a warehouse of N stocks holding 250 sessions each and missing the last one, the "
        "`stocks_daily_refresh` schedule evaluated at a fixed tick and its run executed in-process as the "
        "daemon would launch it (materialization and four check evaluations per symbol, in the project's "
        f"Dagster event log). Targets: under {TARGET_SECONDS:.0f} s, and bar requests = missed + window (4).",
        ["Symbols", "Bar requests", "Other requests", "Run (s)", "Per symbol (ms)", "Peak RSS (MB)"],
        align="rrrrrr",
    )
    home = bench.temp_home("daily-refresh")
    out = home / "refresh.json"
    try:
        measured = run_measured(
            python_module("benchmarks.bench_refresh", "--symbols", str(n), "--windows", "3", "--missed", "1",
                          "--history-sessions", "250", "--checks", "--no-range", "--json", str(out)),
            clean_env(),
        )
        (row,) = json.loads(out.read_text())
    finally:
        bench.discard(home)
    grouped = row["grouped"]
    seconds = grouped["seconds"]
    section.row(f"{n:,}", grouped["requests"], grouped.get("other_requests", 0), f"{seconds:.1f}",
                f"{seconds / n * 1000:.1f}", f"{measured.max_rss_mb:.0f}")
    section.notes.append(
        "Peak RSS is the benchmark's process: the pipeline's run and the in-process sandbox, whose rendered "
        "series cache alone holds up to about 1 GB."
    )
    section.data = {"symbols": n, "seconds": seconds, "requests": grouped["requests"], "success": grouped["success"]}
    bench.keep["daily_refresh"] = section.data
    return section
