"""Scenario 13: the weekly `symbol_reference` refresh of --scale-symbols (10,000) tracked stocks at the real
API's latency (--latency-ms, 150): `python -m benchmarks.bench_reference` in a child process against the
benchmark's sandbox, which lists every one of them; requests and wall time per case."""

from __future__ import annotations

import json

from benchmarks.common import clean_env, python_module, run_measured, stock_tickers
from benchmarks.context import Bench
from benchmarks.report import Section

FREE_PLAN_CAP = 5 * 60  # the refresh's default on the free plan: an hour of 5 requests a minute


def reference_refresh(bench: Bench) -> Section:
    n, latency = bench.args.scale_symbols, bench.latency_ms
    section = Section(
        "reference_refresh",
        f"13. The weekly reference refresh of {n:,} tracked stocks ({latency:.0f} ms a request)",
        f"`python -m benchmarks.bench_reference --cap {FREE_PLAN_CAP}`: a warehouse tracking {n:,} stocks, all of them "
        f"in the sandbox's list of tickers (slowed to {latency:.0f} ms a request), their `symbol_reference` rows "
        "written beforehand; the `symbol_reference_job` run executed in-process as the weekly schedule launches it "
        "(`POLYGON_REQUESTS_PER_MINUTE=0`, the default 8 requests in flight), timed from its start to its end. "
        "`list dates known`: the rows as a refresh leaves them (steady state). `list dates unknown`: the rows as a bulk "
        f"first run leaves them, the refresh capped at {FREE_PLAN_CAP} list-date lookups (its default on the free "
        f"plan). One lookup per symbol, as the refresh read them before, is {n:,} requests a week.",
        ["Case", "List pages", "Single lookups", "Requests", "Seconds", "List dates still to look up"],
        align="lrrrrr",
    )
    lifecycle = {"FB", "TWTR", "RUSE"}  # the sandbox's delisted and renamed tickers: not in its active list
    symbols = [s for s in stock_tickers(n + len(lifecycle), seed=12) if s not in lifecycle][:n]
    home = bench.temp_home("reference-refresh")
    symbols_file = home / "symbols.json"
    symbols_file.write_text(json.dumps(symbols))
    bench.sandbox.add([(s, "stock") for s in symbols])
    bench.sandbox.set_latency(latency)
    try:
        bench.log(f"reference_refresh: {n:,} tracked stocks at {latency:.0f} ms")
        measured = run_measured(
            python_module("benchmarks.bench_reference", "--base-url", bench.sandbox.url, "--symbols-file",
                          str(symbols_file), "--cap", str(FREE_PLAN_CAP)),
            clean_env(),
        ).check()
        rows = measured.json()
    finally:
        bench.sandbox.set_latency(0)
        bench.discard(home)
    for row in rows:
        if not row["success"]:
            section.notes.append(f"The `{row['case']}` run failed.")
        section.row(row["case"], row["list_pages"], row["single_lookups"], row["requests"], f"{row['seconds']:.1f}",
                    f"{row['list_dates_pending']:,}")
    section.data = {"symbols": n, "cases": {r["case"]: r for r in rows}}
    bench.keep["reference_refresh"] = section.data
    return section
