"""Scenario 6: both checks and symbol_stats over the N x Y warehouse the main job filled."""

from __future__ import annotations

from benchmarks.common import Stat, clean_env, python_module, run_measured
from benchmarks.context import Bench, rate
from benchmarks.report import Section


def quality(bench: Bench) -> Section:
    n, years, reps = len(bench.symbols), bench.years, bench.repeats
    section = Section(
        "quality",
        "6. Quality: both checks and `symbol_stats`",
        f"Over the warehouse of the last main-job run ({n} symbols x {years} years), in one process "
        "(`benchmarks/quality_worker.py`): the two checks as the asset computes them per symbol (read the "
        "stored bars, validation rate and date gaps, both evaluations), the `symbol_stats` table rebuilt by "
        "its plain code, and `symbol_stats_job` run through Dagster.",
        ["Work", "Symbols", "Bars", "Seconds", "Bars/s", "ms/symbol"],
    )
    home = bench.keep.get("main_home")
    if home is None:
        section.notes.append("Not measured: the main-job scenario did not leave a warehouse.")
        return section
    bench.log(f"quality: {n} symbols x {years} years, {reps} repetition(s)")
    measured = run_measured(
        python_module("benchmarks.quality_worker", "--repeats", str(reps)), clean_env(MARKET_PIPELINE_HOME=str(home))
    ).check()
    out = measured.json()
    bars, symbols = out["bars"], out["symbols"]
    labels = {
        "checks": "Both checks (read + validation + gaps + evaluations)",
        "checks_read": "… of which reading the bars",
        "stats_plain": "`symbol_stats` table (all_table_rows + replace_stats)",
        "stats_dagster": "`symbol_stats_job` in-process (Dagster run)",
    }
    for key, label in labels.items():
        stat = Stat(out[key])
        section.row(
            label, symbols, f"{bars:,}", stat.fmt(2), f"{rate(bars, stat.median):,.0f}",
            f"{1000 * stat.median / max(symbols, 1):.1f}",
        )
    section.data = out
    return section
