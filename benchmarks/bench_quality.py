"""Benchmark: read every symbol's bars from SQLite and compute its quality stats.

Builds a SQLite file in a temporary directory holding `--symbols` symbols (every tenth one crypto)
x `--years` years of valid synthetic daily bars ending 2024-12-31, then times, for every symbol, one
query that reads its bars plus `compute_symbol_stats` (validation, gaps and stats).

    .venv/bin/python benchmarks/bench_quality.py --symbols 1000 --years 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from market_pipeline import calendars
from market_pipeline.quality import compute_symbol_stats

END = dt.date(2024, 12, 31)
NOW = dt.datetime(2025, 1, 1, 12, tzinfo=dt.timezone.utc)  # 2024-12-31 is the latest completed session
SCHEMA = """
CREATE TABLE ohlcv_daily (
    symbol TEXT NOT NULL, date DATE NOT NULL,
    open REAL, high REAL, low REAL, close REAL, volume REAL, vwap REAL, transactions INTEGER,
    PRIMARY KEY (symbol, date)
)
"""
COLUMNS = ("date", "open", "high", "low", "close", "volume", "vwap", "transactions")
QUERY = (
    "SELECT date, open, high, low, close, volume, vwap, transactions"
    " FROM ohlcv_daily WHERE symbol = ? ORDER BY date"
)


def universe(count: int) -> list[tuple[str, str]]:
    """(symbol, asset_class) pairs; every tenth symbol is a crypto pair."""
    return [(f"X:C{i:04d}USD", "crypto") if i % 10 == 9 else (f"S{i:04d}", "stock") for i in range(count)]


def synthetic_bars(days: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Valid OHLCV bars along a geometric random walk (high/low bracket open/close, vwap inside)."""
    n = len(days)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, n)))
    open_ = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0.0, 0.003, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, 0.005, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, 0.005, n)))
    return {
        "date": np.datetime_as_string(days, unit="D"),
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": rng.integers(1_000, 5_000_000, n).astype(float),
        "vwap": (high + low + close) / 3,
        "transactions": rng.integers(10, 50_000, n),
    }


def build_database(path: Path, symbols: list[tuple[str, str]], years: int) -> int:
    """Fill `path` with synthetic bars for every symbol; returns the number of rows."""
    start = dt.date(END.year - years + 1, 1, 1)
    rng = np.random.default_rng(42)
    rows = 0
    with sqlite3.connect(path) as conn:
        conn.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + SCHEMA)
        for symbol, asset_class in symbols:
            bars = synthetic_bars(calendars.session_days(asset_class, start, END), rng)
            columns = [bars[name].tolist() for name in COLUMNS]
            conn.executemany(
                "INSERT INTO ohlcv_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                zip(itertools.repeat(symbol), *columns),
            )
            rows += len(bars["date"])
    return rows


def run_quality(path: Path, symbols: list[tuple[str, str]]) -> tuple[list, float]:
    """Read each symbol with one query and compute its stats; returns the stats and the seconds spent reading."""
    stats, reading = [], 0.0
    with sqlite3.connect(path) as conn:
        for symbol, asset_class in symbols:
            started = time.perf_counter()
            frame = pd.read_sql(QUERY, conn, params=(symbol,))
            reading += time.perf_counter() - started
            stats.append(compute_symbol_stats(symbol, asset_class, frame, now=NOW))
    return stats, reading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--years", type=int, default=20)
    args = parser.parse_args()

    symbols = universe(args.symbols)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sqlite"
        started = time.perf_counter()
        rows = build_database(path, symbols, args.years)
        print(f"built {rows:,} rows for {len(symbols)} symbols in {time.perf_counter() - started:.1f} s")

        calendars.xnys_session_days()  # the once-per-process calendar load is not part of the loop
        started = time.perf_counter()
        stats, reading = run_quality(path, symbols)
        elapsed = time.perf_counter() - started

    failing = sum(not (s.validation.passed and s.gaps.passed) for s in stats)
    print(
        f"read + validated + gap-checked {len(stats)} symbols in {elapsed:.2f} s "
        f"(reading {reading:.2f} s, quality {elapsed - reading:.2f} s; {failing} failing)"
    )


if __name__ == "__main__":
    main()
