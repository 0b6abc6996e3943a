"""Scenario `cli_start`: how long the command line takes to answer, interpreter start-up included.

A warehouse of a few symbols stored by a real `market-pipeline run` (so `symbols list`, `stats` and
`bars` read real rows), then each command run as a child process, as a user types it, repeatedly:
`--help` (target under 0.5 s) and the read-only commands `symbols list`, `stats`, `bars` and
`db current` (target under 1 s each, on a quiet machine). One more run of each under
`python -X importtime` tells whether it loaded Dagster.
"""

from __future__ import annotations

from benchmarks.common import CLI, pipeline_env, python_module, register, repeat, run_measured, start_date_for
from benchmarks.context import Bench
from benchmarks.report import Section

HELP_TARGET, READ_TARGET = 0.5, 1.0
SYMBOLS = 5


def commands(symbol: str, year: int) -> list[tuple[str, list[str], float]]:
    return [
        ("market-pipeline --help", ["--help"], HELP_TARGET),
        ("market-pipeline symbols list", ["symbols", "list"], READ_TARGET),
        ("market-pipeline stats", ["stats"], READ_TARGET),
        (f"market-pipeline bars {symbol} --start {year}-01-01", ["bars", symbol, "--start", f"{year}-01-01"], READ_TARGET),
        ("market-pipeline db current", ["db", "current"], READ_TARGET),
    ]


def loads_dagster(argv: list[str], env: dict) -> bool:
    measured = run_measured(python_module("market_pipeline.cli.main", *argv), {**env, "PYTHONPROFILEIMPORTTIME": "1"})
    return any(line.rsplit("|", 1)[-1].strip().split(".")[0] == "dagster" for line in measured.stderr.splitlines()
               if line.startswith("import time:"))


def cli_start(bench: Bench) -> Section:
    symbols = bench.symbols[:SYMBOLS]
    years = min(bench.years, 5)
    home = bench.temp_home("cli")
    register(bench.warehouse_url(home), symbols, start_date_for(years))
    bench.log(f"cli start-up: a warehouse of {len(symbols)} symbols x {years} years (market-pipeline run)")
    bench.run_main_job(home)
    env = pipeline_env(home, bench.sandbox.url)
    reps = max(bench.repeats, 5)
    year = start_date_for(1).year
    section = Section(
        "cli_start" + bench.key_suffix, f"12. CLI start-up{bench.label}",
        intro=(
            f"Each command run {reps} times as a child process, as a user types it (`market-pipeline ...`), interpreter "
            f"start-up included, on a warehouse of {len(symbols)} symbols x {years} years stored by `market-pipeline "
            "run`. Targets: `--help` under 0.5 s, the read-only commands under 1 s, on a quiet machine. The last "
            "column is whether the command loaded Dagster (`python -X importtime`)."
        ),
        headers=["Command", "Seconds", "Target", "Loads Dagster", "Status"], align="lrrll",
    )
    worst = {}
    for label, argv, target in commands(symbols[0][0], year):
        stats = repeat(reps, lambda i, argv=argv: {"seconds": run_measured([str(CLI), *argv], env).check().seconds})
        seconds = stats["seconds"]
        dagster = loads_dagster(argv, env)
        met = seconds.median < target and not dagster
        section.row(f"`{label}`", seconds.fmt(2), f"< {target:g} s", "yes" if dagster else "no", "met" if met else "**missed**")
        section.data[label] = {"median": seconds.median, "min": seconds.lo, "max": seconds.hi, "dagster": dagster}
        worst[label] = (seconds.median, target, dagster)
        bench.log(f"  {label}: {seconds.fmt(2)} s, dagster loaded: {dagster}")
    bench.keep["cli_start"] = worst
    return section
