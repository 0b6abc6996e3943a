"""Benchmark: point-in-time reads after a year of daily revisions, and what the revisions cost to keep.

1. **Reads.** A warehouse of `--symbols` stocks x `--years` years (synthetic splits and quarterly
   dividends, as `bench_reads` builds it) whose last `--days` sessions arrive one a day, as a daily
   refresh writes them: each day every symbol's last 3 stored sessions are written again with the
   new one, `--changed` of those re-fetched bars with other values (a late correction, kept by the
   following days), in grouped batches of 200 symbols (`upsert_many`) followed by the factors of the
   symbols revised (as a refresh recomputes them), each day's dividends recorded on their ex-date. Then, side by side in interleaved rounds, `read_bars` of the
   whole panel now and `read_bars(..., as_of=...)` a year, six months and a week back, each
   adjustment. Target: every as_of read at most 1.5x the current read. The as_of reads are checked
   against what `read_bars` returned at those instants (hashes taken during the simulation).
2. **Storage.** `--storage-symbols` stocks (short histories) through `--days` daily refreshes of the
   same shape, written with the bar store directly: the rows and bytes of the revisions tables, and
   of the bars, after the year.

SQLite always; PostgreSQL too with `--postgres` (a throwaway cluster). Not part of `make test`.

    .venv/bin/python -m benchmarks.bench_point_in_time --symbols 50 --years 3 --days 40 --storage-symbols 500   # a quick look
    .venv/bin/python -m benchmarks.bench_point_in_time --symbols 1000 --years 20 --storage-symbols 10000 --postgres
    .venv/bin/python -m benchmarks.bench_point_in_time --storage-symbols 0 --keep /tmp/pit   # build once, then re-read
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ADJUSTMENTS = ("none", "splits", "total_return")
LOADED = dt.datetime(2024, 1, 2, 22, 0)  # the first load; day k's refresh is stamped k days later
BATCH = 200  # symbols per grouped write, as the grouped refresh stores them
STORAGE_SYMBOLS = 300  # of the storage measurement in `make bench` (bytes per row as at 1,000; projected to 10,000)
REVISION_TABLES = ("ohlcv_revisions", "ohlcv_insertions", "corporate_action_revisions", "adjustment_factor_changes")


def _names(prefix: str, n: int) -> list[str]:
    from benchmarks.bench_corporate_actions import _names as names

    return names(prefix, n)


def _digest(frame: pd.DataFrame) -> str:
    return str(int(pd.util.hash_pandas_object(frame.reset_index(), index=False).sum()) & (2**63 - 1))


def simulate(url: str, names: list[str], frames: dict[str, pd.DataFrame], days: int, changed: float, rng, log,
             events=None, watch: dict[int, str] | None = None) -> dict:
    """The first load (all but the last `days` sessions) at LOADED, then `days` daily refreshes.
    `frames` are mutated (a corrected value stays corrected). `events`: symbol -> (splits, dividends)
    recorded at the load (those dated by then) and on their date. `watch`: day -> label: the digests
    of the reads after that day (day -1: after the load). Returns the stamps and digests."""
    from market_pipeline.warehouse import BarStore
    from market_pipeline.warehouse.corporate_actions import CorporateActionStore
    from market_pipeline.warehouse.reader import read_bars
    from market_pipeline.warehouse.store import clock_at

    store, actions = BarStore(url), CorporateActionStore(url)
    first = {name: len(frame) - days for name, frame in frames.items()}
    digests: dict[str, dict] = {}
    watch = watch or {}

    def record(through: dt.date, at: dt.datetime, on: dt.date | None = None) -> bool:
        """The events dated by `through` (at the load), or on the day `on` (a dividend on its ex-date)."""
        if events is None:
            return False
        splits = [e for name in names for e in events[name][0] if on is None and e.execution_date <= through]
        dividends = [e for name in names for e in events[name][1] if (e.ex_dividend_date == on if on else e.ex_dividend_date <= through)]
        if splits or dividends:
            with clock_at(at):
                actions.record(splits, dividends, complete_symbols=[] if on else names)
            return True
        return False

    def snapshot(label: str, at: dt.datetime):
        with clock_at(at + dt.timedelta(minutes=30)):
            digests[label] = {a: _digest(read_bars(names, adjustment=a, url=url)) for a in ("none", "total_return")}
        digests[label]["at"] = (at + dt.timedelta(minutes=30)).isoformat()

    started = time.perf_counter()
    with clock_at(LOADED):
        for i in range(0, len(names), BATCH):
            store.upsert_many([(name, frames[name].iloc[: first[name]]) for name in names[i : i + BATCH]])
    record(frames[names[0]]["date"].iloc[first[names[0]] - 1].date(), LOADED)
    if -1 in watch:
        snapshot(watch[-1], LOADED)
    stamps = []
    dividend_day = -10  # the last day dividends were recorded
    for day in range(days):
        at = LOADED + dt.timedelta(days=day + 1)
        stamps.append(at)
        with clock_at(at):
            for i in range(0, len(names), BATCH):
                batch = []
                for name in names[i : i + BATCH]:
                    frame, end = frames[name], first[name] + day
                    rows = np.arange(end - 3, end)
                    hit = rows[rng.random(3) < changed]
                    if len(hit):  # late corrections: the re-fetched bars come back with other values, for good
                        for column in ("open", "high", "low", "close", "vwap"):
                            frame.loc[hit, column] = frame.loc[hit, column] * (1 + 0.001 * (day + 1))
                    batch.append((name, frame.iloc[end - 3 : end + 1]))
                written = store.upsert_many(batch)
                if events is not None and day - dividend_day <= 2:
                    # as a refresh does after storing bars, the factors follow the closes: only the revised
                    # symbols' can change, and only while the close before the last ex-date is re-fetched
                    actions.recompute([name for name, result in written.items() if result.revised], now=at)
        today = frames[names[0]]["date"].iloc[first[names[0]] + day].date()
        if record(today, at, on=today):
            dividend_day = day
        if day in watch:
            snapshot(watch[day], at)
        if (day + 1) % 25 == 0:
            log(f"day {day + 1} of {days} written ({time.perf_counter() - started:.0f} s)")
    return {"stamps": stamps, "digests": digests}


def _engine_bytes(url: str, tables) -> dict[str, int]:
    """Bytes on disk per table, its indexes included."""
    from market_pipeline.warehouse.engine import get_engine

    engine = get_engine(url)
    out = {}
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            for table in tables:
                out[table] = int(conn.exec_driver_sql("SELECT pg_total_relation_size(%s)", (table,)).scalar())
        else:
            rows = conn.exec_driver_sql(
                "SELECT m.tbl_name, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name GROUP BY m.tbl_name"
            ).all()
            sizes = dict(rows)
            out = {table: int(sizes.get(table, 0)) for table in tables}
    return out


def _row_counts(url: str, tables) -> dict[str, int]:
    from market_pipeline.warehouse.engine import get_engine

    with get_engine(url).connect() as conn:
        return {t: int(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()) for t in tables}


def reads(url: str, symbols: int, years: int, days: int, changed: float, rounds: int, log, kept: Path | None = None) -> dict:
    from benchmarks.bench_corporate_actions import _events
    from benchmarks.bench_warehouse import synthetic_frame
    from market_pipeline.warehouse import SymbolRegistry
    from market_pipeline.warehouse.reader import read_bars
    from market_pipeline.warehouse.store import clock_at

    names = _names("R", symbols)
    points = {"a year back": -1, "six months back": days // 2 - 1, "a week back": max(days - 6, 0)}
    sidecar = kept.with_suffix(".json") if kept is not None else None
    if sidecar is not None and sidecar.exists():  # the simulation kept by an earlier --keep run
        done = json.loads(sidecar.read_text())
        done["stamps"] = [dt.datetime.fromisoformat(t) for t in done["stamps"]]
        log(f"reusing the warehouse {kept} ({symbols:,} x {years} years, {days} daily refreshes)")
    else:
        rng = np.random.default_rng(17)
        SymbolRegistry(url).add(names, "stock")
        base = synthetic_frame(252 * years, rng)
        frames, events = {}, {}
        for k, name in enumerate(names):
            frame = base.copy()
            frame[["open", "high", "low", "close", "vwap"]] *= 0.5 + (k % 89) / 40
            frames[name] = frame
            events[name] = _events(name, frame, rng)
        started = time.perf_counter()
        done = simulate(url, names, frames, days, changed, rng, log, events, watch={v: k for k, v in points.items()})
        log(f"{symbols:,} x {years} years, {days} daily refreshes written in {time.perf_counter() - started:.0f} s")
        if sidecar is not None:
            sidecar.write_text(json.dumps({**done, "stamps": [t.isoformat() for t in done["stamps"]]}))
    now = done["stamps"][-1] + dt.timedelta(hours=6)
    moments = {label: done["digests"][label]["at"] for label in points}
    checked = {}
    with clock_at(now):
        for label, at in moments.items():
            for a in ("none", "total_return"):
                checked[f"{label} {a}"] = _digest(read_bars(names, adjustment=a, url=url, as_of=at)) == done["digests"][label][a]
    log("as_of reads equal the reads then: " + ", ".join(f"{k} {v}" for k, v in checked.items()))
    times: dict[str, list[float]] = {}
    with clock_at(now):
        for r in range(rounds):
            for a in ADJUSTMENTS:
                began = time.perf_counter()
                read_bars(names, adjustment=a, url=url)
                times.setdefault(f"now {a}", []).append(time.perf_counter() - began)
                for label, at in moments.items():
                    began = time.perf_counter()
                    read_bars(names, adjustment=a, url=url, as_of=at)
                    times.setdefault(f"{label} {a}", []).append(time.perf_counter() - began)
            log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    sizes = _row_counts(url, (*REVISION_TABLES, "ohlcv_daily"))
    return {
        "symbols": symbols, "years": years, "days": days, "changed": changed, "bars": sizes["ohlcv_daily"],
        "moments": moments, "equal": checked, "rows": sizes,
        # the factor changes of histories with dividends (the storage simulation has none), with the ranges they replaced
        "factor_changes_bytes": _engine_bytes(url, ("adjustment_factor_changes",))["adjustment_factor_changes"],
        "times": {k: {"median": statistics.median(v), "values": v} for k, v in times.items()},
    }


def storage(url: str, symbols: int, days: int, changed: float, history: int, log) -> dict:
    from benchmarks.bench_warehouse import synthetic_frame

    rng = np.random.default_rng(23)
    names = _names("S", symbols)
    base = synthetic_frame(history + days, rng)
    frames = {}
    for k, name in enumerate(names):
        frame = base.copy()
        frame[["open", "high", "low", "close", "vwap"]] *= 0.5 + (k % 89) / 40
        frames[name] = frame
    started = time.perf_counter()
    simulate(url, names, frames, days, changed, rng, log)
    seconds = time.perf_counter() - started
    tables = (*REVISION_TABLES, "ohlcv_daily", "column_blocks")
    rows, size = _row_counts(url, tables), _engine_bytes(url, tables)
    log(f"storage: {symbols:,} symbols x {days} days in {seconds:.0f} s: " + ", ".join(f"{t} {rows[t]:,} rows {size[t] / 1e6:.1f} MB" for t in tables))
    return {"symbols": symbols, "days": days, "changed": changed, "history": history, "seconds": seconds, "rows": rows, "bytes": size}


def run(args, log) -> dict:
    out = {}
    keep = getattr(args, "keep", None)
    with tempfile.TemporaryDirectory(prefix="mp-bench-pit-") as tmp:
        folder = Path(keep) if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        engines = [("sqlite", lambda name: f"sqlite:///{folder / (name + '.sqlite')}")]
        cluster = None
        if args.postgres:
            from market_pipeline_tests.postgres_cluster import PostgresCluster

            cluster = PostgresCluster().start()
            engines.append(("postgresql", cluster.create_database))
        try:
            for engine, make in engines:
                result = {}
                if args.symbols:
                    kept = folder / f"pit_reads-{args.symbols}x{args.years}-{args.days}d.sqlite" if keep and engine == "sqlite" else None
                    url = f"sqlite:///{kept}" if kept is not None else make("pit_reads")
                    result["reads"] = reads(url, args.symbols, args.years, args.days, args.changed, args.rounds, log, kept)
                if args.storage_symbols:
                    result["storage"] = storage(make("pit_storage"), args.storage_symbols, args.days, args.changed, args.history, log)
                out[engine] = result
        finally:
            if cluster is not None:
                from market_pipeline.warehouse.engine import dispose_engine

                for name in ("pit_reads", "pit_storage"):
                    dispose_engine(cluster.url(name))
                cluster.stop()
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def projection(s: dict, symbols: int = 10_000, days: int = 252) -> dict:
    """The revisions a year of daily refreshes of `symbols` stocks keeps, from the bytes per row measured
    (`storage`): every refresh adds one `ohlcv_insertions` row per symbol (its new session) and one
    `ohlcv_revisions` row per re-fetched bar that came back changed (3 a day, `changed` of them)."""
    per_row = {t: s["bytes"][t] / s["rows"][t] for t in ("ohlcv_revisions", "ohlcv_insertions") if s["rows"][t]}
    rows = {"ohlcv_revisions": symbols * days * 3 * s["changed"], "ohlcv_insertions": symbols * days}
    sized = {t: rows[t] * per_row.get(t, 0) for t in rows}
    return {"symbols": symbols, "days": days, "rows": rows, "bytes_per_row": per_row, "bytes": sized, "total_bytes": sum(sized.values())}


def table(results: dict) -> str:
    lines = []
    for engine in ("sqlite", "postgresql"):
        r = results.get(engine, {}).get("reads")
        if r:
            lines += [f"\n{engine}: read_bars of {r['symbols']:,} x {r['years']} years ({r['bars']:,} bars) after {r['days']} daily "
                      f"refreshes ({r['rows']['ohlcv_revisions']:,} revised bars kept)\n",
                      "| Adjustment | Now (s) | As of a year back | As of six months back | As of a week back |", "|---|---:|---:|---:|---:|"]
            for a in ADJUSTMENTS:
                now = r["times"][f"now {a}"]["median"]
                cells = [f"{r['times'][f'{label} {a}']['median']:.2f} s ({r['times'][f'{label} {a}']['median'] / now:.2f}x)"
                         for label in ("a year back", "six months back", "a week back")]
                lines.append(f"| {a} | {now:.2f} | " + " | ".join(cells) + " |")
            lines.append(f"\nas_of reads equal the reads made then: {all(r['equal'].values())}")
        s = results.get(engine, {}).get("storage")
        if s:
            lines += [f"\n{engine}: {s['symbols']:,} symbols x {s['days']} daily refreshes (3 sessions re-fetched, "
                      f"{s['changed']:.0%} of them changed)\n", "| Table | Rows | MB | Bytes per row |", "|---|---:|---:|---:|"]
            for t, n in s["rows"].items():
                b = s["bytes"][t]
                lines.append(f"| {t} | {n:,} | {b / 1e6:.1f} | {b / n if n else 0:.0f} |")
            p = projection(s)
            lines.append(f"\nprojected for {p['symbols']:,} stocks x {p['days']} refreshes: {p['total_bytes'] / 1e6:.0f} MB "
                         + f"({p['rows']['ohlcv_revisions']:,.0f} revised bars, {p['rows']['ohlcv_insertions']:,.0f} insertion rows)")
    lines.append(f"\nload average {results['load_average']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000, help="symbols of the read panel (0: no reads)")
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--days", type=int, default=252, help="daily refreshes simulated")
    parser.add_argument("--changed", type=float, default=0.03, help="share of the re-fetched bars that come back changed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storage-symbols", type=int, default=10_000, help="symbols of the storage measurement (0: none)")
    parser.add_argument("--history", type=int, default=30, help="sessions each storage symbol holds before the simulated days")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the read panel's SQLite warehouse in this folder and reuse it when it is there (the year of refreshes is simulated once)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    results = run(args, log)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


def scenario(bench):
    """Scenario 15 of `make bench` (benchmarks.run_all): point-in-time reads of the N x Y panel after a
    year of daily revisions, beside the current read (SQLite, and PostgreSQL with --postgres); the
    revisions' storage at --scale-symbols."""
    from benchmarks.report import Section

    args = argparse.Namespace(
        symbols=len(bench.symbols), years=bench.years, days=252, changed=0.03, rounds=bench.repeats,
        storage_symbols=min(bench.args.scale_symbols, STORAGE_SYMBOLS), history=30, postgres=bool(bench.postgres),
    )
    results = run(args, bench.log)
    section = Section(
        "point_in_time" + bench.key_suffix,
        f"15. Point-in-time reads after a year of daily revisions{bench.label}",
        f"`read_bars(..., as_of=...)` of {args.symbols} stocks x {args.years} years whose last 252 sessions arrived one a "
        "day (3 sessions re-fetched a day, 3% of them changed, dividends recorded on their dates), beside today's read "
        "on the same warehouse; interleaved rounds, medians. The revisions kept by a year of such refreshes of "
        f"{args.storage_symbols:,} stocks, projected to 10,000 from the bytes per row measured. Target: an as_of read of the whole panel at most 1.5x the current read.",
        ["Engine", "Read", "Now (s)", "As of a year back", "As of six months back", "As of a week back", "Target"],
        align="llrrrrr",
    )
    for engine in ("sqlite", "postgresql"):
        r = results.get(engine, {}).get("reads")
        if not r:
            continue
        for a in ADJUSTMENTS:
            now = r["times"][f"now {a}"]["median"]
            cells = [f"{r['times'][f'{label} {a}']['median']:.2f} s ({r['times'][f'{label} {a}']['median'] / now:.2f}x)"
                     for label in ("a year back", "six months back", "a week back")]
            section.row(engine, f"whole panel, {a}", f"{now:.2f}", *cells, "<= 1.5x")
        section.notes.append(f"{engine}: as_of reads equal the reads made at those instants: {all(r['equal'].values())}.")
        changes, size = r["rows"]["adjustment_factor_changes"], r.get("factor_changes_bytes", 0)
        if changes:
            per_year = size / r["symbols"] * 10_000 * 252 / r["days"]
            section.notes.append(
                f"{engine}: {changes:,} factor changes in that year kept the ranges they replaced in {size / 1e6:.1f} MB "
                f"({size / changes:,.0f} bytes each), about {per_year / 1e6:.0f} MB a year at 10,000 stocks of {r['years']} years."
            )
    for engine in ("sqlite", "postgresql"):
        s = results.get(engine, {}).get("storage")
        if s:
            kept = sum(s["bytes"][t] for t in REVISION_TABLES)
            section.notes.append(
                f"{engine}, {s['symbols']:,} stocks x {s['days']} refreshes: revisions tables {kept / 1e6:.0f} MB ("
                + ", ".join(f"{t} {s['rows'][t]:,} rows" for t in REVISION_TABLES) + f"); the bars {s['bytes']['ohlcv_daily'] / 1e6:.0f} MB."
            )
            p = projection(s)
            section.notes.append(
                f"{engine}, projected for {p['symbols']:,} stocks x {p['days']} refreshes: {p['total_bytes'] / 1e6:.0f} MB of revisions "
                f"({p['rows']['ohlcv_revisions']:,.0f} revised bars at {p['bytes_per_row'].get('ohlcv_revisions', 0):.0f} bytes, "
                f"{p['rows']['ohlcv_insertions']:,.0f} insertion rows at {p['bytes_per_row'].get('ohlcv_insertions', 0):.0f} bytes)."
            )
    section.notes.append(f"Load average at the end: {results['load_average']}.")
    section.data = results
    bench.keep["point_in_time"] = results
    return section


if __name__ == "__main__":
    sys.exit(main())
