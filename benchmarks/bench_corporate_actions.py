"""Benchmark: corporate actions (issue 11's "Measured").

* one symbol's 20-year split-adjusted history through `read_bars(adjustment="splits")` (target < 20 ms),
  next to the same read unadjusted;
* the total-return panel of `--symbols` symbols x `--years` years through `read_bars`, against the
  same bars unadjusted (target: at most 1.5x);
* the requests of the daily corporate-actions read (every ticker's last 60 days) with `--tracked`
  symbols tracked, against the sandbox (target: at most 3 a day), and of the weekly whole-list sweep.

SQLite in a temporary folder. Not part of `make test`.

    .venv/bin/python -m benchmarks.bench_corporate_actions                       # 1,000 x 20 years, 10,000 tracked
    .venv/bin/python -m benchmarks.bench_corporate_actions --symbols 50 --tracked 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_warehouse import synthetic_frame
from market_pipeline.corporate_actions import parse_dividend, parse_split
from market_pipeline.polygon.client import PolygonClient
from market_pipeline.refresh.corporate_actions import DEFAULT_LOOKBACK_DAYS, refresh_corporate_actions
from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.reader import read_bars


def _names(prefix: str, n: int) -> list[str]:
    """n stock-like tickers: the prefix and four letters (valid symbols, never real ones)."""
    out = []
    for i in range(n):
        letters = ""
        for _ in range(4):
            i, r = divmod(i, 26)
            letters = chr(65 + r) + letters
        out.append(prefix + letters)
    return out


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def _events(symbol: str, frame, rng) -> tuple[list, list]:
    """Two splits and quarterly dividends over the symbol's history."""
    dates = frame["date"].dt.date.tolist()
    splits = [
        parse_split({"id": f"{symbol}-s{i}", "ticker": symbol, "execution_date": dates[k].isoformat(),
                     "split_from": 1, "split_to": to})
        for i, (k, to) in enumerate(((len(dates) // 3, 2), (2 * len(dates) // 3, 4)))
    ]
    closes = frame["close"].to_numpy()
    dividends = [
        parse_dividend({"id": f"{symbol}-d{k}", "ticker": symbol, "ex_dividend_date": dates[k].isoformat(),
                        "cash_amount": round(float(closes[k - 1]) * 0.004, 2), "currency": "USD",
                        "distribution_type": "recurring"})
        for k in range(63, len(dates), 63)
    ]
    return splits, dividends


def panel(url: str, symbols: int, years: int, reads: int) -> dict:
    rng = np.random.default_rng(11)
    bars_per_symbol = 252 * years
    registry, store, actions = SymbolRegistry(url), BarStore(url), CorporateActionStore(url)
    names = _names("Q", symbols)
    registry.add(names, "stock")
    all_splits, all_dividends = [], []
    for name in names:
        frame = synthetic_frame(bars_per_symbol, rng)
        store.upsert_bars(name, frame)
        splits, dividends = _events(name, frame, rng)
        all_splits += splits
        all_dividends += dividends
    actions.record(all_splits, all_dividends, complete_symbols=names)
    one = names[0]
    read_bars(names, url=url)  # warm the page cache once; then interleave so load noise hits both alike
    one_split, one_none, panel_none, panel_total = [], [], [], []
    for _ in range(reads):
        one_split += _timed(lambda: read_bars(one, adjustment="splits", url=url), 1)
        one_none += _timed(lambda: read_bars(one, adjustment="none", url=url), 1)
    for _ in range(3):
        panel_none += _timed(lambda: read_bars(names, adjustment="none", url=url), 1)
        panel_total += _timed(lambda: read_bars(names, adjustment="total_return", url=url), 1)
    return {
        "bars_per_symbol": bars_per_symbol,
        "one_symbol_splits_ms_median": round(statistics.median(one_split) * 1000, 2),
        "one_symbol_none_ms_median": round(statistics.median(one_none) * 1000, 2),
        "panel_symbols": symbols,
        "panel_none_s_median": round(statistics.median(panel_none), 3),
        "panel_total_return_s_median": round(statistics.median(panel_total), 3),
        "panel_ratio": round(statistics.median(panel_total) / statistics.median(panel_none), 3),
    }


def requests(url: str, tracked: int) -> dict:
    registry = SymbolRegistry(url)
    names = _names("X", tracked)
    registry.add(names, "stock")
    store = CorporateActionStore(url)
    with SandboxServer() as sandbox, PolygonClient(SANDBOX_API_KEY, sandbox.url, 0) as client:
        since = dt.date.today() - dt.timedelta(days=DEFAULT_LOOKBACK_DAYS)
        daily = refresh_corporate_actions(client, store, None, since=since)
        sandbox.reset_counts()
        sweep = refresh_corporate_actions(client, store, None)
    return {"tracked": tracked, "daily_requests": daily.requests, "weekly_sweep_requests": sweep.requests}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--tracked", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=21)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        results = panel(f"sqlite:///{Path(folder) / 'panel.sqlite'}", args.symbols, args.years, args.reads)
        results.update(requests(f"sqlite:///{Path(folder) / 'requests.sqlite'}", args.tracked))
    results["targets"] = {
        "one_symbol_splits_ms_median": "< 20",
        "panel_ratio": "<= 1.5",
        "daily_requests": "<= 3",
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()


def scenario(bench):
    """Scenario 9 of `make bench` (benchmarks.run_all): the same measurements at the run's N x Y, and
    the corporate-actions requests of `--scale-symbols` tracked symbols."""
    from benchmarks.report import Section

    n, years = len(bench.symbols), bench.years
    section = Section(
        "corporate_actions" + bench.key_suffix,
        f"9. Corporate actions: adjusted reads and requests{bench.label}",
        f"`read_bars` on a SQLite warehouse of {n} stocks x {years} years (252 sessions a year) with synthetic splits "
        f"and dividends: one symbol's split-adjusted history (median of 21 reads) beside the same read unadjusted, and "
        f"the total-return panel of all {n} beside the unadjusted panel (median of 3); then the requests of the daily "
        f"corporate-actions read (every ticker's last {DEFAULT_LOOKBACK_DAYS} days) and of the weekly whole-list sweep "
        f"with {bench.args.scale_symbols:,} symbols tracked, counted against the sandbox.",
        ["Measure", "Value", "Target"],
        align="lrr",
    )
    home = bench.temp_home("corporate-actions")
    try:
        bench.log(f"corporate actions: panel of {n} x {years}, requests at {bench.args.scale_symbols:,} tracked")
        p = panel(f"sqlite:///{home / 'panel.sqlite'}", n, years, 21)
        r = requests(f"sqlite:///{home / 'requests.sqlite'}", bench.args.scale_symbols)
    finally:
        bench.discard(home)
    section.row(f"one symbol, {years} years, split-adjusted read (ms)", f"{p['one_symbol_splits_ms_median']:.1f}", "< 20")
    section.row(f"one symbol, {years} years, unadjusted read (ms)", f"{p['one_symbol_none_ms_median']:.1f}", "")
    section.row(f"total-return panel of {n} (s)", f"{p['panel_total_return_s_median']:.2f}", "")
    section.row(f"unadjusted panel of {n} (s)", f"{p['panel_none_s_median']:.2f}", "")
    section.row("panel ratio, total return / unadjusted", f"{p['panel_ratio']:.2f}x", "<= 1.5x")
    section.row(f"daily corporate-actions read, {r['tracked']:,} tracked (requests)", str(r["daily_requests"]), "<= 3")
    section.row(f"weekly whole-list sweep, {r['tracked']:,} tracked (requests)", str(r["weekly_sweep_requests"]), "")
    section.data = {**p, **r}
    bench.keep["corporate_actions"] = {**p, **r}
    return section
