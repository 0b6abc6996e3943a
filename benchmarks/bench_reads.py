"""Benchmark: whole-panel and one-symbol reads through the column blocks, beside their floors.

On a warehouse of `--symbols` stocks x `--years` years (252 sessions a year, synthetic splits and
dividends), side by side in interleaved rounds:

* `read_bars` of the whole panel, for each adjustment (none, splits, total_return);
* the floor: `pyarrow.parquet.read_table(...).to_pandas()` of the same frame: the frame read_bars
  returned written as one Parquet file per adjustment with its index, so that pyarrow gives back
  that frame exactly (the (symbol, date) index, float64 columns, nullable Int64 transactions; checked
  equal once); and, as before, the same bars with symbol and date as plain columns (`flat`: no
  index built, symbols left as Arrow strings), the cheaper floor;
* the row path `read_bars` took before column blocks (per-symbol row reads, then the frame), for
  the same adjustments (one round: it is the slow one);
* one symbol's whole history split-adjusted (median of 21 reads), column blocks and row path;
* the peak RSS of a process reading the whole panel (total return), column blocks and row path.

SQLite always; PostgreSQL too with `--postgres` (a throwaway cluster). Not part of `make test`.

    .venv/bin/python -m benchmarks.bench_reads --symbols 100 --years 20             # a quick look
    .venv/bin/python -m benchmarks.bench_reads --symbols 1000 --years 20 --postgres # the targets' size
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ADJUSTMENTS = ("none", "splits", "total_return")


def _names(n: int) -> list[str]:
    from benchmarks.bench_corporate_actions import _names as names

    return names("R", n)


def build(url: str, symbols: int, years: int, log) -> list[str]:
    """The panel's warehouse, written through the bar store as a first run writes it."""
    from benchmarks.bench_corporate_actions import _events
    from benchmarks.bench_warehouse import synthetic_frame
    from market_pipeline.warehouse import BarStore, SymbolRegistry
    from market_pipeline.warehouse.corporate_actions import CorporateActionStore

    rng = np.random.default_rng(17)
    names = _names(symbols)
    registry, store, actions = SymbolRegistry(url), BarStore(url), CorporateActionStore(url)
    registry.add(names, "stock")
    base = synthetic_frame(252 * years, rng)
    all_splits, all_dividends = [], []
    started = time.perf_counter()
    for k, name in enumerate(names):
        frame = base.copy()
        frame[["open", "high", "low", "close", "vwap"]] *= 0.5 + (k % 89) / 40
        store.upsert_bars(name, frame)
        splits, dividends = _events(name, frame, rng)
        all_splits += splits
        all_dividends += dividends
    actions.record(all_splits, all_dividends, complete_symbols=names)
    log(f"{symbols:,} x {years} years written in {time.perf_counter() - started:.1f} s")
    return names


def read_rows_path(names: list[str], adjustment: str, url: str) -> pd.DataFrame:
    """`read_bars` as it read before column blocks: each symbol's rows (a binary COPY on PostgreSQL),
    its factor ranges applied, the frames concatenated and indexed."""
    from market_pipeline.warehouse.reader import _factor_table
    from market_pipeline.warehouse.store import BarStore

    store = BarStore(url)
    frames = []
    prices = ("open", "high", "low", "close", "vwap")
    with store.engine.connect() as conn:
        factors = _factor_table(conn, names) if adjustment != "none" else {}
        for symbol in names:
            frame = store._read(conn, symbol)
            ranges = factors.get(symbol)
            if adjustment != "none" and ranges is not None and not frame.empty:
                upper, split_factors, total_factors = ranges
                k = np.searchsorted(upper, np.asarray(frame["date"].to_numpy(), dtype="datetime64[D]"), side="right")
                split = np.append(split_factors, 1.0)[k]
                price = np.append(total_factors, 1.0)[k] if adjustment == "total_return" else split
                for column in prices:
                    frame[column] = frame[column].to_numpy(dtype="float64") * price
                frame["volume"] = frame["volume"].to_numpy(dtype="float64") / split
            frame.insert(0, "symbol", symbol)
            frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out["transactions"] = out["transactions"].astype("Int64")
    return out.set_index(["symbol", "date"])


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(url: str, names: list[str], folder: Path, rounds: int, before: bool, log) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from market_pipeline.warehouse.reader import read_bars

    floors, flats = {}, {}
    for adjustment in ADJUSTMENTS:
        frame = read_bars(names, adjustment=adjustment, url=url)
        if before:
            pd.testing.assert_frame_equal(frame, read_rows_path(names, adjustment, url), check_exact=True)
        path, flat = folder / f"panel-{adjustment}.parquet", folder / f"panel-{adjustment}-flat.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=True), path)
        pq.write_table(pa.Table.from_pandas(frame.reset_index(), preserve_index=False), flat)
        pd.testing.assert_frame_equal(pq.read_table(path).to_pandas(), frame, check_exact=True)  # the same frame
        floors[adjustment], flats[adjustment] = path, flat
        del frame
    log("panels equal to the row path's" if before else "floors written")
    times: dict[str, list[float]] = {}
    for r in range(rounds):
        for adjustment in ADJUSTMENTS:
            times.setdefault(f"blocks {adjustment}", []).append(_timed(lambda: read_bars(names, adjustment=adjustment, url=url)))
            times.setdefault(f"floor {adjustment}", []).append(_timed(lambda: pq.read_table(floors[adjustment]).to_pandas()))
            times.setdefault(f"flat {adjustment}", []).append(_timed(lambda: pq.read_table(flats[adjustment]).to_pandas()))
        log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    if before:
        for adjustment in ADJUSTMENTS:
            times[f"rows {adjustment}"] = [_timed(lambda: read_rows_path(names, adjustment, url))]
        log("row path: " + ", ".join(f"{a} {times[f'rows {a}'][0]:.2f} s" for a in ADJUSTMENTS))
    one, one_rows, one_cpu = [], [], []
    for _ in range(21):
        cpu = time.process_time()
        one.append(_timed(lambda: read_bars(names[0], adjustment="splits", url=url)))
        one_cpu.append(time.process_time() - cpu)
        if before:
            one_rows.append(_timed(lambda: read_rows_path(names[:1], "splits", url)))
    out = {key: {"median": statistics.median(v), "min": min(v), "values": v} for key, v in times.items()}
    # CPU time of this process too: on a machine shared with other work the wall time mostly says how
    # long the read waited for a core
    out["one symbol splits"] = {"median_ms": statistics.median(one) * 1000, "cpu_median_ms": statistics.median(one_cpu) * 1000}
    if before:
        out["one symbol splits, row path"] = {"median_ms": statistics.median(one_rows) * 1000}
    for path in ("blocks", "rows") if before else ("blocks",):
        out[f"peak rss {path}"] = peak_rss(url, len(names), path)
        log(f"peak RSS, {path}: {out[f'peak rss {path}']}")
    return out


def peak_rss(url: str, symbols: int, path: str) -> dict:
    """A child process reads the whole total-return panel: its RSS after imports and at its peak."""
    argv = [sys.executable, "-m", "benchmarks.bench_reads", "--peak", url, "--symbols", str(symbols), "--path", path]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _high_water_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry the parent's
    peak over a fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak(url: str, symbols: int, path: str) -> None:
    from market_pipeline.warehouse.engine import get_engine
    from market_pipeline.warehouse.reader import read_bars

    names = _names(symbols)
    get_engine(url)
    importlib.import_module("pyarrow")  # before the baseline: read_bars imports it
    baseline = _high_water_mb()
    frame = read_bars(names, adjustment="total_return", url=url) if path == "blocks" else read_rows_path(names, "total_return", url)
    peak = _high_water_mb()
    print(json.dumps({"baseline_mb": round(baseline), "peak_mb": round(peak), "frame_mb": round(frame.memory_usage(deep=True).sum() / 2**20)}))


def run(symbols: int, years: int, rounds: int, postgres, before: bool, log) -> dict:
    results = {"symbols": symbols, "years": years, "bars": symbols * years * 252}
    with tempfile.TemporaryDirectory(prefix="mp-bench-reads-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'panel.sqlite'}"
        names = build(url, symbols, years, log)
        results["sqlite"] = measure(url, names, folder, rounds, before, log)
        if postgres:  # True: a throwaway cluster; or a started PostgresCluster to use
            from market_pipeline_tests.postgres_cluster import PostgresCluster

            cluster = PostgresCluster().start() if postgres is True else postgres
            try:
                pg_url = cluster.create_database("bench_reads")
                build(pg_url, symbols, years, log)
                results["postgresql"] = measure(pg_url, names, folder, rounds, before, log)
                from market_pipeline.warehouse.engine import dispose_engine

                dispose_engine(pg_url)
                if postgres is not True:
                    cluster.drop_database("bench_reads")
            finally:
                if postgres is True:
                    cluster.stop()
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return results


def table(results: dict) -> str:
    lines = []
    for engine in ("sqlite", "postgresql"):
        r = results.get(engine)
        if not r:
            continue
        lines += [f"\n{engine}: {results['symbols']:,} x {results['years']} years ({results['bars']:,} bars)\n",
                  "| Read | Column blocks (s) | Parquet floor, same frame (s) | Blocks / floor | Parquet, flat (s) | Blocks / flat | Row path (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for a in ADJUSTMENTS:
            blocks, floor, flat = r[f"blocks {a}"]["median"], r[f"floor {a}"]["median"], r[f"flat {a}"]["median"]
            rows = r.get(f"rows {a}", {}).get("median")
            lines.append(
                f"| whole panel, {a} | {blocks:.2f} | {floor:.2f} | {blocks / floor:.2f}x | {flat:.2f} | {blocks / flat:.2f}x | "
                + (f"{rows:.2f} |" if rows else " |")
            )
        one = r["one symbol splits"]["median_ms"]
        rows_one = r.get("one symbol splits, row path", {}).get("median_ms")
        cpu = r["one symbol splits"]["cpu_median_ms"]
        lines.append(f"| one symbol, {results['years']} years, splits (ms, median of 21; CPU {cpu:.1f} ms) | {one:.1f} | | | | | {rows_one or float('nan'):.1f} |")
        for path in ("blocks", "rows"):
            p = r.get(f"peak rss {path}")
            if p:
                lines.append(f"| peak RSS of a whole-panel read, {path} (MB; after imports {p['baseline_mb']}, frame {p['frame_mb']}) | {p['peak_mb']} | | | | | |")
    lines.append(f"\nload average {results['load_average']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--no-before", action="store_true", help="skip the row path (the slow reads)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peak", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="blocks", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak:
        _peak(args.peak, args.symbols, args.path)
        return 0
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    results = run(args.symbols, args.years, args.rounds, args.postgres, not args.no_before, log)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def scenario(bench):
    """Scenario 14 of `make bench` (benchmarks.run_all): the reads at the run's N x Y, SQLite (and
    PostgreSQL with --postgres)."""
    from benchmarks.report import Section

    n, years = len(bench.symbols), bench.years
    section = Section(
        "reads" + bench.key_suffix,
        f"14. Reads through the column blocks{bench.label}",
        f"`read_bars` of {n} stocks x {years} years (synthetic splits and dividends) for each adjustment, beside the "
        "floor (`pyarrow.parquet.read_table().to_pandas()` of the same frame, index and dtypes included, as one Parquet "
        "file; and of the same bars with symbol and date as plain columns) and the row path "
        "`read_bars` took before column blocks; interleaved rounds, medians. One symbol's split-adjusted history "
        "(median of 21). Peak RSS of a process reading the whole total-return panel. Targets: each panel read at "
        "most 2x its floor at 1,000 x 20; one symbol <= 10 ms; peak memory no more than the row path's.",
        ["Engine", "Read", "Column blocks", "Floor (same frame)", "Blocks / floor", "Floor (flat)", "Blocks / flat", "Row path", "Target"],
        align="llrrrrrrr",
    )
    results = run(n, years, bench.repeats, bench.postgres or False, True, bench.log)
    for engine in ("sqlite", "postgresql"):
        r = results.get(engine)
        if not r:
            continue
        for a in ADJUSTMENTS:
            blocks, floor, flat, rows = (r[f"{k} {a}"]["median"] for k in ("blocks", "floor", "flat", "rows"))
            section.row(engine, f"whole panel, {a} (s)", f"{blocks:.2f}", f"{floor:.2f}", f"{blocks / floor:.2f}x", f"{flat:.2f}",
                        f"{blocks / flat:.2f}x", f"{rows:.2f}", "<= 2x")
        section.row(engine, f"one symbol, splits (ms; CPU {r['one symbol splits']['cpu_median_ms']:.1f})", f"{r['one symbol splits']['median_ms']:.1f}", "", "",
                    "", "", f"{r['one symbol splits, row path']['median_ms']:.1f}", "<= 10")
        blocks_peak, rows_peak = r["peak rss blocks"], r["peak rss rows"]
        section.row(engine, "peak RSS, whole panel (MB)", str(blocks_peak["peak_mb"]), "", "", "", "", str(rows_peak["peak_mb"]), "<= row path")
    section.notes.append(f"Load average at the end: {results['load_average']}.")
    section.data = results
    bench.keep["reads"] = results
    return section
