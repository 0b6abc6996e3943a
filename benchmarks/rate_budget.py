"""Scenario 10: the plan's rate across concurrent runs. A sandbox that answers 429 past R requests in
any 60 s (its sliding window), three `market-pipeline run` processes started at once over different
new symbols of one shared warehouse, each with `POLYGON_REQUESTS_PER_MINUTE=R` and the default
`POLYGON_MAX_IN_FLIGHT` (8 threads each): the deployment-wide budget must keep all of them, together,
under R. The sandbox counts the 429s it answered and the most requests that started in any 60 s."""

from __future__ import annotations

import subprocess
import time

from benchmarks.common import CLI, REPO, pipeline_env, register, start_date_for, stored_bars
from benchmarks.context import Bench
from benchmarks.report import MET, MISSED, Section
from market_pipeline.warehouse.rate_limit import max_in_window

RUNS = 3
REQUESTS_PER_SYMBOL = 2  # a new symbol: its reference lookup and its bars


def rate_budget(bench: Bench) -> Section:
    from market_pipeline.sandbox import SandboxServer

    limit = getattr(bench.args, "rate_limit", 30)
    # enough requests for more than two full windows: the budget, not the work, must set the pace
    per_run = max(4, -(-int(2.2 * limit) // (RUNS * REQUESTS_PER_SYMBOL)))
    symbols = [f"RB{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(RUNS * per_run)]
    section = Section(
        "rate_budget",
        f"10. The plan's rate across {RUNS} concurrent runs (R = {limit} a minute)",
        f"The sandbox answers 429 past {limit} requests in any 60 s. {RUNS} `market-pipeline run` processes start "
        f"at once, {per_run} new stocks each (2 years; about {2.2:.1f} x R requests in all), on one shared SQLite warehouse, each with "
        f"`POLYGON_REQUESTS_PER_MINUTE={limit}` and the default `POLYGON_MAX_IN_FLIGHT` (8). Target: zero 429s "
        f"and at most {limit} requests in any 60 s window, counted by the sandbox.",
        ["Runs", "Requests", "429s answered", "Most in any 60 s", "Wall (s)", "Bars stored", "Target"],
        align="rrrrrrl",
    )
    home = bench.temp_home("rate-budget")
    url = bench.warehouse_url(home, "sqlite")
    with SandboxServer(rate_limit_per_minute=limit) as sandbox:
        sandbox.add_to_universe(symbols)
        register(url, [(s, "stock") for s in symbols], start_date_for(2))
        procs = []
        began = time.monotonic()
        try:
            for i in range(RUNS):
                run_home = home / f"run{i}"
                run_home.mkdir()
                env = pipeline_env(run_home, sandbox.url, url)
                env["POLYGON_REQUESTS_PER_MINUTE"] = str(limit)
                mine = symbols[i * per_run : (i + 1) * per_run]
                procs.append(subprocess.Popen([CLI, "run", *mine], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True))
            outputs = [p.communicate(timeout=1800)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        seconds = time.monotonic() - began
        log = sandbox.request_log()
    ok_runs = sum(p.returncode == 0 for p in procs)
    too_many = sum(r.status == 429 for r in log)
    most = max_in_window([r.at for r in log])
    met = too_many == 0 and most <= limit
    bars = stored_bars(url)
    section.row(f"{ok_runs}/{RUNS} ok", str(len(log)), str(too_many), str(most), f"{seconds:.0f}", f"{bars:,}", MET if met else MISSED)
    if ok_runs < RUNS:
        section.notes.append("A run failed: " + " | ".join(o.strip().splitlines()[-1] for o, p in zip(outputs, procs) if p.returncode))
    section.data = {"requests": len(log), "status_429": too_many, "max_in_60s": most, "seconds": seconds, "runs_ok": ok_runs}
    bench.keep["rate_budget"] = section.data | {"limit": limit, "met": met}
    bench.drop_warehouse(url)
    bench.discard(home)
    return section
