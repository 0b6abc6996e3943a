"""Benchmark: warehouse upsert throughput (bars/s) and one-symbol frame reads, SQLite vs PostgreSQL.

Times `BarStore.upsert_bars` (the exact write path the asset uses: one transaction per symbol, with
the inserted/changed diff) for `--symbols` symbols x `--bars` daily bars, in three passes:

* load     every symbol into an empty warehouse (all rows new),
* revise   every symbol again with ~1% of its bars changed (all rows existing, a few changed),
* window   the asset's usual refresh: the last 3 bars of every symbol (tiny transactions),

then `BarStore.read_bars` of single symbols (whole history, --reads times, median and p95).

SQLite is a file in a temporary folder; PostgreSQL is a throwaway local cluster started for the
run (fsync and synchronous_commit off, as in the test suite) unless `--pg-url` names a server.
Not part of `make test`.

    .venv/bin/python -m benchmarks.bench_warehouse                      # 1,000 x 5,000, both engines
    .venv/bin/python -m benchmarks.bench_warehouse --symbols 100 --engines postgresql
    .venv/bin/python -m benchmarks.bench_warehouse --pg-url postgresql+psycopg2://u:p@host/db
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.warehouse.engine import dispose_engine, get_engine
from market_pipeline.warehouse.store import BarStore

FIRST_DAY = "2005-01-03"


def synthetic_frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """`n` valid daily bars on consecutive business days from FIRST_DAY (a geometric random walk)."""
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, n)))
    open_ = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0.0, 0.003, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, 0.005, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, 0.005, n)))
    vwap = (high + low + close) / 3
    vwap[rng.random(n) < 0.01] = np.nan  # some bars without vwap / transactions, as Polygon serves
    transactions = pd.array(rng.integers(10, 50_000, n), dtype="Int64")
    transactions[rng.random(n) < 0.01] = pd.NA
    return pd.DataFrame(
        {
            "date": pd.bdate_range(FIRST_DAY, periods=n),
            "open": open_, "high": high, "low": low, "close": close,
            "volume": rng.integers(1_000, 5_000_000, n).astype(float), "vwap": vwap, "transactions": transactions,
        }
    )[list(BAR_COLUMNS)]


def revised(frame: pd.DataFrame, rng: np.random.Generator, share: float = 0.01) -> pd.DataFrame:
    out = frame.copy()
    rows = rng.random(len(out)) < share
    out.loc[rows, "close"] = out.loc[rows, "close"] * 1.001
    return out


@dataclass
class EngineResult:
    engine: str
    symbols: int
    bars_per_symbol: int
    load_seconds: float = 0.0
    load_bars_per_second: float = 0.0
    revise_seconds: float = 0.0
    revise_bars_per_second: float = 0.0
    revise_rows_changed: int = 0
    window_seconds: float = 0.0
    window_symbols_per_second: float = 0.0
    read_median_ms: float = 0.0
    read_p95_ms: float = 0.0
    stored_rows: int = 0
    notes: list[str] = field(default_factory=list)


def _timed_upserts(store: BarStore, symbols: list[str], frames: list[pd.DataFrame]) -> tuple[float, int, int]:
    bars = changed = 0
    started = time.perf_counter()
    for symbol, frame in zip(symbols, frames):
        result = store.upsert_bars(symbol, frame)
        bars += result.rows_upserted
        changed += result.rows_changed
    return time.perf_counter() - started, bars, changed


def bench_engine(name: str, url: str, n_symbols: int, n_bars: int, reads: int, out=sys.stdout) -> EngineResult:
    rng = np.random.default_rng(7)
    base = synthetic_frame(n_bars, rng)
    # frames share one random walk, scaled per symbol (building 1,000 walks would dominate the setup)
    scales = rng.uniform(0.5, 2.0, n_symbols)
    symbols = [f"S{i:05d}" for i in range(n_symbols)]
    result = EngineResult(name, n_symbols, n_bars)
    store = BarStore(url)
    get_engine(url)  # migrate before timing

    frames = []
    for scale in scales:
        frame = base.copy()
        frame[["open", "high", "low", "close", "vwap"]] *= scale
        frames.append(frame)
    seconds, bars, _ = _timed_upserts(store, symbols, frames)
    result.load_seconds, result.load_bars_per_second = seconds, bars / seconds
    print(f"  {name}: load    {bars:>10,} bars in {seconds:7.2f} s = {bars / seconds:>10,.0f} bars/s", file=out)

    frames = [revised(f, rng) for f in frames]
    seconds, bars, changed = _timed_upserts(store, symbols, frames)
    result.revise_seconds, result.revise_bars_per_second, result.revise_rows_changed = seconds, bars / seconds, changed
    print(
        f"  {name}: revise  {bars:>10,} bars in {seconds:7.2f} s = {bars / seconds:>10,.0f} bars/s "
        f"({changed:,} changed)",
        file=out,
    )

    tails = [f.tail(3) for f in frames]
    seconds, _, _ = _timed_upserts(store, symbols, tails)
    result.window_seconds, result.window_symbols_per_second = seconds, n_symbols / seconds
    print(f"  {name}: window  {n_symbols:>10,} symbols x 3 bars in {seconds:7.2f} s = "
          f"{n_symbols / seconds:,.0f} symbols/s", file=out)

    timings = []
    for i in range(reads):
        started = time.perf_counter()
        frame = store.read_bars(symbols[(i * 7919) % n_symbols])
        timings.append((time.perf_counter() - started) * 1000)
        assert len(frame) == n_bars
    timings.sort()
    result.read_median_ms = statistics.median(timings)
    result.read_p95_ms = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
    print(f"  {name}: read_bars of one symbol ({n_bars:,} bars): median {result.read_median_ms:.1f} ms, "
          f"p95 {result.read_p95_ms:.1f} ms", file=out)

    with get_engine(url).connect() as conn:
        result.stored_rows = conn.execute(sa.text("SELECT count(*) FROM ohlcv_daily")).scalar()
    assert result.stored_rows == n_symbols * n_bars, result.stored_rows
    dispose_engine(url)
    return result


@contextlib.contextmanager
def postgres_url(pg_url: str | None) -> Iterator[str]:
    if pg_url:
        yield pg_url
        return
    from market_pipeline_tests.postgres_cluster import PostgresCluster

    with PostgresCluster() as cluster:
        yield cluster.create_database("bench_warehouse")


def main(argv: list[str] | None = None) -> list[EngineResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--pg-url", help="an existing (empty) PostgreSQL database instead of a throwaway cluster")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    print(f"warehouse upserts: {args.symbols:,} symbols x {args.bars:,} bars = {args.symbols * args.bars:,} bars")
    results = []
    if "sqlite" in args.engines:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
            results.append(bench_engine("sqlite", url, args.symbols, args.bars, args.reads))
    if "postgresql" in args.engines:
        with postgres_url(args.pg_url) as url:
            results.append(bench_engine("postgresql", url, args.symbols, args.bars, args.reads))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return results


if __name__ == "__main__":
    main()
