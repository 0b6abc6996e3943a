"""Column blocks: the warehouse's columnar read path (the bars of `read_bars`, the CLI export, the checks
and `symbol_stats`), on SQLite and PostgreSQL alike.

A table of rows keyed by (symbol, date) (a `Dataset`: `ohlcv_daily`, the bars) keeps, beside its rows,
each symbol's older rows as **column blocks**: one per symbol and calendar year in `column_blocks`, the
year's dates and values as the bytes of an Arrow IPC stream. The rows stay the store of record; the
blocks are a second form of the same values, written in the same transaction as the rows they cover,
so a reader sees both as of one moment:

* `column_seals` holds, per symbol, the date through which its rows are in blocks (`sealed_through`)
  and how many they are. The rows after it are the symbol's **tail**, read as rows. A write that only
  adds new dates (a daily refresh) leaves the blocks alone; once a symbol's tail reaches its limit
  (`TAIL_ROWS` to twice that, spread by symbol so that symbols loaded together do not all seal on the
  same day) the write that reached it folds the tail into the blocks: the current year's block is
  rewritten, nothing older. A first load seals the whole history at once, from the frame in hand.
* Triggers on the rows table mark a block **out of step** in `column_dirty` whenever a row dated on
  or before the seal is deleted or changed in any value or key, whoever writes it (this code, a
  rename, an operator's SQL); a value rewritten unchanged marks nothing. On PostgreSQL (statement
  triggers) an insert under the seal is marked too. SQLite has no insert trigger (its program would
  run for every bar written): a read counts each sealed symbol's rows under its seal and their
  highest rowid from the index against the seal's `rows` and `row_mark`, and a write looks at the
  years it wrote under the seal. The next write of the symbol rebuilds the marked years.
* A read takes one snapshot (`snapshot`: a read transaction on SQLite, REPEATABLE READ on PostgreSQL)
  and serves each symbol from its blocks plus its tail, unless its blocks cannot be trusted: marked
  out of step, of another block format, fewer than the seal says, or unreadable bytes. Then that
  symbol is read from its rows, and the read logs one line saying so. A read never writes.

Blocks are Arrow IPC streams (uncompressed: LZ4 or ZSTD made a whole-panel read 3-6x slower for at
most 20% fewer bytes) with the schema `date` (date32) and the dataset's columns: floats as float64
with NaN for NULL (the rows never hold NaN; every writer stores NULL instead), integers as int64 with
a validity bitmap. `FORMAT` is stored with every block; a block of any other format is never decoded.

The reading API, for code built on this path (point-in-time reads, other per-symbol daily tables):

* `snapshot(engine)`: a connection whose reads all see one moment;
* `read(conn, dataset, symbols, start, end, since)`: a `Columns`: the symbols' rows as numpy
  columns, symbol after symbol in the order asked, each symbol's rows by date;
* `Columns.frame()` (the (symbol, date)-indexed frame of `read_bars`), `Columns.frames()` (one bar
  frame per symbol), `Columns.arrow()` (an Arrow table, zero-copy into polars with `pl.from_arrow`),
  `Columns.segment(symbol)` and `Columns.positions(symbols, days)` (where given rows are, to patch
  values in place);
* a new table of the same shape gets its `Dataset`, its triggers (`trigger_sql`) in its migration,
  and calls `after_write` in the transaction of every write.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import sqlalchemy as sa

log = logging.getLogger(__name__)

FORMAT = 1  # the block format (schema and encoding) this code writes and reads
TAIL_ROWS = 24  # a symbol's tail is sealed into blocks once it holds 24-47 rows (by symbol)
_META_CHUNK = 500  # symbols per metadata query (SQLite takes at most 32,766 bound values)
_BLOCK_CHUNK = 100  # symbols whose blocks are in memory at once during a read
_LOW, _HIGH = dt.date(1, 1, 1), dt.date(9999, 12, 31)
_EPOCH = np.datetime64("1970-01-01", "D")
_NO_INT = -(2**63)  # stands for NULL in a PostgreSQL binary COPY of an integer column
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"


@dataclass(frozen=True)
class Dataset:
    """A table of per-symbol daily rows keyed by (symbol, date) whose values are read as columns."""

    table: str
    floats: tuple[str, ...]  # float64 columns (NULL <-> NaN)
    integers: tuple[str, ...] = ()  # nullable int64 columns

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.floats, *self.integers)


OHLCV = Dataset("ohlcv_daily", ("open", "high", "low", "close", "volume", "vwap"), ("transactions",))


def tail_limit(symbol: str) -> int:
    """The tail length at which a symbol's rows are sealed into blocks (TAIL_ROWS..2*TAIL_ROWS-1)."""
    return TAIL_ROWS + zlib.crc32(symbol.encode()) % TAIL_ROWS


# ---- arrays of rows -----------------------------------------------------------------------------
@dataclass
class _Rows:
    """Rows as columns: `days` int32 (days since 1970-01-01), values per column, NULL masks of the
    integer columns; `owner` (int32, optional) the index of the request each row answers."""

    days: np.ndarray
    values: dict[str, np.ndarray]
    missing: dict[str, np.ndarray]
    owner: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.days)

    def take(self, selector) -> "_Rows":
        return _Rows(
            self.days[selector], {c: v[selector] for c, v in self.values.items()},
            {c: m[selector] for c, m in self.missing.items()}, None if self.owner is None else self.owner[selector],
        )


def _empty_rows(ds: Dataset) -> _Rows:
    values = {c: np.empty(0, "float64") for c in ds.floats} | {c: np.empty(0, "int64") for c in ds.integers}
    return _Rows(np.empty(0, "int32"), values, {c: np.empty(0, bool) for c in ds.integers}, np.empty(0, "int32"))


def _concat(ds: Dataset, parts: Sequence[_Rows]) -> _Rows:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty_rows(ds)
    if len(parts) == 1:
        return parts[0]
    return _Rows(
        np.concatenate([p.days for p in parts]),
        {c: np.concatenate([p.values[c] for p in parts]) for c in ds.columns},
        {c: np.concatenate([p.missing[c] for p in parts]) for c in ds.integers},
    )


def _frame_days(frame: pd.DataFrame) -> np.ndarray:
    """A frame's `date` column as int32 days since 1970-01-01."""
    return (np.asarray(frame["date"].to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]") - _EPOCH).astype("int32")


def rows_of_frame(ds: Dataset, frame: pd.DataFrame) -> _Rows:
    """A frame's rows (a `date` column and the dataset's columns), converted exactly as the store writes them."""
    days = _frame_days(frame)
    values, missing = {}, {}
    for c in ds.floats:
        values[c] = frame[c].to_numpy(dtype="float64", na_value=np.nan)
    for c in ds.integers:
        column = frame[c]
        if not isinstance(column.dtype, pd.Int64Dtype):
            column = column.astype("Int64")
        missing[c] = column.isna().to_numpy()
        values[c] = column.to_numpy(dtype="int64", na_value=0)
    return _Rows(days, values, missing)


def _years(days: np.ndarray) -> np.ndarray:
    return (days.astype("datetime64[D]").astype("datetime64[Y]").astype("int64") + 1970).astype("int64")


def _day(value: dt.date) -> int:
    return (value - dt.date(1970, 1, 1)).days


def _date(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(day))


# ---- block bytes --------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _schema(ds: Dataset):
    import pyarrow as pa

    return pa.schema([("date", pa.date32())] + [(c, pa.float64()) for c in ds.floats] + [(c, pa.int64()) for c in ds.integers])


def _batch(ds: Dataset, rows: _Rows):
    import pyarrow as pa

    days = np.ascontiguousarray(rows.days, dtype="int32")
    arrays = [pa.Array.from_buffers(pa.date32(), len(days), [None, pa.py_buffer(days)])]
    arrays += [pa.array(np.ascontiguousarray(rows.values[c], dtype="float64")) for c in ds.floats]
    arrays += [
        pa.array(rows.values[c], type=pa.int64(), mask=rows.missing[c] if rows.missing[c].any() else None) for c in ds.integers
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=_schema(ds))


def _ipc(batch) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def encode(ds: Dataset, rows: _Rows) -> bytes:
    """One block's bytes: an Arrow IPC stream of one record batch."""
    return _ipc(_batch(ds, rows))


def encode_years(ds: Dataset, rows: _Rows) -> list[tuple[int, int, bytes]]:
    """(year, rows, bytes) of each calendar year of rows ordered by date: one batch, sliced."""
    if not len(rows):
        return []
    batch = _batch(ds, rows)
    years = _years(rows.days)
    cuts = np.flatnonzero(years[1:] != years[:-1]) + 1
    edges = [0, *cuts.tolist(), len(rows)]
    return [(int(years[a]), b - a, _ipc(batch.slice(a, b - a))) for a, b in zip(edges[:-1], edges[1:])]


@lru_cache(maxsize=16)
def _stream_ends(ds: Dataset) -> tuple[bytes, bytes]:
    """The bytes every block of `ds` starts with (the schema message) and ends with (the end mark)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, _schema(ds)):
        pass
    empty = sink.getvalue().to_pybytes()  # schema message + end of stream
    return empty[:-8], empty[-8:]


class BlockError(ValueError):
    """Block bytes that do not decode to the dataset's schema."""


def decode(ds: Dataset, payloads: Sequence) -> _Rows:
    """The rows of blocks, one after the other (bytes-like payloads)."""
    import pyarrow as pa

    if not payloads:
        return _empty_rows(ds)
    schema = _schema(ds)
    head, tail = _stream_ends(ds)
    try:
        if all(bytes(p[: len(head)]) == head and bytes(p[-len(tail):]) == tail for p in payloads):
            # every block is this schema's message, one batch and the end mark: their batches read as
            # one stream (one reader in C++ instead of one per block)
            stream = b"".join([head, *(memoryview(p)[len(head) : len(p) - len(tail)] for p in payloads), tail])
            table = pa.ipc.open_stream(stream).read_all()
            if table.num_rows and len(table.column(0).chunks) != len(payloads):
                raise BlockError("a block of more or fewer than one batch")
        else:
            batches = [pa.ipc.open_stream(p if isinstance(p, bytes) else pa.py_buffer(p)).read_next_batch() for p in payloads]
            if any(not b.schema.equals(schema) for b in batches):
                raise BlockError("a block of another schema")
            table = pa.Table.from_batches(batches, schema=schema)
    except (pa.ArrowException, OSError, StopIteration) as exc:
        raise BlockError(f"undecodable block: {exc}") from exc
    if not table.schema.equals(schema):
        raise BlockError("a block of another schema")
    days = table.column("date").cast(pa.int32()).to_numpy()
    values = {c: table.column(c).to_numpy() for c in ds.floats}
    missing = {}
    for c in ds.integers:
        column = table.column(c)
        values[c] = (column.fill_null(0) if column.null_count else column).to_numpy().astype("int64", copy=False)
        mask = np.zeros(len(days), dtype=bool)
        if column.null_count:
            at = 0
            for chunk in column.chunks:
                if chunk.null_count:
                    mask[at : at + len(chunk)] = chunk.is_null().to_numpy(zero_copy_only=False)
                at += len(chunk)
        missing[c] = mask
    return _Rows(np.asarray(days, dtype="int32"), values, missing)


# ---- SQL helpers ----------------------------------------------------------------------------------
def _marker(conn: sa.Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _fetch(conn: sa.Connection, sql: str, params) -> list[tuple]:
    result = conn.exec_driver_sql(sql, tuple(params))
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def pg_copy(conn: sa.Connection, sql: str, params: tuple, stream) -> None:
    """Run a COPY on this connection's transaction (psycopg2's copy_expert: `stream` is read from or
    written to). DBAPI errors come out as SQLAlchemy errors, and a lost connection is invalidated
    like any other statement's, so the pool never hands it out again."""
    dbapi_connection = conn.connection.dbapi_connection
    try:
        with dbapi_connection.cursor() as cursor:
            statement = cursor.mogrify(sql, params).decode() if params else sql
            cursor.copy_expert(statement, stream, size=1 << 20)
    except conn.dialect.loaded_dbapi.Error as exc:
        disconnected = conn.dialect.is_disconnect(exc, dbapi_connection, None)
        if disconnected:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            sql, params, exc, conn.dialect.loaded_dbapi.Error, connection_invalidated=disconnected,
            dialect=conn.dialect,
        ) from exc


def _copy_out(conn: sa.Connection, query: str, params: tuple) -> memoryview:
    stream = io.BytesIO()
    pg_copy(conn, f"COPY ({query}) TO STDOUT WITH (FORMAT binary)", params, stream)
    payload = stream.getbuffer()
    if payload[: len(_COPY_HEADER)] != _COPY_HEADER:
        raise RuntimeError("unexpected binary COPY stream from PostgreSQL")
    return payload


def _copy_fields(payload: memoryview) -> Iterable[list]:
    """The rows of a binary COPY stream of variable-width fields, as lists of memoryviews (None: NULL)."""
    at, unpack_h, unpack_i = len(_COPY_HEADER), struct.Struct(">h").unpack_from, struct.Struct(">i").unpack_from
    while True:
        (count,) = unpack_h(payload, at)
        at += 2
        if count == -1:
            return
        fields = []
        for _ in range(count):
            (size,) = unpack_i(payload, at)
            at += 4
            if size < 0:
                fields.append(None)
            else:
                fields.append(payload[at : at + size])
                at += size
        yield fields


# ---- reading rows ---------------------------------------------------------------------------------
def read_rows(conn: sa.Connection, ds: Dataset, bounds: Sequence[tuple[str, dt.date | None, dt.date | None]]) -> _Rows:
    """The rows of several (symbol, first date, last date) ranges (None: open), range after range,
    each by date; `owner` says which range a row answers. One statement per 500 ranges."""
    parts = []
    for offset, part in ((i, bounds[i : i + _META_CHUNK]) for i in range(0, len(bounds), _META_CHUNK)):
        rows = _pg_rows(conn, ds, part) if conn.dialect.name == "postgresql" else _sqlite_rows(conn, ds, part)
        rows.owner = rows.owner + offset
        parts.append(rows)
    if not parts:
        return _empty_rows(ds)
    out = _concat(ds, parts)
    out.owner = np.concatenate([p.owner for p in parts]) if len(parts) > 1 else parts[0].owner
    return out


def _sqlite_rows(conn: sa.Connection, ds: Dataset, bounds) -> _Rows:
    # CROSS JOIN: SQLite walks the ranges in the order given and each one through the primary key,
    # so the rows come range by range and by date (checked below all the same)
    values = ", ".join(f"d.{c}" for c in ds.columns)
    ranges = ", ".join(["(?, ?, ?, ?)"] * len(bounds))
    params = []
    for k, (symbol, lo, hi) in enumerate(bounds):
        params += [k, symbol, (lo or _LOW).isoformat(), (hi or _HIGH).isoformat()]
    rows = _fetch(
        conn,
        f"WITH s(k, symbol, lo, hi) AS (VALUES {ranges}) "
        f"SELECT s.k, CAST(julianday(d.date) - 2440587.5 AS INTEGER), {values} "
        f"FROM s CROSS JOIN {ds.table} d WHERE d.symbol = s.symbol AND d.date >= s.lo AND d.date <= s.hi",
        params,
    )
    if not rows:
        return _empty_rows(ds)
    table = np.array(rows, dtype=object)
    owner = table[:, 0].astype("int32")
    days = table[:, 1].astype("int32")
    values_out, missing = {}, {}
    for i, c in enumerate(ds.columns, start=2):
        column = table[:, i]
        if c in ds.floats:
            values_out[c] = column.astype("float64")
        else:
            mask = column == None  # noqa: E711 (elementwise)
            missing[c] = mask
            values_out[c] = np.where(mask, 0, column).astype("int64")
    out = _Rows(days, values_out, missing, owner)
    order_ok = len(days) < 2 or bool(((owner[1:] > owner[:-1]) | ((owner[1:] == owner[:-1]) & (days[1:] > days[:-1]))).all())
    return out if order_ok else out.take(np.lexsort((days, owner)))


def _pg_row_dtype(ds: Dataset) -> np.dtype:
    fields = [("fields", ">i2"), ("k_len", ">i4"), ("k", ">i4"), ("day_len", ">i4"), ("day", ">i4")]
    for c in ds.floats:
        fields += [(f"{c}_len", ">i4"), (c, ">f8")]
    for c in ds.integers:
        fields += [(f"{c}_len", ">i4"), (c, ">i8")]
    return np.dtype(fields)


def _pg_rows(conn: sa.Connection, ds: Dataset, bounds) -> _Rows:
    """A binary COPY of fixed-width rows (NULL as NaN / _NO_INT), parsed with numpy."""
    values = ", ".join(
        [f"COALESCE(d.{c}, 'NaN'::float8)" for c in ds.floats] + [f"COALESCE(d.{c}, '{_NO_INT}'::int8)" for c in ds.integers]
    )
    query = (
        f"SELECT s.k::int4, (d.date - DATE '1970-01-01')::int4, {values} "
        "FROM unnest(%s::int4[], %s::text[], %s::date[], %s::date[]) AS s(k, symbol, lo, hi) "
        f"CROSS JOIN LATERAL (SELECT * FROM {ds.table} t WHERE t.symbol = s.symbol AND t.date BETWEEN s.lo AND s.hi) d "
        "ORDER BY s.k, d.date"
    )
    params = (
        list(range(len(bounds))), [b[0] for b in bounds], [b[1] or _LOW for b in bounds], [b[2] or _HIGH for b in bounds],
    )
    payload = _copy_out(conn, query, params)
    row = _pg_row_dtype(ds)
    count, extra = divmod(len(payload) - len(_COPY_HEADER) - len(_COPY_TRAILER), row.itemsize)
    if extra:
        raise RuntimeError(f"unexpected binary COPY stream from PostgreSQL reading {ds.table}")
    if count == 0:
        return _empty_rows(ds)
    data = np.frombuffer(payload, dtype=row, count=count, offset=len(_COPY_HEADER))
    values_out, missing = {}, {}
    for c in ds.floats:
        values_out[c] = data[c].astype("float64")
    for c in ds.integers:
        raw = data[c].astype("int64")
        missing[c] = raw == _NO_INT
        values_out[c] = np.where(missing[c], 0, raw)
    return _Rows(data["day"].astype("int32"), values_out, missing, data["k"].astype("int32"))


# ---- snapshots ------------------------------------------------------------------------------------
@contextmanager
def snapshot(engine: sa.Engine):
    """A connection whose reads all see the warehouse as of one moment (and never write)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        elif not conn.connection.dbapi_connection.in_transaction:
            conn.exec_driver_sql("BEGIN")  # deferred: the first read fixes the snapshot (WAL)
        yield conn


# ---- block state ----------------------------------------------------------------------------------
@dataclass
class _State:
    seals: dict[str, tuple[dt.date, int]]  # symbol -> (sealed_through, rows in blocks)
    blocks: dict[str, dict[int, tuple[int, int]]]  # symbol -> year -> (rows, format)
    dirty: dict[str, set[int]]  # symbol -> years marked out of step

    def trouble(self, symbol: str) -> str | None:
        """Why the symbol's blocks cannot be served (None: they can)."""
        if symbol not in self.seals:
            return None
        if symbol in self.dirty:
            return "out of step"
        blocks = self.blocks.get(symbol, {})
        if any(fmt != FORMAT for _, fmt in blocks.values()):
            return "of another format"
        if sum(n for n, _ in blocks.values()) != self.seals[symbol][1]:
            return "missing"
        return None


def _state(conn: sa.Connection, ds: Dataset, symbols: Sequence[str]) -> _State:
    state = _State({}, {}, {})
    m = _marker(conn)
    for part in _chunks(list(symbols), _META_CHUNK):
        marks = ", ".join([m] * len(part))
        for symbol, through, rows in _fetch(
            conn, f"SELECT symbol, sealed_through, rows FROM column_seals WHERE dataset = {m} AND symbol IN ({marks})", (ds.table, *part)
        ):
            state.seals[symbol] = (_as_date(through), int(rows))
        for symbol, year, rows, fmt in _fetch(
            conn, f"SELECT symbol, year, rows, format FROM column_blocks WHERE dataset = {m} AND symbol IN ({marks})", (ds.table, *part)
        ):
            state.blocks.setdefault(symbol, {})[int(year)] = (int(rows), int(fmt))
        for symbol, year in _fetch(
            conn, f"SELECT symbol, year FROM column_dirty WHERE dataset = {m} AND symbol IN ({marks})", (ds.table, *part)
        ):
            state.dirty.setdefault(symbol, set()).add(int(year))
        if conn.dialect.name == "sqlite":
            # no insert trigger on SQLite (a row trigger costs about 1 us a bar written): a row inserted
            # under a seal shows as one more row, or as a rowid above the mark the seal was made with
            # (INSERT OR REPLACE gives the row a new rowid); counted from the index, no row is read
            for symbol, rows, mark, top in _fetch(
                conn,
                f"SELECT c.symbol, c.rows, c.row_mark, (SELECT count(*) || ',' || COALESCE(max(d.rowid), 0) FROM {ds.table} d "
                f"WHERE d.symbol = c.symbol AND d.date <= c.sealed_through) FROM column_seals c "
                f"WHERE c.dataset = ? AND c.symbol IN ({marks})",
                (ds.table, *part),
            ):
                count, highest = (int(x) for x in str(top).split(","))
                if count != int(rows) or mark is None or highest > int(mark):
                    state.dirty.setdefault(symbol, set())
    return state


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def _blocks_of(conn: sa.Connection, ds: Dataset, symbols: Sequence[str], first_year: int, last_year: int) -> list[tuple[str, int, object]]:
    """(symbol, year, payload) of the symbols' blocks in [first_year, last_year], by symbol and year."""
    if not symbols:
        return []
    if conn.dialect.name == "postgresql":
        query = (
            "SELECT b.symbol, b.year, b.payload FROM column_blocks b "
            "WHERE b.dataset = %s AND b.symbol = ANY(%s::text[]) AND b.year BETWEEN %s AND %s ORDER BY b.symbol, b.year"
        )
        payload = _copy_out(conn, query, (ds.table, list(symbols), first_year, last_year))
        return [
            (bytes(symbol).decode(), int.from_bytes(year, "big", signed=True), block)
            for symbol, year, block in _copy_fields(payload)
        ]
    marks = ", ".join("?" * len(symbols))
    return _fetch(
        conn,
        f"SELECT symbol, year, payload FROM column_blocks WHERE dataset = ? AND symbol IN ({marks}) "
        "AND year >= ? AND year <= ? ORDER BY symbol, year",
        (ds.table, *symbols, first_year, last_year),
    )


# ---- the read -------------------------------------------------------------------------------------
@dataclass
class Columns:
    """Rows of several symbols as columns: symbol after symbol (`symbols`, `counts`), each by date."""

    dataset: Dataset
    symbols: list[str]
    counts: np.ndarray  # rows per symbol
    days: np.ndarray  # int32, days since 1970-01-01
    values: dict[str, np.ndarray]  # float64 (NaN for NULL) or int64 (see `missing`)
    missing: dict[str, np.ndarray]  # the NULL masks of the integer columns

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.counts))).astype("int64")

    def segment(self, symbol: str) -> slice:
        """The rows of one symbol."""
        k = self.symbols.index(symbol)
        offsets = self.offsets
        return slice(int(offsets[k]), int(offsets[k + 1]))

    def positions(self, symbols: Sequence[str], days) -> np.ndarray:
        """The row of each (symbol, day) pair (days: datetime64 or days since 1970), -1 where absent:
        where a point-in-time read patches superseded values in place."""
        days = np.asarray(days)
        if np.issubdtype(days.dtype, np.datetime64):
            days = (days.astype("datetime64[D]") - _EPOCH).astype("int64")
        index = {s: k for k, s in enumerate(self.symbols)}
        offsets = self.offsets
        out = np.full(len(days), -1, dtype="int64")
        for k, (symbol, day) in enumerate(zip(symbols, days.tolist())):
            j = index.get(symbol)
            if j is None:
                continue
            lo, hi = int(offsets[j]), int(offsets[j + 1])
            at = lo + int(np.searchsorted(self.days[lo:hi], day))
            if at < hi and self.days[at] == day:
                out[k] = at
        return out

    def _dates(self, days: np.ndarray) -> np.ndarray:
        return (days.astype("int64") * 86_400_000_000_000).astype("datetime64[ns]")

    def _column(self, c: str, selector=slice(None)):
        if c in self.missing:
            return pd.arrays.IntegerArray(self.values[c][selector], self.missing[c][selector])
        return self.values[c][selector]

    def frame(self) -> pd.DataFrame:
        """The frame of `read_bars`: indexed by (symbol, date), one column per value column."""
        present = [s for s, n in zip(self.symbols, self.counts.tolist()) if n]
        level = sorted(present)
        rank = {s: i for i, s in enumerate(level)}
        symbol_codes = np.repeat(np.array([rank.get(s, -1) for s in self.symbols], dtype="int64"), self.counts)
        if len(self.days):
            lo = int(self.days.min())
            seen = np.zeros(int(self.days.max()) - lo + 1, dtype=bool)
            seen[self.days - lo] = True
            unique_days = np.flatnonzero(seen) + lo
            date_codes = (np.cumsum(seen) - 1)[self.days - lo]
        else:
            unique_days, date_codes = np.empty(0, "int64"), np.empty(0, "int64")
        index = pd.MultiIndex(
            levels=[pd.Index(level, dtype="str"), pd.DatetimeIndex(self._dates(unique_days))],
            codes=[symbol_codes, date_codes], names=["symbol", "date"], verify_integrity=False,
        )
        data = {c: self._column(c) for c in self.dataset.columns}
        return pd.DataFrame(data, index=index, columns=list(self.dataset.columns), copy=False)

    def frames(self) -> dict[str, pd.DataFrame]:
        """One frame per symbol (a `date` column and the value columns, numbered rows)."""
        offsets, out = self.offsets, {}
        for k, symbol in enumerate(self.symbols):
            part = slice(int(offsets[k]), int(offsets[k + 1]))
            data = {"date": self._dates(self.days[part])}
            data |= {c: self._column(c, part) for c in self.dataset.columns}
            out[symbol] = pd.DataFrame(data, columns=["date", *self.dataset.columns])
        return out

    def arrow(self):
        """An Arrow table: symbol (dictionary-encoded), date (date32) and the value columns."""
        import pyarrow as pa

        codes = np.repeat(np.arange(len(self.symbols), dtype="int32"), self.counts)
        days = np.ascontiguousarray(self.days, dtype="int32")
        arrays = {
            "symbol": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(self.symbols, type=pa.string())),
            "date": pa.Array.from_buffers(pa.date32(), len(days), [None, pa.py_buffer(days)]),
        }
        for c in self.dataset.columns:
            mask = self.missing.get(c)
            arrays[c] = pa.array(self.values[c], mask=mask if mask is not None and mask.any() else None)
        return pa.table(arrays)


def read(
    conn: sa.Connection,
    ds: Dataset,
    symbols: Sequence[str],
    start: dt.date | None = None,
    end: dt.date | None = None,
    since: Mapping[str, dt.date] | None = None,
) -> Columns:
    """The rows of `symbols` (in that order, once each) dated from `start` (or `since[symbol]`, the
    later of the two) to `end`, inclusive; open bounds when None. Call it on a `snapshot`."""
    symbols = list(dict.fromkeys(symbols))
    since = since or {}
    first = {s: max([d for d in (start, since.get(s)) if d is not None], default=None) for s in symbols}
    state = _state(conn, ds, symbols)
    passed_over: dict[str, list[str]] = {}
    plan: dict[str, str] = {}  # "blocks" (blocks + tail) or "rows"
    for symbol in symbols:
        trouble = state.trouble(symbol)
        if trouble is not None:
            passed_over.setdefault(trouble, []).append(symbol)
        plan[symbol] = "blocks" if symbol in state.seals and trouble is None else "rows"

    first_year = min((first[s].year for s in symbols if plan[s] == "blocks" and first[s] is not None), default=1)
    if any(first[s] is None for s in symbols if plan[s] == "blocks"):
        first_year = 1
    last_year = end.year if end is not None else 9999

    def row_bounds(symbol: str) -> tuple[str, dt.date | None, dt.date | None]:
        lo = first[symbol]
        if plan[symbol] == "blocks":
            after = state.seals[symbol][0] + dt.timedelta(days=1)
            lo = after if lo is None else max(lo, after)
        return symbol, lo, end

    rows = read_rows(conn, ds, [row_bounds(s) for s in symbols])
    row_counts = np.bincount(rows.owner, minlength=len(symbols)) if len(rows) else np.zeros(len(symbols), "int64")
    row_offsets = np.concatenate(([0], np.cumsum(row_counts)))
    for k, symbol in enumerate(symbols):  # a long unsealed history: its blocks were never built or were lost
        if plan[symbol] == "rows" and symbol not in state.seals and row_counts[k] >= 2 * TAIL_ROWS:
            passed_over.setdefault("missing", []).append(symbol)

    block_rows = {
        s: sum(n for year, (n, _) in state.blocks.get(s, {}).items() if first_year <= year <= last_year)
        for s in symbols if plan[s] == "blocks"
    }
    capacity = int(row_counts.sum()) + sum(block_rows.values())
    out = _Rows(
        np.empty(capacity, "int32"),
        {c: np.empty(capacity, "float64") for c in ds.floats} | {c: np.empty(capacity, "int64") for c in ds.integers},
        {c: np.empty(capacity, bool) for c in ds.integers},
    )
    counts = np.zeros(len(symbols), dtype="int64")
    at = 0

    def put(part: _Rows) -> int:
        n = len(part)
        out.days[at : at + n] = part.days
        for c in ds.columns:
            out.values[c][at : at + n] = part.values[c]
        for c in ds.integers:
            out.missing[c][at : at + n] = part.missing[c]
        return n

    for chunk_start in range(0, len(symbols), _BLOCK_CHUNK):
        chunk = symbols[chunk_start : chunk_start + _BLOCK_CHUNK]
        sealed = [s for s in chunk if plan[s] == "blocks" and block_rows[s]]
        decoded, segments = _empty_rows(ds), {}
        fetched = _blocks_of(conn, ds, sealed, first_year, last_year)
        try:
            decoded = decode(ds, [payload for _, _, payload in fetched])
            position = 0
            for symbol, year, _ in fetched:
                n = state.blocks[symbol][int(year)][0]
                segments[symbol] = (segments.get(symbol, (position, position))[0], position + n)
                position += n
            if position != len(decoded):
                raise BlockError("the blocks hold other row counts than recorded")
        except BlockError as exc:
            for symbol in sealed:  # read these from their rows instead
                passed_over.setdefault(f"unreadable ({exc})", []).append(symbol)
            decoded = read_rows(conn, ds, [(s, first[s], state.seals[s][0]) for s in sealed])
            segments = _segments_by_owner(decoded.owner, sealed)
        for offset, symbol in enumerate(chunk):
            k = chunk_start + offset
            n = 0
            if symbol in segments:
                lo, hi = segments[symbol]
                part = decoded.take(slice(lo, hi))
                keep = np.ones(len(part), dtype=bool)
                if first[symbol] is not None:
                    keep &= part.days >= _day(first[symbol])
                if end is not None:
                    keep &= part.days <= _day(end)
                if not keep.all():
                    part = part.take(keep)
                n += put(part)
                at += len(part)
            tail = rows.take(slice(int(row_offsets[k]), int(row_offsets[k + 1])))
            n += put(tail)
            at += len(tail)
            counts[k] = n
    if passed_over:
        summary = "; ".join(f"{len(v)} {reason} ({', '.join(v[:5])}{', ...' if len(v) > 5 else ''})" for reason, v in passed_over.items())
        log.warning(
            "column blocks of %s not used: %s; read from %s rows instead (the next write of each symbol rebuilds them)",
            ds.table, summary, ds.table,
        )
    return Columns(
        ds, symbols, counts, out.days[:at], {c: v[:at] for c, v in out.values.items()}, {c: m[:at] for c, m in out.missing.items()}
    )


def _segments_by_owner(owner: np.ndarray, symbols: Sequence[str]) -> dict[str, tuple[int, int]]:
    counts = np.bincount(owner, minlength=len(symbols)) if len(owner) else np.zeros(len(symbols), "int64")
    offsets = np.concatenate(([0], np.cumsum(counts)))
    return {s: (int(offsets[k]), int(offsets[k + 1])) for k, s in enumerate(symbols)}


# ---- writing blocks ---------------------------------------------------------------------------------
_PG_BLOCK_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS column_block_stage (year int4 NOT NULL, rows int4 NOT NULL, payload bytea NOT NULL)
ON COMMIT DELETE ROWS
"""
_UPSERT_BLOCK = (
    "ON CONFLICT (dataset, symbol, year) DO UPDATE SET rows = excluded.rows, format = excluded.format, payload = excluded.payload"
)


def _put_blocks(conn: sa.Connection, ds: Dataset, symbol: str, rows: _Rows) -> None:
    """Insert or replace the symbol's blocks of the years of `rows` (ordered by date) with them."""
    blocks = encode_years(ds, rows)
    if not blocks:
        return
    if conn.dialect.name == "postgresql":  # bytes through a binary COPY (as literals they travel as hex)
        conn.exec_driver_sql(_PG_BLOCK_STAGE)
        conn.exec_driver_sql("TRUNCATE column_block_stage")
        parts = [_COPY_HEADER]
        for year, n, payload in blocks:
            parts.append(struct.pack(">hiiiii", 3, 4, year, 4, n, len(payload)))
            parts.append(payload)
        parts.append(_COPY_TRAILER)
        pg_copy(conn, "COPY column_block_stage (year, rows, payload) FROM STDIN WITH (FORMAT binary)", (), io.BytesIO(b"".join(parts)))
        conn.exec_driver_sql(
            "INSERT INTO column_blocks (dataset, symbol, year, rows, format, payload) "
            f"SELECT %s, %s, year, rows, %s, payload FROM column_block_stage {_UPSERT_BLOCK}",
            (ds.table, symbol, FORMAT),
        )
        return
    for part in _chunks(blocks, 40):
        params = []
        for year, n, payload in part:
            params += [ds.table, symbol, year, n, FORMAT, payload]
        conn.exec_driver_sql(
            f"INSERT INTO column_blocks (dataset, symbol, year, rows, format, payload) VALUES "
            f"{', '.join(['(?, ?, ?, ?, ?, ?)'] * len(part))} {_UPSERT_BLOCK}",
            tuple(params),
        )


def _put_seal(conn: sa.Connection, ds: Dataset, symbol: str, through: dt.date, rows: int) -> None:
    """Record the seal; on SQLite with the highest rowid of the rows under it (see `_state`)."""
    m = _marker(conn)
    mark = None
    if conn.dialect.name == "sqlite":
        mark = _fetch(conn, f"SELECT COALESCE(max(rowid), 0) FROM {ds.table} WHERE symbol = ? AND date <= ?", (symbol, through.isoformat()))[0][0]
    conn.exec_driver_sql(
        f"INSERT INTO column_seals (dataset, symbol, sealed_through, rows, row_mark) VALUES ({m}, {m}, {m}, {m}, {m}) "
        "ON CONFLICT (dataset, symbol) DO UPDATE SET sealed_through = excluded.sealed_through, rows = excluded.rows, "
        "row_mark = excluded.row_mark",
        (ds.table, symbol, through.isoformat() if conn.dialect.name == "sqlite" else through, int(rows), mark),
    )


def _drop_symbol(conn: sa.Connection, ds: Dataset, symbol: str) -> None:
    m = _marker(conn)
    for table in ("column_blocks", "column_seals", "column_dirty"):
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))


def rebuild(conn: sa.Connection, ds: Dataset, symbols: Sequence[str], batch: int = 50) -> int:
    """Rebuild the symbols' blocks from their rows, whole histories (in the caller's transaction);
    returns the rows sealed. What a migration runs over an existing warehouse, and the repair."""
    sealed = 0
    for part in _chunks(list(symbols), batch):
        rows = read_rows(conn, ds, [(s, None, None) for s in part])
        spans = _segments_by_owner(rows.owner, part)
        for symbol in part:
            _drop_symbol(conn, ds, symbol)
            lo, hi = spans[symbol]
            if hi > lo:
                mine = rows.take(slice(lo, hi))
                _put_blocks(conn, ds, symbol, mine)
                _put_seal(conn, ds, symbol, _date(mine.days[-1]), len(mine))
                sealed += len(mine)
    return sealed


def rebuild_all(conn: sa.Connection, ds: Dataset) -> int:
    """Rebuild every symbol's blocks (the symbols with rows, and drop those of symbols without)."""
    symbols = [r[0] for r in _fetch(conn, f"SELECT DISTINCT symbol FROM {ds.table}", ())]
    stale = [r[0] for r in _fetch(conn, f"SELECT symbol FROM column_seals WHERE dataset = {_marker(conn)}", (ds.table,))]
    for symbol in set(stale) - set(symbols):
        _drop_symbol(conn, ds, symbol)
    return rebuild(conn, ds, sorted(symbols))


@dataclass
class _WriteState:
    """A written symbol's blocks as the write found them (one statement for 500 symbols)."""

    seal: tuple[dt.date, int] | None
    block_rows: int
    formats: tuple[int, int] | None  # (lowest, highest) block format
    dirty: set[int]
    tail: int  # rows after the seal (all of them without one)
    row_mark: int | None = None  # SQLite: the seal's rowid mark

    def trouble(self) -> str | None:
        if self.seal is None:
            return None
        if self.dirty:
            return "out of step"
        if self.formats is not None and self.formats != (FORMAT, FORMAT):
            return "of another format"
        return "missing" if self.block_rows != self.seal[1] else None


def _write_states(conn: sa.Connection, ds: Dataset, symbols: Sequence[str]) -> dict[str, _WriteState]:
    out: dict[str, _WriteState] = {}
    pg = conn.dialect.name == "postgresql"
    m = "%s" if pg else "?"
    blocks = f"FROM column_blocks b WHERE b.dataset = {m} AND b.symbol = s.symbol"
    years = "string_agg(d.year::text, ',')" if pg else "group_concat(d.year)"
    low = "DATE '0001-01-01'" if pg else "'0001-01-01'"
    for part in _chunks(list(symbols), _META_CHUNK):
        source = "unnest(%s::text[]) AS s(symbol)" if pg else f"(SELECT column1 AS symbol FROM (VALUES {', '.join(['(?)'] * len(part))})) s"
        sql = (
            f"SELECT s.symbol, c.sealed_through, c.rows, c.row_mark, (SELECT sum(b.rows) {blocks}), (SELECT min(b.format) {blocks}), "
            f"(SELECT max(b.format) {blocks}), (SELECT {years} FROM column_dirty d WHERE d.dataset = {m} AND d.symbol = s.symbol), "
            f"(SELECT count(*) FROM {ds.table} t WHERE t.symbol = s.symbol AND t.date > COALESCE(c.sealed_through, {low})) "
            f"FROM {source} LEFT JOIN column_seals c ON c.dataset = {m} AND c.symbol = s.symbol"
        )
        params = [ds.table] * 4 + ([list(part)] if pg else list(part)) + [ds.table]
        for symbol, through, rows, mark, block_rows, low_fmt, high_fmt, dirty, tail in _fetch(conn, sql, params):
            out[symbol] = _WriteState(
                (_as_date(through), int(rows)) if through is not None else None,
                int(block_rows or 0),
                (int(low_fmt), int(high_fmt)) if low_fmt is not None else None,
                {int(y) for y in str(dirty).split(",")} if dirty else set(),
                int(tail),
                None if mark is None else int(mark),
            )
    return out


def _inserted_under_seal(conn: sa.Connection, ds: Dataset, checks: Mapping[str, tuple[dt.date, set[int] | None, int | None]]) -> dict[str, set[int]]:
    """SQLite has no insert trigger: for each symbol -> (sealed through, the years to look at or None
    for all, the seal's rowid mark), the years whose rows dated through the seal are not the ones
    their blocks hold: each year's rows and highest rowid, counted from the index, against its
    block's row count and the mark. Two statements per 500 symbols."""
    out: dict[str, set[int]] = {}
    symbols = sorted(checks)
    for part in _chunks(symbols, _META_CHUNK):
        ranges, params = ", ".join(["(?, ?, ?)"] * len(part)), []
        for symbol in part:
            through, years, _ = checks[symbol]
            params += [symbol, f"{min(years):04d}-01-01" if years else "0001-01-01", through.isoformat()]
        counted = _fetch(
            conn,
            f"WITH s(symbol, lo, hi) AS (VALUES {ranges}) SELECT s.symbol, CAST(substr(d.date, 1, 4) AS INTEGER), count(*), "
            f"max(d.rowid) FROM s CROSS JOIN {ds.table} d WHERE d.symbol = s.symbol AND d.date >= s.lo AND d.date <= s.hi GROUP BY 1, 2",
            params,
        )
        blocks: dict[str, dict[int, int]] = {}
        for symbol, year, rows in _fetch(
            conn, f"SELECT symbol, year, rows FROM column_blocks WHERE dataset = ? AND symbol IN ({', '.join('?' * len(part))})", (ds.table, *part)
        ):
            blocks.setdefault(symbol, {})[int(year)] = int(rows)
        for symbol, year, n, top in counted:
            through, years, mark = checks[symbol]
            if years is not None and int(year) not in years:
                continue
            if int(n) != blocks.get(symbol, {}).pop(int(year), 0) or mark is None or int(top) > mark:
                out.setdefault(symbol, set()).add(int(year))
        for symbol in part:  # blocks of years left without rows (all years looked at)
            if checks[symbol][1] is None and blocks.get(symbol):
                out.setdefault(symbol, set()).update(blocks[symbol])
    return out


def after_write(conn: sa.Connection, ds: Dataset, written: Mapping[str, pd.DataFrame]) -> None:
    """Bring the blocks of the symbols just written in step with their rows, in the write's
    transaction: rebuild what the triggers marked, fold a tail that reached its limit. `written`:
    symbol -> the frame written (sorted by date, one row per date), used instead of reading the rows
    back whenever it is exactly what a block or the tail holds (a first load, a re-fetch, new days)."""
    symbols = sorted(written)
    if not symbols:
        return
    m = _marker(conn)
    states = _write_states(conn, ds, symbols)
    if conn.dialect.name == "sqlite":
        # a write of dates under the seal may have inserted rows there, and so may another writer
        # before it: looked for in the years written under the seal (the re-fetch window's, usually
        # one), and in every year when the tail is about to be folded in
        checks = {}
        for symbol, state in states.items():
            if state.seal is None:
                continue
            if state.tail >= tail_limit(symbol):
                checks[symbol] = (state.seal[0], None, state.row_mark)
            else:
                days = _frame_days(written[symbol])
                under = set(_years(days[days <= _day(state.seal[0])]).tolist())
                if under:
                    checks[symbol] = (state.seal[0], under, state.row_mark)
        for symbol, years in _inserted_under_seal(conn, ds, checks).items():
            states[symbol].dirty |= years
    for symbol, state in states.items():
        trouble, seal, tail = state.trouble(), state.seal, state.tail
        if seal is None and state.dirty:  # marks left over from blocks since dropped
            conn.exec_driver_sql(f"DELETE FROM column_dirty WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))
        if trouble in ("of another format", "missing"):
            rebuild(conn, ds, [symbol])  # sealed whole: no tail left
            continue
        if trouble == "out of step":
            seal = _rebuild_years(conn, ds, symbol, seal, state.dirty, written[symbol])
            if seal is None:  # no block left: every row is the tail now
                tail = int(_fetch(conn, f"SELECT count(*) FROM {ds.table} WHERE symbol = {m}", (symbol,))[0][0])
        if tail >= tail_limit(symbol):
            _seal(conn, ds, symbol, seal, written[symbol], tail)


def _rebuild_years(
    conn: sa.Connection, ds: Dataset, symbol: str, seal: tuple[dt.date, int], years: set[int], frame: pd.DataFrame
) -> tuple[dt.date, int] | None:
    """Rebuild the marked years' blocks from the rows dated through the seal: from the frame just
    written where it holds every such row of the year (a re-fetch), else read back."""
    through = seal[0]
    wanted = sorted(y for y in years if y <= through.year)
    m = _marker(conn)
    if wanted:
        year_of = "CAST(substr(date, 1, 4) AS INTEGER)" if conn.dialect.name == "sqlite" else "extract(year FROM date)::int"
        first = dt.date(wanted[0], 1, 1)
        stored = dict(_fetch(
            conn,
            f"SELECT {year_of}, count(*) FROM {ds.table} WHERE symbol = {m} AND date >= {m} AND date <= {m} GROUP BY 1",
            (symbol, first.isoformat() if conn.dialect.name == "sqlite" else first, through.isoformat() if conn.dialect.name == "sqlite" else through),
        ))
        written = rows_of_frame(ds, frame)
        written = written.take(written.days <= _day(through))
        written_years = _years(written.days)
        parts, to_read = {}, []
        for year in wanted:
            mine = written.take(written_years == year)
            if int(stored.get(year, 0)) == len(mine):
                parts[year] = mine
            else:
                to_read.append(year)
        if to_read:
            bounds = [(symbol, dt.date(y, 1, 1), min(dt.date(y, 12, 31), through)) for y in to_read]
            rows = read_rows(conn, ds, bounds)
            spans = _segments_by_owner(rows.owner, bounds)
            for k, year in enumerate(to_read):
                lo, hi = spans[bounds[k]]
                parts[year] = rows.take(slice(lo, hi))
        for year in wanted:
            if not len(parts[year]):
                conn.exec_driver_sql(
                    f"DELETE FROM column_blocks WHERE dataset = {m} AND symbol = {m} AND year = {m}", (ds.table, symbol, year)
                )
        _put_blocks(conn, ds, symbol, _concat(ds, [parts[y] for y in wanted]))
    conn.exec_driver_sql(f"DELETE FROM column_dirty WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))
    total = _fetch(conn, f"SELECT sum(rows) FROM column_blocks WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))[0][0]
    if not total:
        conn.exec_driver_sql(f"DELETE FROM column_seals WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))
        return None
    _put_seal(conn, ds, symbol, through, int(total))
    return through, int(total)


def _seal(conn: sa.Connection, ds: Dataset, symbol: str, seal: tuple[dt.date, int] | None, frame: pd.DataFrame, tail_count: int) -> None:
    """Fold the symbol's tail (its rows after the seal) into its blocks."""
    after = _day(seal[0]) if seal else None
    written = rows_of_frame(ds, frame)
    if after is not None:
        written = written.take(written.days > after)
    if len(written) == tail_count:
        tail = written  # the tail is exactly what was just written
    else:
        lo = seal[0] + dt.timedelta(days=1) if seal else None
        tail = read_rows(conn, ds, [(symbol, lo, None)])
    if not len(tail):
        return
    rows = tail
    if seal is not None:  # the sealed rows of the tail's first year go first (its block is rewritten)
        years = sorted(set(_years(tail.days).tolist()))
        old = [block.take(block.days <= after) for _, block in _stored_blocks(conn, ds, symbol, years)]
        rows = _concat(ds, [*old, tail])
    _put_blocks(conn, ds, symbol, rows)
    _put_seal(conn, ds, symbol, _date(tail.days[-1]), (seal[1] if seal else 0) + len(tail))


def _stored_blocks(conn: sa.Connection, ds: Dataset, symbol: str, years: Sequence[int]) -> list[tuple[int, _Rows]]:
    fetched = [row for row in _blocks_of(conn, ds, [symbol], min(years), max(years)) if int(row[1]) in set(years)]
    return [(int(year), decode(ds, [payload])) for _, year, payload in fetched]


# ---- triggers -------------------------------------------------------------------------------------
def trigger_sql(ds: Dataset, dialect: str) -> list[str]:
    """The statements creating the triggers that mark `ds`'s blocks out of step (see the module doc)."""
    t, name = ds.table, f"column_blocks_{ds.table}"
    keyed = ("symbol", "date", *ds.columns)
    if dialect == "sqlite":
        def seal(side: str) -> str:
            return f"(SELECT sealed_through FROM column_seals WHERE dataset = '{t}' AND symbol = {side}.symbol)"

        def mark(side: str) -> str:
            # no OR IGNORE: a trigger's statements take the conflict policy of the statement firing it
            year = f"CAST(substr({side}.date, 1, 4) AS INTEGER)"
            return (
                f"INSERT INTO column_dirty (dataset, symbol, year) SELECT '{t}', {side}.symbol, {year} "
                f"WHERE {side}.date <= {seal(side)} AND NOT EXISTS (SELECT 1 FROM column_dirty "
                f"WHERE dataset = '{t}' AND symbol = {side}.symbol AND year = {year});"
            )

        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in keyed)
        # no insert trigger: SQLite runs a row trigger's program for every row written, even when its
        # WHEN is false (about 1 us a bar, 40% of a first load); inserts under a seal are caught by
        # count and rowid instead (_state, _inserted_under_seal)
        return [
            f"CREATE TRIGGER {name}_update AFTER UPDATE ON {t} WHEN {changed} BEGIN {mark('OLD')} {mark('NEW')} END",
            f"CREATE TRIGGER {name}_delete AFTER DELETE ON {t} WHEN OLD.date <= {seal('OLD')} BEGIN {mark('OLD')} END",
        ]
    columns = ", ".join(keyed)

    def mark_pg(source: str) -> str:
        return (
            f"INSERT INTO column_dirty (dataset, symbol, year) "
            f"SELECT DISTINCT '{t}', c.symbol, extract(year FROM c.date)::int FROM ({source}) c "
            f"JOIN column_seals s ON s.dataset = '{t}' AND s.symbol = c.symbol AND c.date <= s.sealed_through "
            "ON CONFLICT DO NOTHING;"
        )

    bodies = {
        "insert": mark_pg("SELECT symbol, date FROM new_rows"),
        "delete": mark_pg("SELECT symbol, date FROM old_rows"),
        "update": mark_pg(
            f"(SELECT {columns} FROM new_rows EXCEPT SELECT {columns} FROM old_rows) UNION "
            f"(SELECT {columns} FROM old_rows EXCEPT SELECT {columns} FROM new_rows)"
        ),
    }
    referencing = {
        "insert": "REFERENCING NEW TABLE AS new_rows",
        "delete": "REFERENCING OLD TABLE AS old_rows",
        "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    }
    out = []
    for event, body in bodies.items():
        out.append(
            f"CREATE FUNCTION {name}_{event}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
        )
        out.append(
            f"CREATE TRIGGER {name}_{event} AFTER {event.upper()} ON {t} {referencing[event]} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_{event}()"
        )
    return out


def drop_trigger_sql(ds: Dataset, dialect: str) -> list[str]:
    name = f"column_blocks_{ds.table}"
    events = ("insert", "update", "delete")
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}_{e}" for e in events]
    return [f"DROP TRIGGER IF EXISTS {name}_{e} ON {ds.table}" for e in events] + [
        f"DROP FUNCTION IF EXISTS {name}_{e}()" for e in events
    ]
