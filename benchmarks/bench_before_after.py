"""Benchmark: the write side before and after a change, in turns on the same machine.

Two source trees, this checkout ("after") and `--before COMMIT` (extracted with `git archive`), run
the same measurements in alternating child processes (before, after, before, after, ...), each with
its own tree first on `PYTHONPATH` and as its working directory, in this virtualenv:

* first_run  scenario 8's first run: the bare loop with 8 requests in flight and `market-pipeline
             run`, `--symbols` stocks x `--years` years from the sandbox at `--latency-ms` a request;
* refresh    scenario 11: `benchmarks.bench_refresh` for `--refresh-symbols` stocks (1 missed session,
             window 3, checks on, 250 stored sessions each).

    .venv/bin/python -m benchmarks.bench_before_after --before d6e7b45                   # 2 rounds, full size
    .venv/bin/python -m benchmarks.bench_before_after --before d6e7b45 --symbols 50 --years 2 --refresh-symbols 500 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_FIRST_RUN = """
import argparse, json, sys
from benchmarks.common import SandboxProcess, machine_info, start_date_for, universe
from benchmarks.context import Bench
from benchmarks.report import Results
from benchmarks.network import _floor_once, _main_once

symbols, years, latency = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
args = argparse.Namespace(latency_ms=latency, in_flight=8, ui_repeats=1)
results = Results(machine=machine_info(), parameters={}, command="")
with SandboxProcess() as sandbox:
    names = universe(symbols)
    bench = Bench(args, results, sandbox, names, start_date_for(years), years, 1)
    sandbox.add(names)
    sandbox.warm(names)
    sandbox.set_latency(latency)
    try:
        floor = _floor_once(bench, 8)
        main = _main_once(bench)
    finally:
        bench.cleanup()
print(json.dumps({"floor_seconds": floor["seconds"], "main_seconds": main["seconds"], "bars": main["bars"],
                  "main_rss_mb": main.get("rss_mb")}))
"""


def _tree(commit: str, folder: Path) -> Path:
    out = folder / f"tree-{commit}"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def _child(tree: Path, argv: list[str]) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("MARKET_PIPELINE_DB_URL", "MARKET_PIPELINE_HOME", "DAGSTER_HOME")}
    env["PYTHONPATH"] = str(tree)
    env["PYTHONWARNINGS"] = "ignore"
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{argv[:4]} in {tree} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - started


def first_run(tree: Path, args) -> dict:
    out, _ = _child(tree, [sys.executable, "-c", _FIRST_RUN, str(args.symbols), str(args.years), str(args.latency_ms)])
    return json.loads(out.strip().splitlines()[-1])


def refresh(tree: Path, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "refresh.json"
        _child(tree, [sys.executable, "-m", "benchmarks.bench_refresh", "--symbols", str(args.refresh_symbols), "--windows", "3",
                      "--missed", "1", "--history-sessions", "250", "--checks", "--no-range", "--json", str(target)])
        (row,) = json.loads(target.read_text())
    return {"seconds": row["grouped"]["seconds"], "requests": row["grouped"]["requests"], "success": row["grouped"]["success"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--refresh-symbols", type=int, default=10_000)
    parser.add_argument("--only", default="first_run,refresh")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    started = time.perf_counter()
    results: dict = {w: {"before": [], "after": []} for w in wanted}
    with tempfile.TemporaryDirectory(prefix="mp-before-after-") as tmp:
        trees = {"before": _tree(args.before, Path(tmp)), "after": REPO}
        for r in range(args.rounds):
            for what in wanted:
                for side, tree in trees.items():
                    value = (first_run if what == "first_run" else refresh)(tree, args)
                    results[what][side].append(value)
                    print(f"[{time.perf_counter() - started:6.0f}s] round {r + 1} {what} {side}: {value}", file=sys.stderr, flush=True)
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"before = {args.before}, after = the working tree; {args.rounds} round(s) in turns; load average at the end {load}\n")
    if "first_run" in results:
        print(f"| First run at {args.latency_ms:.0f} ms, {args.symbols:,} x {args.years} | Before (s) | After (s) |\n|---|---|---|")
        for key, label in (("floor_seconds", "floor, 8 requests in flight"), ("main_seconds", "`market-pipeline run`")):
            before = [v[key] for v in results["first_run"]["before"]]
            after = [v[key] for v in results["first_run"]["after"]]
            print(f"| {label} | {', '.join(f'{x:.1f}' for x in before)} (median {statistics.median(before):.1f}) | "
                  f"{', '.join(f'{x:.1f}' for x in after)} (median {statistics.median(after):.1f}) |")
    if "refresh" in results:
        before = [v["seconds"] for v in results["refresh"]["before"]]
        after = [v["seconds"] for v in results["refresh"]["after"]]
        print(f"\n| Daily refresh, {args.refresh_symbols:,} stocks | Before (s) | After (s) |\n|---|---|---|")
        print(f"| run | {', '.join(f'{x:.1f}' for x in before)} (median {statistics.median(before):.1f}) | "
              f"{', '.join(f'{x:.1f}' for x in after)} (median {statistics.median(after):.1f}) |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}, "results": results, "load_average": load}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
