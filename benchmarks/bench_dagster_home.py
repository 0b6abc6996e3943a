"""Does throughput depend on where DAGSTER_HOME points? The main job and the daily refresh with the
project's Dagster home, with DAGSTER_HOME set to an empty folder (as Dagster's docs suggest), and with
a home whose dagster.yaml has Dagster's defaults, side by side with the bare loop's floor.

    .venv/bin/python -m benchmarks.bench_dagster_home [--symbols 300] [--years 20] [--latency-ms 150]
                                                      [--refresh-symbols 10000] [--json FILE]

The main job: `market-pipeline run` of N new stocks x Y years against the sandbox slowed to
`--latency-ms`, in a fresh warehouse per variant, between two runs of the bare loop with 8 requests in
flight (the floor of scenario 8). The daily refresh: `benchmarks.bench_refresh` (one missed session,
window 3, checks on) with the project's event log and with Dagster's default instance. Never part of
`make test`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from benchmarks.common import (
    CLI, REPO, SandboxProcess, clean_env, pipeline_env, python_module, register, run_measured, sqlite_url,
    start_date_for, stored_bars, universe,
)

VARIANTS = {
    "project's home (DAGSTER_HOME unset)": None,
    "DAGSTER_HOME = an empty folder": "",
    "DAGSTER_HOME with Dagster's defaults": "telemetry:\n  enabled: false\n",
}


def floor(sandbox: SandboxProcess, symbols, start, work: Path) -> dict:
    home = work / "floor"
    url = sqlite_url(home)
    register(url, symbols, start)
    (home / "symbols.json").write_text(json.dumps(symbols))
    argv = python_module("benchmarks.floor", "--base-url", sandbox.url, "--db-url", url, "--symbols-file",
                         str(home / "symbols.json"), "--start", start.isoformat(), "--mode", "bare", "--in-flight", "8")
    out = run_measured(argv, clean_env()).check().json()
    shutil.rmtree(home, ignore_errors=True)
    return {"seconds": out["seconds"], "bars": out["bars"]}


def main_job(sandbox: SandboxProcess, symbols, start, work: Path, index: int, config: str | None) -> dict:
    home = work / f"main-{index}"
    url = sqlite_url(home)
    register(url, symbols, start)
    env = pipeline_env(home, sandbox.url)
    if config is not None:
        dagster_home = home / "dagster-home"
        dagster_home.mkdir()
        if config:
            (dagster_home / "dagster.yaml").write_text(config)
        env["DAGSTER_HOME"] = str(dagster_home)
    measured = run_measured([CLI, "run"], env).check()
    notes = [line for line in measured.stderr.splitlines() if "DAGSTER_HOME" in line]
    out = {"seconds": measured.seconds, "bars": stored_bars(url), "note": notes[0] if notes else ""}
    shutil.rmtree(home, ignore_errors=True)
    return out


def refresh(symbols: int, defaults: bool, work: Path) -> dict:
    target = work / f"refresh-{'defaults' if defaults else 'project'}.json"
    argv = python_module("benchmarks.bench_refresh", "--symbols", str(symbols), "--windows", "3", "--missed", "1",
                         "--history-sessions", "250", "--checks", "--no-range", "--json", str(target))
    run_measured(argv + (["--dagster-defaults"] if defaults else []), clean_env()).check()
    row = json.loads(target.read_text())[0]["grouped"]
    return {"seconds": row["seconds"], "requests": row["requests"], "success": row["success"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dagster_home", description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--refresh-symbols", type=int, default=10_000, help="stocks of the daily refresh (0: skip it)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import tempfile

    symbols, start = universe(args.symbols), start_date_for(args.years)
    work = Path(tempfile.mkdtemp(prefix="bench-home-"))
    results: dict = {"symbols": args.symbols, "years": args.years, "latency_ms": args.latency_ms}
    try:
        with SandboxProcess() as sandbox:
            sandbox.add(symbols)
            sandbox.warm(symbols)
            sandbox.set_latency(args.latency_ms)
            results["floor before"] = floor(sandbox, symbols, start, work)
            print(f"floor, 8 in flight: {results['floor before']['seconds']:.1f} s", flush=True)
            for index, (name, config) in enumerate(VARIANTS.items()):
                results[name] = main_job(sandbox, symbols, start, work, index, config)
                r = results[name]
                print(f"{name}: {r['seconds']:.1f} s, {r['bars']:,} bars; {r['note'] or 'no notice'}", flush=True)
            results["floor after"] = floor(sandbox, symbols, start, work)
            print(f"floor, 8 in flight: {results['floor after']['seconds']:.1f} s", flush=True)
        if args.refresh_symbols:
            for defaults in (False, True):
                label = f"daily refresh, {'Dagster defaults' if defaults else 'project event log'}"
                results[label] = refresh(args.refresh_symbols, defaults, work)
                print(f"{label}: {results[label]['seconds']:.1f} s, {results[label]['requests']} bar requests", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
