"""Benchmark: the candidate designs of a columnar read path, side by side on the same bars.

Every candidate produces the frame `read_bars` returns (indexed by (symbol, date), the seven value
columns with their dtypes) for the whole panel, and the script checks each against today's
`read_bars`. Rounds are interleaved (each candidate once per round) so load noise hits all alike.

SQLite candidates (one warehouse file written by today's `BarStore`):

* rows, today          `read_bars` as it read before column blocks (row by row through sqlite3;
                       benchmarks.bench_reads.read_rows_path)
* rows, sqlite3        raw `fetchall()` of the same rows, then the same frame building
* rows, connectorx     connectorx (Rust, Arrow out) on the same table
* rows, ADBC           the ADBC SQLite driver (C, Arrow out) on the same table
* clustered, ADBC      the bars copied to a `WITHOUT ROWID` table keyed by (symbol, day) with the
                       day as an integer, read by ADBC
* clustered, cx        the same table read by connectorx
* blocks               Arrow IPC bytes per symbol-year in a SQL table, read with sqlite3 and decoded
                       by pyarrow into preallocated columns
* blocks, lz4 / zstd   the same blocks with the IPC format's buffer compression
* read_bars            the chosen design as shipped (warehouse.columns: blocks, seals, row tails,
                       one snapshot)
* Parquet (floor)      the same bars as one Parquet file, `pyarrow.parquet.read_table().to_pandas()`
                       (no index: the floor the targets are measured against)

PostgreSQL (with --postgres; a throwaway cluster): today's binary COPY per symbol, ADBC, connectorx,
a table clustered on (symbol, day), and the blocks as bytea through one binary COPY.

Write side: the cost of appending one bar to every symbol (a daily refresh) for rows only, the
clustered table, and rewriting each symbol's current-year block (what per symbol-year blocks without
a row tail would cost), at the panel's size.

    .venv/bin/python -m benchmarks.bench_read_candidates --symbols 100 --years 20 --rounds 3
    .venv/bin/python -m benchmarks.bench_read_candidates --symbols 1000 --years 20 --rounds 3 --postgres
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_warehouse import synthetic_frame
from market_pipeline.polygon.bars import BAR_COLUMNS

_VALUES = ("open", "high", "low", "close", "volume", "vwap", "transactions")
_FLOATS = ("open", "high", "low", "close", "volume", "vwap")


def _names(n: int) -> list[str]:
    from benchmarks.bench_corporate_actions import _names as names

    return names("C", n)


def frame_from_arrays(symbols: list[str], counts: np.ndarray, days: np.ndarray, floats: dict, tx: np.ndarray, tx_missing: np.ndarray) -> pd.DataFrame:
    """The read_bars frame from whole-panel column arrays (days as int days since 1970)."""
    days = np.asarray(days, dtype="int64")
    lo = int(days.min()) if len(days) else 0
    present = np.zeros((int(days.max()) - lo + 1) if len(days) else 0, dtype=bool)
    present[days - lo] = True
    level = np.flatnonzero(present) + lo
    codes = (np.cumsum(present) - 1)[days - lo]
    index = pd.MultiIndex(
        levels=[pd.Index(symbols, dtype="str"), pd.DatetimeIndex((level * 86_400_000_000_000).astype("datetime64[ns]"))],
        codes=[np.repeat(np.arange(len(symbols)), counts), codes], names=["symbol", "date"], verify_integrity=False,
    )
    data = {c: floats[c] for c in _FLOATS}
    data["transactions"] = pd.arrays.IntegerArray(tx, tx_missing)
    return pd.DataFrame(data, index=index, copy=False)


def frame_from_arrow(table, symbols: list[str]) -> pd.DataFrame:
    """The read_bars frame from an Arrow table (symbol, day as int or date32, values), ordered by symbol, day."""
    import pyarrow as pa
    import pyarrow.compute as pc

    symbol_col = table.column("symbol")
    counts = pc.value_counts(symbol_col)  # in order of first appearance
    names = counts.field("values").to_pylist()
    n = counts.field("counts").to_numpy()
    day = table.column("day")
    if pa.types.is_date32(day.type):
        day = day.cast(pa.int32())
    elif pa.types.is_string(day.type) or pa.types.is_large_string(day.type):
        day = day.cast(pa.date32()).cast(pa.int32())
    floats = {c: table.column(c).to_numpy().astype("float64", copy=False) for c in _FLOATS}
    for c in _FLOATS:
        if table.column(c).null_count:
            floats[c] = table.column(c).fill_null(np.nan).to_numpy()
    txc = table.column("transactions")
    tx_missing = txc.is_null().to_numpy(zero_copy_only=False)
    tx = txc.fill_null(0).to_numpy().astype("int64", copy=False)
    return frame_from_arrays(names, n, day.to_numpy(), floats, tx, tx_missing)


# ---- blocks -------------------------------------------------------------------------------------
def encode_block(frame: pd.DataFrame, compression) -> bytes:
    import pyarrow as pa

    days = frame["date"].to_numpy().astype("datetime64[D]").astype("int32")
    arrays = [pa.array(days, type=pa.int32())] + [pa.array(frame[c].to_numpy("float64")) for c in _FLOATS]
    tx = frame["transactions"]
    arrays.append(pa.array(tx.to_numpy("int64", na_value=0), mask=tx.isna().to_numpy(), type=pa.int64()))
    batch = pa.RecordBatch.from_arrays(arrays, names=["day", *_FLOATS, "transactions"])
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_blocks(payloads: list[bytes], symbols: list[str], counts: np.ndarray) -> pd.DataFrame:
    import pyarrow as pa

    total = int(counts.sum())
    days = np.empty(total, dtype="int32")
    floats = {c: np.empty(total, dtype="float64") for c in _FLOATS}
    tx = np.empty(total, dtype="int64")
    missing = np.zeros(total, dtype=bool)
    at = 0
    for payload in payloads:
        batch = pa.ipc.open_stream(payload).read_next_batch()
        n = batch.num_rows
        days[at : at + n] = batch.column(0).to_numpy()
        for i, c in enumerate(_FLOATS, start=1):
            col = batch.column(i)
            floats[c][at : at + n] = col.to_numpy(zero_copy_only=False) if col.null_count == 0 else col.fill_null(np.nan).to_numpy()
        col = batch.column(7)
        if col.null_count:
            missing[at : at + n] = col.is_null().to_numpy(zero_copy_only=False)
            tx[at : at + n] = col.fill_null(0).to_numpy()
        else:
            tx[at : at + n] = col.to_numpy()
        at += n
    return frame_from_arrays(symbols, counts, days, floats, tx, missing)


# ---- setup --------------------------------------------------------------------------------------
def build(folder: Path, names: list[str], years: int, pg_url: str | None, log) -> dict:
    from market_pipeline.warehouse.store import BarStore

    rng = np.random.default_rng(3)
    n_bars = 252 * years
    base = synthetic_frame(n_bars, rng)
    frames = {}
    for k, name in enumerate(names):
        frame = base.copy()
        scale = 0.5 + (k % 97) / 50
        frame[["open", "high", "low", "close", "vwap"]] *= scale
        frames[name] = frame
    out = {"frames": frames}
    url = f"sqlite:///{folder / 'rows.sqlite'}"
    store = BarStore(url)
    started = time.perf_counter()
    store.upsert_many(list(frames.items()))
    log(f"rows warehouse written in {time.perf_counter() - started:.1f} s")
    out["sqlite_url"], out["sqlite_path"] = url, str(folder / "rows.sqlite")

    import sqlite3

    db = sqlite3.connect(folder / "rows.sqlite")
    db.executescript(
        """
        CREATE TABLE bars_clustered (symbol TEXT NOT NULL, day INTEGER NOT NULL, open REAL NOT NULL,
            high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL, vwap REAL,
            transactions INTEGER, fetched_at REAL NOT NULL, PRIMARY KEY (symbol, day)) WITHOUT ROWID;
        INSERT INTO bars_clustered SELECT symbol, CAST(julianday(date) - 2440587.5 AS INTEGER), open, high,
            low, close, volume, vwap, transactions, julianday(fetched_at) FROM ohlcv_daily ORDER BY symbol, date;
        CREATE TABLE blocks (symbol TEXT NOT NULL, year INTEGER NOT NULL, rows INTEGER NOT NULL,
            payload BLOB NOT NULL, PRIMARY KEY (symbol, year));
        CREATE TABLE blocks_lz4 (symbol TEXT NOT NULL, year INTEGER NOT NULL, rows INTEGER NOT NULL,
            payload BLOB NOT NULL, PRIMARY KEY (symbol, year));
        CREATE TABLE blocks_zstd (symbol TEXT NOT NULL, year INTEGER NOT NULL, rows INTEGER NOT NULL,
            payload BLOB NOT NULL, PRIMARY KEY (symbol, year));
        """
    )
    sizes = {}
    for table, compression in (("blocks", None), ("blocks_lz4", "lz4"), ("blocks_zstd", "zstd")):
        rows, size = [], 0
        for name, frame in frames.items():
            years_of = frame["date"].dt.year.to_numpy()
            for year in np.unique(years_of):
                payload = encode_block(frame[years_of == year], compression)
                size += len(payload)
                rows.append((name, int(year), int((years_of == year).sum()), payload))
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", rows)
        sizes[table] = size
    db.commit()
    db.close()
    out["block_bytes"] = sizes
    from market_pipeline.warehouse.engine import dispose_engine

    dispose_engine(url)  # checkpoints the WAL: the copy below is whole
    shutil.copy(folder / "rows.sqlite", folder / "write.sqlite")
    out["write_path"] = str(folder / "write.sqlite")

    import pyarrow as pa
    import pyarrow.parquet as pq

    panel = pd.concat([f.assign(symbol=name) for name, f in frames.items()], ignore_index=True)[["symbol", *BAR_COLUMNS]]
    pq.write_table(pa.Table.from_pandas(panel, preserve_index=False), folder / "panel.parquet")
    out["parquet_path"] = str(folder / "panel.parquet")
    out["parquet_bytes"] = os.path.getsize(folder / "panel.parquet")
    out["bars"] = len(panel)
    if pg_url:
        pg = BarStore(pg_url)
        started = time.perf_counter()
        pg.upsert_many(list(frames.items()))
        log(f"PostgreSQL rows written in {time.perf_counter() - started:.1f} s")
        import psycopg2

        conn = psycopg2.connect(pg_url.replace("postgresql+psycopg2://", "postgresql://"))
        cur = conn.cursor()
        cur.execute(
            """
            CREATE TABLE bars_clustered (symbol varchar(32) NOT NULL, day int4 NOT NULL, open float8 NOT NULL,
                high float8 NOT NULL, low float8 NOT NULL, close float8 NOT NULL, volume float8 NOT NULL,
                vwap float8, transactions int8, fetched_at timestamp NOT NULL, PRIMARY KEY (symbol, day));
            INSERT INTO bars_clustered SELECT symbol, date - DATE '1970-01-01', open, high, low, close, volume,
                vwap, transactions, fetched_at FROM ohlcv_daily ORDER BY symbol, date;
            CLUSTER bars_clustered USING bars_clustered_pkey;
            CREATE TABLE blocks (symbol varchar(32) NOT NULL, year int4 NOT NULL, rows int4 NOT NULL,
                payload bytea NOT NULL, PRIMARY KEY (symbol, year));
            ALTER TABLE blocks ALTER COLUMN payload SET STORAGE EXTERNAL;
            """
        )
        src = sqlite3.connect(folder / "rows.sqlite")
        for row in src.execute("SELECT symbol, year, rows, payload FROM blocks"):
            cur.execute("INSERT INTO blocks VALUES (%s, %s, %s, %s)", (row[0], row[1], row[2], psycopg2.Binary(row[3])))
        src.close()
        cur.execute("ANALYZE")
        conn.commit()
        conn.close()
        out["pg_url"] = pg_url
    return out


# ---- readers ------------------------------------------------------------------------------------
def rows_today(ctx, names):
    from benchmarks.bench_reads import read_rows_path

    return read_rows_path(names, "none", ctx["url"])


def chosen(ctx, names):
    from market_pipeline.warehouse.reader import read_bars

    return read_bars(names, url=ctx["url"], adjustment="none")


def rows_sqlite3(ctx, names):
    import sqlite3

    from market_pipeline.warehouse.store import _frame_from_rows

    db = sqlite3.connect(ctx["sqlite_path"])
    frames = []
    counts = []
    for name in names:
        rows = db.execute(f"SELECT date, {', '.join(_VALUES)} FROM ohlcv_daily WHERE symbol = ? ORDER BY date", (name,)).fetchall()
        frames.append(_frame_from_rows(rows))
        counts.append(len(rows))
    db.close()
    flat = pd.concat(frames, ignore_index=True)
    days = flat["date"].to_numpy().astype("datetime64[D]").astype("int64")
    tx = flat["transactions"]
    return frame_from_arrays(names, np.array(counts), days, {c: flat[c].to_numpy() for c in _FLOATS},
                             tx.to_numpy("int64", na_value=0), tx.isna().to_numpy())


_ROWS_SQL = f"SELECT symbol, date AS day, {', '.join(_VALUES)} FROM ohlcv_daily ORDER BY symbol, date"
_CLUSTERED_SQL = f"SELECT symbol, day, {', '.join(_VALUES)} FROM bars_clustered ORDER BY symbol, day"


def _cx(url, sql):
    import connectorx as cx

    return cx.read_sql(url, sql, return_type="arrow")


def _adbc_sqlite(path, sql):
    import adbc_driver_sqlite.dbapi as adbc

    with adbc.connect(path) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "65536"})
        cur.execute(sql)
        return cur.fetch_arrow_table()


def rows_connectorx(ctx, names):
    return frame_from_arrow(_cx("sqlite://" + ctx["sqlite_path"], _ROWS_SQL), names)


def rows_adbc(ctx, names):
    return frame_from_arrow(_adbc_sqlite(ctx["sqlite_path"], _ROWS_SQL), names)


def clustered_adbc(ctx, names):
    return frame_from_arrow(_adbc_sqlite(ctx["sqlite_path"], _CLUSTERED_SQL), names)


def clustered_cx(ctx, names):
    return frame_from_arrow(_cx("sqlite://" + ctx["sqlite_path"], _CLUSTERED_SQL), names)


def _blocks(table):
    def read(ctx, names):
        import sqlite3

        db = sqlite3.connect(ctx["sqlite_path"])
        rows = db.execute(f"SELECT symbol, rows, payload FROM {table} ORDER BY symbol, year").fetchall()
        db.close()
        counts = pd.Series([r[1] for r in rows]).groupby([r[0] for r in rows], sort=False).sum()
        return decode_blocks([r[2] for r in rows], list(counts.index), counts.to_numpy())

    return read


def parquet_floor(ctx, names):
    import pyarrow.parquet as pq

    return pq.read_table(ctx["parquet_path"]).to_pandas()


def pg_today(ctx, names):
    from benchmarks.bench_reads import read_rows_path

    return read_rows_path(names, "none", ctx["pg_url"])


def pg_chosen(ctx, names):
    from market_pipeline.warehouse.reader import read_bars

    return read_bars(names, url=ctx["pg_url"], adjustment="none")


def _pg_adbc(url, sql):
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(url.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def pg_rows_adbc(ctx, names):
    return frame_from_arrow(_pg_adbc(ctx["pg_url"], _ROWS_SQL), names)


def pg_rows_cx(ctx, names):
    return frame_from_arrow(_cx(ctx["pg_url"].replace("postgresql+psycopg2://", "postgresql://"), _ROWS_SQL), names)


def pg_clustered_adbc(ctx, names):
    return frame_from_arrow(_pg_adbc(ctx["pg_url"], _CLUSTERED_SQL), names)


def pg_blocks_copy(ctx, names):
    import psycopg2

    conn = psycopg2.connect(ctx["pg_url"].replace("postgresql+psycopg2://", "postgresql://"))
    stream = io.BytesIO()
    with conn.cursor() as cur:
        cur.copy_expert("COPY (SELECT symbol, rows, payload FROM blocks ORDER BY symbol, year) TO STDOUT WITH (FORMAT binary)", stream)
    conn.close()
    buf = stream.getbuffer()
    at = 19  # header
    symbols, counts, payloads = [], [], []
    while True:
        (fields,) = struct.unpack_from(">h", buf, at)
        at += 2
        if fields == -1:
            break
        (n,) = struct.unpack_from(">i", buf, at)
        symbol = bytes(buf[at + 4 : at + 4 + n]).decode()
        at += 4 + n
        at += 4
        (rows,) = struct.unpack_from(">i", buf, at)
        at += 4
        (n,) = struct.unpack_from(">i", buf, at)
        payloads.append(buf[at + 4 : at + 4 + n])
        at += 4 + n
        if symbols and symbols[-1] == symbol:
            counts[-1] += rows
        else:
            symbols.append(symbol)
            counts.append(rows)
    return decode_blocks(payloads, symbols, np.array(counts))


# ---- write side ---------------------------------------------------------------------------------
def write_costs(ctx, names, log) -> dict:
    """Seconds to append one bar to every symbol: rows only (today, through BarStore), the clustered
    table (executemany), and rows plus each symbol's current-year block rewritten from its rows."""
    import sqlite3

    from market_pipeline.warehouse.store import BarStore

    out = {}
    last = max(f["date"].iloc[-1] for f in ctx["frames"].values())
    day = last + pd.offsets.BDay(1)
    one = {name: f.tail(1).assign(date=[day]) for name, f in ctx["frames"].items()}
    store = BarStore(f"sqlite:///{ctx['write_path']}")
    started = time.perf_counter()
    store.upsert_many(list(one.items()))
    out["rows + blocks with a row tail (BarStore.upsert_many, as shipped)"] = time.perf_counter() - started

    db = sqlite3.connect(ctx["write_path"])
    d = int((day - pd.Timestamp("1970-01-01")).days) + 1
    started = time.perf_counter()
    db.executemany(
        "INSERT INTO bars_clustered VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, julianday('now')) "
        "ON CONFLICT (symbol, day) DO UPDATE SET close = excluded.close",
        [(name, d, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1) for name in names],
    )
    db.commit()
    out["clustered table (executemany)"] = time.perf_counter() - started

    started = time.perf_counter()
    year = day.year
    for name in names:
        rows = db.execute(
            f"SELECT date, {', '.join(_VALUES)} FROM ohlcv_daily WHERE symbol = ? AND date >= ? ORDER BY date", (name, f"{year}-01-01")
        ).fetchall()
        from market_pipeline.warehouse.store import _frame_from_rows

        payload = encode_block(_frame_from_rows(rows), None)
        db.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?)", (name, year, len(rows), payload))
    db.commit()
    out["current-year block rewritten per symbol (no row tail)"] = time.perf_counter() - started + out["rows + blocks with a row tail (BarStore.upsert_many, as shipped)"]
    db.close()
    for k, v in out.items():
        log(f"write: {k}: {v:.3f} s for {len(names)} symbols")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    names = _names(args.symbols)
    candidates = {
        "rows, today (read_bars before blocks)": rows_today,
        "rows, sqlite3 fetchall": rows_sqlite3,
        "rows, connectorx": rows_connectorx,
        "rows, ADBC": rows_adbc,
        "clustered WITHOUT ROWID, ADBC": clustered_adbc,
        "clustered WITHOUT ROWID, connectorx": clustered_cx,
        "blocks per symbol-year (IPC)": _blocks("blocks"),
        "blocks per symbol-year (IPC, lz4)": _blocks("blocks_lz4"),
        "blocks per symbol-year (IPC, zstd)": _blocks("blocks_zstd"),
        "read_bars: blocks per symbol-year + row tail (chosen)": chosen,
        "Parquet file, pyarrow (floor)": parquet_floor,
    }
    pg = {
        "PG rows, today (binary COPY per symbol)": pg_today,
        "PG rows, ADBC": pg_rows_adbc,
        "PG rows, connectorx": pg_rows_cx,
        "PG clustered, ADBC": pg_clustered_adbc,
        "PG blocks per symbol-year (bytea, binary COPY)": pg_blocks_copy,
        "PG read_bars: blocks + row tail (chosen)": pg_chosen,
    }
    cluster = None
    with tempfile.TemporaryDirectory(prefix="mp-read-candidates-") as tmp:
        try:
            pg_url = None
            if args.postgres:
                from market_pipeline_tests.postgres_cluster import PostgresCluster

                cluster = PostgresCluster().start()
                pg_url = cluster.create_database("candidates")
                candidates.update(pg)
            ctx = build(Path(tmp), names, args.years, pg_url, log)
            ctx["url"] = ctx["sqlite_url"]
            if args.only:
                wanted = [w.strip() for w in args.only.split(",")]
                candidates = {k: v for k, v in candidates.items() if any(w in k for w in wanted)}
            log(f"{ctx['bars']:,} bars; SQLite file {os.path.getsize(ctx['sqlite_path']) / 1e6:,.0f} MB (rows, clustered "
                f"copy and three block tables), Parquet {ctx['parquet_bytes'] / 1e6:,.1f} MB; block bytes "
                + ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in ctx["block_bytes"].items()))
            reference = rows_today(ctx, names)
            timings: dict[str, list[float]] = {k: [] for k in candidates}
            for name, fn in candidates.items():
                frame = fn(ctx, names)
                if "floor" not in name:
                    pd.testing.assert_frame_equal(frame, reference, check_index_type=False)
            log("every candidate's frame equals read_bars'")
            for r in range(args.rounds):
                for name, fn in candidates.items():
                    t0 = time.perf_counter()
                    fn(ctx, names)
                    timings[name].append(time.perf_counter() - t0)
                log(f"round {r + 1} done")
            floor = statistics.median(timings["Parquet file, pyarrow (floor)"]) if "Parquet file, pyarrow (floor)" in timings else None
            print(f"\n{args.symbols} x {args.years} years ({ctx['bars']:,} bars), median of {args.rounds} interleaved rounds; "
                  f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}\n")
            print("| Candidate | Median (s) | Min (s) | vs Parquet floor |\n|---|---:|---:|---:|")
            for name, t in timings.items():
                ratio = f"{statistics.median(t) / floor:.2f}x" if floor else ""
                print(f"| {name} | {statistics.median(t):.3f} | {min(t):.3f} | {ratio} |")
            print()
            costs = write_costs(ctx, names, log)
            print("| Append one bar to every symbol | Seconds |\n|---|---:|")
            for k, v in costs.items():
                print(f"| {k} | {v:.3f} |")
        finally:
            if cluster is not None:
                cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
