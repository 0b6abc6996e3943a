"""Column blocks: the warehouse's columnar read path (the bars of `read_bars`, the CLI export, the checks
and `symbol_stats`; the returns of `read_returns`), on SQLite and PostgreSQL alike.

A table of rows keyed by (symbol, date) (a `Dataset`: `ohlcv_daily`, the bars; `daily_returns`)
keeps, beside its rows, each symbol's older rows as **column blocks** in `column_blocks`: the dates
and values of some calendar years as the bytes of an Arrow IPC stream. A block's key (`year`) is the
last year it covers; it covers every year after the symbol's previous block's key. Laid out for a
symbol sealed in year Y: one block for all years before Y-1, one for Y-1 and one for Y, so a whole
history is three blocks and a read of the last months never decodes the old years. The rows stay
the store of record; the blocks are a second form of the same values, written in the same
transaction as the rows they cover, so a reader sees both as of one moment:

* `column_seals` holds, per symbol, the date through which its rows are in blocks (`sealed_through`)
  and how many they are. The rows after it are the symbol's **tail**, read as rows. A write that only
  adds new dates (a daily refresh) leaves the blocks alone; once a symbol's tail reaches its limit
  (`TAIL_ROWS` to twice that, spread by symbol so that symbols loaded together do not all seal on the
  same day) the write that reached it folds the tail into the blocks: the seal year's block is
  rewritten, nothing older (when the fold enters a new year, the year that left the last two is
  merged into the old years' block). A first load seals the whole history at once, from the frame
  in hand.
* Triggers on the rows table mark a block **out of step** in `column_dirty` (by symbol and year)
  whenever a row dated on or before the seal is deleted or changed in any value or key, whoever
  writes it (this code, a rename, an operator's SQL); a value rewritten unchanged marks nothing. On
  PostgreSQL (statement triggers) an insert under the seal is marked too. SQLite has no insert
  trigger (its program would run for every bar written); there every row a seal covers has a rowid
  at most the seal's `row_mark`, and `column_marks` keeps a **watermark**: the highest rowid every
  write through this code has looked at. SQLite gives an inserted row a rowid above the highest in
  the table (`INSERT OR REPLACE` too), so a row inserted under a seal by anyone shows above the
  watermark: a read looks only at those rows (a range of the rowid, the rows written since the last
  write of this code), after checking that the row at the watermark is still there (a delete
  trigger voids the watermark when it goes: rowids under it could be given again); a write marks
  out of step what it finds there, and moves the watermark. A small read (a few symbols) instead
  counts each sealed symbol's rows under its seal, and their highest rowid, from the index; so does
  any read while the watermark is void, until a write or `rebuild_all` sets it again. The next
  write of a symbol rebuilds its marked blocks.
* A read takes one snapshot (`snapshot`: a read transaction on SQLite, REPEATABLE READ on PostgreSQL)
  and serves each symbol from its blocks plus its tail, unless its blocks cannot be trusted: marked
  out of step, of another block format, fewer than the seal says, or unreadable bytes. Then that
  symbol is read from its rows, and the read logs one line saying so. A read never writes. Each
  block is decoded without a copy and its values copied once, into the result's arrays.

Blocks are Arrow IPC streams of one record batch (uncompressed: LZ4 or ZSTD made a whole-panel read
3-6x slower for at most 20% fewer bytes) with the schema `date` (date32) and the dataset's columns:
floats as float64 with NaN for NULL (the rows never hold NaN; every writer stores NULL instead),
integers as int64 with a validity bitmap. `FORMAT` is stored with every block; a block of any other
format is never decoded.

The reading API, for code built on this path (point-in-time reads, other per-symbol daily tables):

* `snapshot(engine)`: a connection whose reads all see one moment;
* `read(conn, dataset, symbols, start, end, since, until)`: a `Columns`: the symbols' rows as numpy
  columns, symbol after symbol in the order asked, each symbol's rows by date (`until`: per symbol,
  a last date, the rows after it counted in `Columns.beyond`, cut from blocks and tail alike);
* `Columns.frame()` (the (symbol, date)-indexed frame of `read_bars`), `Columns.frames()` (one bar
  frame per symbol), `Columns.arrow()` (an Arrow table, zero-copy into polars with `pl.from_arrow`),
  `Columns.segment(symbol)` and `Columns.positions(symbols, days)` (where given rows are, to patch
  values in place);
* a new table of the same shape gets its `Dataset`, its triggers (`trigger_sql`, and `mark_sql`
  with `reset_marks` after them) in its migration, and calls `after_write` in the transaction of
  every write.
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
_NO_DAY = -(2**31)  # `Columns.beyond`'s last day when no row was left out
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
RETURNS = Dataset("daily_returns", ("total_return", "log_return", "split_adjusted_return"))


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


def _frame_days(frame) -> np.ndarray:
    """A frame's `date` column as int32 days since 1970-01-01."""
    return (np.asarray(np.asarray(frame["date"]), dtype="datetime64[ns]").astype("datetime64[D]") - _EPOCH).astype("int32")


def rows_of_frame(ds: Dataset, frame) -> _Rows:
    """A frame's rows (a `date` column and the dataset's columns), converted exactly as the store
    writes them. `frame`: a DataFrame, or a mapping of numpy arrays (floats with NaN for NULL)."""
    days = _frame_days(frame)
    values, missing = {}, {}
    for c in ds.floats:
        column = frame[c]
        values[c] = column.to_numpy(dtype="float64", na_value=np.nan) if hasattr(column, "to_numpy") else np.asarray(column, dtype="float64")
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


RECENT_YEARS = 2  # a symbol's seal year and the year before it have a block each; older years share one


def block_keys(years: np.ndarray, seal_year: int) -> np.ndarray:
    """The block (its key: the last year it covers) of rows of `years` (ascending) under a seal in
    `seal_year`: the years before the last RECENT_YEARS in one block, each of those in its own."""
    old = years <= seal_year - RECENT_YEARS
    if not old.any():
        return years
    return np.where(old, years[old].max(), years)


def encode_blocks(ds: Dataset, rows: _Rows, seal_year: int) -> list[tuple[int, int, bytes]]:
    """(key, rows, bytes) of the blocks of rows ordered by date, laid out for a seal in
    `seal_year` (`block_keys`): one batch, sliced."""
    if not len(rows):
        return []
    batch = _batch(ds, rows)
    keys = block_keys(_years(rows.days), seal_year)
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    edges = [0, *cuts.tolist(), len(rows)]
    return [(int(keys[a]), b - a, _ipc(batch.slice(a, b - a))) for a, b in zip(edges[:-1], edges[1:])]


def covering(keys: Sequence[int], first_year: int, last_year: int) -> list[int]:
    """The keys (ascending) of the blocks whose years, those after the previous key through their
    own, meet first_year..last_year."""
    out, previous = [], None
    for key in keys:
        if key >= first_year and (previous is None or previous < last_year):
            out.append(key)
        previous = key
    return out


def _single_year(keys: Sequence[int], key: int) -> bool:
    """Does the block `key` cover its year alone (the previous key is the year before)?"""
    at = list(keys).index(key)
    return at > 0 and keys[at - 1] == key - 1


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


def open_block(ds: Dataset, payload):
    """The record batch of one block's bytes (bytes-like), its buffers those bytes (no copy)."""
    import pyarrow as pa

    head, tail = _stream_ends(ds)
    if len(payload) < len(head) + len(tail) or bytes(payload[: len(head)]) != head or bytes(payload[-len(tail):]) != tail:
        raise BlockError("a block of another schema")  # not this schema's message, one batch and the end mark
    try:
        batch = pa.ipc.open_stream(payload if isinstance(payload, bytes) else pa.py_buffer(payload)).read_next_batch()
    except (pa.ArrowException, OSError, StopIteration) as exc:
        raise BlockError(f"undecodable block: {exc}") from exc
    return batch


def _view(array, dtype: str, size: int) -> np.ndarray:
    """The values of a fixed-width Arrow array as a numpy view of its buffer."""
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * size)


def block_days(batch) -> np.ndarray:
    """A block's dates as int32 days since 1970-01-01 (a view)."""
    return _view(batch.column(0), "int32", 4)


def copy_block(ds: Dataset, batch, a: int, b: int, out: _Rows, at: int) -> None:
    """Copy rows a..b of a block's batch into `out` from row `at`: the only copy a read makes."""
    n = b - a
    columns = batch.columns
    if columns[0].null_count:
        raise BlockError("a block with NULL dates")
    out.days[at : at + n] = _view(columns[0], "int32", 4)[a:b]
    for i, c in enumerate(ds.floats, start=1):
        if columns[i].null_count:  # NaN stands for NULL in a float column
            raise BlockError("a block with NULL float values")
        out.values[c][at : at + n] = _view(columns[i], "float64", 8)[a:b]
    for i, c in enumerate(ds.integers, start=1 + len(ds.floats)):
        column = columns[i]
        values = _view(column, "int64", 8)[a:b]
        if column.null_count:
            bits = np.unpackbits(np.frombuffer(column.buffers()[0], dtype=np.uint8), bitorder="little")
            missing = bits[column.offset + a : column.offset + b] == 0
            out.values[c][at : at + n] = np.where(missing, 0, values)
            out.missing[c][at : at + n] = missing
        else:
            out.values[c][at : at + n] = values
            out.missing[c][at : at + n] = False


def decode(ds: Dataset, payloads: Sequence) -> _Rows:
    """The rows of blocks, one after the other (bytes-like payloads)."""
    batches = [open_block(ds, p) for p in payloads]
    total = sum(b.num_rows for b in batches)
    out = _alloc(ds, total)
    at = 0
    for batch in batches:
        copy_block(ds, batch, 0, batch.num_rows, out, at)
        at += batch.num_rows
    return out


def _alloc(ds: Dataset, n: int) -> _Rows:
    return _Rows(
        np.empty(n, "int32"),
        {c: np.empty(n, "float64") for c in ds.floats} | {c: np.empty(n, "int64") for c in ds.integers},
        {c: np.empty(n, bool) for c in ds.integers},
    )


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


def dbapi_column(ds: Dataset, column: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A column of DBAPI values (an object array, None for NULL) as a read's arrays: float64 with
    NaN, or int64 and its NULL mask (None for a float column)."""
    if column in ds.floats:
        return raw.astype("float64"), None
    mask = raw == None  # noqa: E711 (elementwise)
    return np.where(mask, 0, raw).astype("int64"), mask.astype(bool)


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
        values_out[c], mask = dbapi_column(ds, c, table[:, i])
        if mask is not None:
            missing[c] = mask
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
    blocks: dict[str, dict[int, tuple[int, int]]]  # symbol -> key -> (rows, format)
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
    if conn.dialect.name == "sqlite" and state.seals:
        for symbol in _sqlite_unsealed_inserts(conn, ds, state.seals):
            state.dirty.setdefault(symbol, set())
    return state


# ---- SQLite: rows inserted under a seal -----------------------------------------------------------
# Every row a seal covers has a rowid at most the seal's row_mark. SQLite gives an inserted row a rowid
# above the highest in the table (INSERT OR REPLACE too: the new rowid is chosen before the old row
# goes), so an insert under a seal, by anyone, shows as a row dated under the seal above its mark.
# column_marks keeps each dataset's watermark (`row_mark`): the rows at or under it have been looked at
# by a write of this code, which marked out of step what it found under a seal (`after_write`); a
# read then looks only at the rows above it (`_above_mark`: a range of the rowid, joined to the
# seals). SQLite only gives a rowid at or under the highest again once the highest row is gone: the
# delete trigger (`mark_sql`) voids the watermark (-1) when the row at it is deleted, and a read
# checks that row is still there (a rowid moved by hand); a void watermark is set again by the next
# write, which then counts every sealed symbol's rows. A row inserted with a rowid chosen by hand
# under the watermark is not seen this way (nor was it by a count with INSERT OR REPLACE).
# the costs of the two ways, a row: a symbol's row under its seal counted with its rowid from the
# index, and a row above the watermark read in rowid order with its seal (about 80 and 260 ns)
_INDEX_ROW, _SCAN_ROW = 8, 26


def _has_marks(conn: sa.Connection) -> bool:
    return bool(_fetch(conn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'column_marks'", ()))


def _watermark(conn: sa.Connection, ds: Dataset) -> int | None:
    """The dataset's watermark when it can be trusted: the rowid at or under which every row has been
    looked at; None when void, missing or on a warehouse without it."""
    if not _has_marks(conn):
        return None
    found = _fetch(conn, "SELECT row_mark FROM column_marks WHERE dataset = ?", (ds.table,))
    if not found or int(found[0][0]) < 0:
        return None
    mark = int(found[0][0])
    if mark and not _fetch(conn, f"SELECT 1 FROM {ds.table} WHERE rowid = ?", (mark,)):
        return None  # the row at the mark is gone (or moved): rowids under it may be given again
    return mark


def _top(conn: sa.Connection, ds: Dataset) -> int:
    return int(_fetch(conn, f"SELECT COALESCE(max(rowid), 0) FROM {ds.table}", ())[0][0])


def _above_mark(conn: sa.Connection, ds: Dataset, mark: int, skip: Sequence[str] = ()) -> dict[str, set[int]]:
    """symbol -> the years of its rows with a rowid above `mark` (the rows written since, in rowid
    order) that are dated under its seal and above the seal's row_mark; the `skip` symbols' rows are
    passed over."""
    skipped, params = "", [mark]
    if skip and len(skip) <= _META_CHUNK:
        skipped = f" AND d.symbol NOT IN ({', '.join('?' * len(skip))})"
        params += list(skip)
    out: dict[str, set[int]] = {}
    for symbol, year in _fetch(
        conn,
        f"SELECT d.symbol, CAST(substr(d.date, 1, 4) AS INTEGER) FROM {ds.table} d NOT INDEXED CROSS JOIN column_seals c "
        f"WHERE d.rowid > ?{skipped} AND c.dataset = ? AND c.symbol = d.symbol AND d.date <= c.sealed_through "
        "AND d.rowid > COALESCE(c.row_mark, -1) GROUP BY 1, 2",
        (*params, ds.table),
    ):
        out.setdefault(symbol, set()).add(int(year))
    return out


def _counted_under_seals(conn: sa.Connection, ds: Dataset, symbols: Sequence[str]) -> set[str]:
    """The sealed symbols whose rows under the seal are not those its blocks were made from: another
    count, or a rowid above the seal's mark; counted from the index (no row is read)."""
    out = set()
    for part in _chunks(list(symbols), _META_CHUNK):
        for symbol, rows, mark, top in _fetch(
            conn,
            f"SELECT c.symbol, c.rows, c.row_mark, (SELECT count(*) || ',' || COALESCE(max(d.rowid), 0) FROM {ds.table} d "
            f"WHERE d.symbol = c.symbol AND d.date <= c.sealed_through) FROM column_seals c "
            f"WHERE c.dataset = ? AND c.symbol IN ({', '.join('?' * len(part))})",
            (ds.table, *part),
        ):
            count, highest = (int(x) for x in str(top).split(","))
            if count != int(rows) or mark is None or highest > int(mark):
                out.add(symbol)
    return out


def _sqlite_unsealed_inserts(conn: sa.Connection, ds: Dataset, seals: Mapping[str, tuple[dt.date, int]]) -> set[str]:
    """The symbols among `seals` with a row inserted under the seal since it was made: from the rows
    above the watermark when the watermark holds and that is cheaper than counting the symbols' rows
    under their seals (a read of many symbols, few rows written since the last write), else counted."""
    under = sum(rows for _, rows in seals.values())
    mark = _watermark(conn, ds)
    if mark is not None and _SCAN_ROW * (_top(conn, ds) - mark) < _INDEX_ROW * under:
        return set(_above_mark(conn, ds, mark)) & set(seals)
    return _counted_under_seals(conn, ds, list(seals))


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
    # read with `until`: per symbol, how many rows dated after its `until` (and by `end`) were left
    # out, and the last day among them (int32 days since 1970-01-01; _NO_DAY when none)
    beyond: tuple[np.ndarray, np.ndarray] | None = None

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
        where a point-in-time read patches superseded values in place. One search per symbol asked,
        in its own segment's days."""
        days = np.asarray(days)
        if np.issubdtype(days.dtype, np.datetime64):
            days = (days.astype("datetime64[D]") - _EPOCH).astype("int64")
        out = np.full(len(days), -1, dtype="int64")
        if not len(days):
            return out
        index = {s: k for k, s in enumerate(self.symbols)}
        segments = np.array([index.get(s, -1) for s in symbols], dtype="int64")
        order = np.argsort(segments, kind="stable")
        cuts = np.flatnonzero(np.r_[True, segments[order][1:] != segments[order][:-1], True]).tolist()
        offsets = self.offsets
        for a, b in zip(cuts[:-1], cuts[1:]):
            j = int(segments[order[a]])
            if j < 0:
                continue
            lo, hi = int(offsets[j]), int(offsets[j + 1])
            asked = order[a:b]
            at = lo + np.searchsorted(self.days[lo:hi], days[asked])
            found = at < hi
            found[found] = self.days[at[found]] == days[asked][found]
            out[asked[found]] = at[found]
        return out

    def _dates(self, days: np.ndarray) -> np.ndarray:
        return (days.astype("int64") * 86_400_000_000_000).astype("datetime64[ns]")

    def _column(self, c: str, selector=slice(None)):
        if c in self.missing:
            return pd.arrays.IntegerArray(self.values[c][selector], self.missing[c][selector])
        return self.values[c][selector]

    def frame(self) -> pd.DataFrame:
        """The frame of `read_bars`: indexed by (symbol, date), one column per value column. The index
        is built from codes in the integer width pandas keeps them in (no copy of them), the columns
        are the arrays read."""
        present = [s for s, n in zip(self.symbols, self.counts.tolist()) if n]
        level = sorted(present)
        rank = {s: i for i, s in enumerate(level)}
        symbol_codes = np.repeat(np.array([rank.get(s, -1) for s in self.symbols], dtype=_code_dtype(len(level))), self.counts)
        if len(self.days):
            lo = int(self.days.min())
            offset = self.days.astype(np.intp)  # converted once for the scatter and the gather
            offset -= lo
            seen = np.zeros(int(self.days.max()) - lo + 1, dtype=bool)
            seen[offset] = True
            unique_days = np.flatnonzero(seen) + lo
            positions = np.cumsum(seen, dtype=_code_dtype(len(unique_days)))
            positions -= 1
            date_codes = positions[offset]
        else:
            unique_days, date_codes = np.empty(0, "int64"), np.empty(0, "int8")
        index = pd.MultiIndex(
            levels=[pd.Index(level, dtype="str"), pd.DatetimeIndex(self._dates(unique_days))],
            codes=[symbol_codes, date_codes], names=["symbol", "date"], verify_integrity=False,
        )
        data = {c: self._column(c) for c in self.dataset.columns}
        return pd.DataFrame(data, index=index, columns=list(self.dataset.columns), copy=False)

    def frames(self) -> dict[str, pd.DataFrame]:
        """One frame per symbol (a `date` column and the value columns, numbered rows): row slices of
        one frame of all the rows (a frame built per symbol costs about four times the CPU: 340-380 ms
        against 90 ms for 1,000 symbols' last 11 rows)."""
        whole = pd.DataFrame(
            {"date": self._dates(self.days), **{c: self._column(c) for c in self.dataset.columns}},
            columns=["date", *self.dataset.columns], copy=False,
        )
        offsets = self.offsets
        return {
            symbol: whole.iloc[int(offsets[k]) : int(offsets[k + 1])].reset_index(drop=True) for k, symbol in enumerate(self.symbols)
        }

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


def _code_dtype(levels: int) -> str:
    """The integer width pandas keeps the codes of a level of this many values in."""
    return "int8" if levels < 127 else "int16" if levels < 32767 else "int32" if levels < 2**31 - 1 else "int64"


def read(
    conn: sa.Connection,
    ds: Dataset,
    symbols: Sequence[str],
    start: dt.date | None = None,
    end: dt.date | None = None,
    since: Mapping[str, dt.date] | None = None,
    until: Mapping[str, dt.date] | None = None,
) -> Columns:
    """The rows of `symbols` (in that order, once each) dated from `start` (or `since[symbol]`, the
    later of the two) to `end`, inclusive; open bounds when None. Call it on a `snapshot`.
    `until[symbol]`: that symbol's rows dated after it are left out too, and counted (`beyond`)."""
    symbols = list(dict.fromkeys(symbols))
    since = since or {}
    stop = {s: _day(d) for s, d in (until or {}).items()}
    beyond = np.zeros(len(symbols), dtype="int64"), np.full(len(symbols), _NO_DAY, dtype="int32")
    first = {s: max([d for d in (start, since.get(s)) if d is not None], default=None) for s in symbols}
    state = _state(conn, ds, symbols)
    passed_over: dict[str, list[str]] = {}
    plan: dict[str, str] = {}  # "blocks" (blocks + tail) or "rows"
    for symbol in symbols:
        trouble = state.trouble(symbol)
        if trouble is not None:
            passed_over.setdefault(trouble, []).append(symbol)
        plan[symbol] = "blocks" if symbol in state.seals and trouble is None else "rows"

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

    last_year = end.year if end is not None else 9999
    keys = {  # the blocks each symbol's dates need
        s: covering(sorted(state.blocks.get(s, {})), first[s].year if first[s] is not None else 1, last_year)
        for s in symbols if plan[s] == "blocks"
    }
    block_rows = {s: sum(state.blocks[s][k][0] for k in keys[s]) for s in keys}
    out = _alloc(ds, int(row_counts.sum()) + sum(block_rows.values()))
    counts = np.zeros(len(symbols), dtype="int64")
    at = 0

    def ensure(n: int) -> None:
        nonlocal out
        if at + n > len(out):  # rows read instead of blocks can be more than the blocks said
            grown = _alloc(ds, 2 * (at + n))
            grown.days[:at] = out.days[:at]
            for c in ds.columns:
                grown.values[c][:at] = out.values[c][:at]
            for c in ds.integers:
                grown.missing[c][:at] = out.missing[c][:at]
            out = grown

    def put(part: _Rows) -> int:
        n = len(part)
        ensure(n)
        out.days[at : at + n] = part.days
        for c in ds.columns:
            out.values[c][at : at + n] = part.values[c]
        for c in ds.integers:
            out.missing[c][at : at + n] = part.missing[c]
        return n

    def cut(k: int, symbol: str, days: np.ndarray, a: int, b: int) -> int:
        """Where rows a..b (of `days`, by date) end once the symbol's `until` leaves out those after it."""
        c = stop.get(symbol)
        if c is None or b <= a or days[b - 1] <= c:
            return b
        j = max(a, int(np.searchsorted(days[:b], c, side="right")))
        beyond[0][k] += b - j
        beyond[1][k] = max(int(beyond[1][k]), int(days[b - 1]))
        return j

    def put_blocks(k: int, symbol: str, batches: list) -> int:
        """Copy the symbol's block batches (in key order) into `out`, cut to its dates."""
        lo = _day(first[symbol]) if first[symbol] is not None else None
        hi = _day(end) if end is not None else None
        ensure(sum(batch.num_rows for batch in batches))
        n = 0
        for batch in batches:
            a, b = 0, batch.num_rows
            if b and (lo is not None or hi is not None or symbol in stop):
                days = block_days(batch)
                if lo is not None and days[0] < lo:
                    a = int(np.searchsorted(days, lo, side="left"))
                if hi is not None and days[-1] > hi:
                    b = int(np.searchsorted(days, hi, side="right"))
                b = cut(k, symbol, days, a, b)
            if b > a:
                copy_block(ds, batch, a, b, out, at + n)
                n += b - a
        return n

    for chunk_start in range(0, len(symbols), _BLOCK_CHUNK):
        chunk = symbols[chunk_start : chunk_start + _BLOCK_CHUNK]
        sealed = [s for s in chunk if plan[s] == "blocks" and keys[s]]
        batches: dict[str, list] = {}
        fallback: dict[str, tuple[int, int]] = {}
        decoded = _empty_rows(ds)
        if sealed:
            low = min(keys[s][0] for s in sealed)
            high = max(keys[s][-1] for s in sealed)
            try:
                for symbol, key, payload in _blocks_of(conn, ds, sealed, low, high):
                    key = int(key)
                    if key in keys[symbol]:
                        batch = open_block(ds, payload)
                        if batch.num_rows != state.blocks[symbol][key][0]:
                            raise BlockError("the blocks hold other row counts than recorded")
                        batches.setdefault(symbol, []).append(batch)
                if any(len(batches.get(s, ())) != len(keys[s]) for s in sealed):
                    raise BlockError("a block went missing")
            except BlockError as exc:
                for symbol in sealed:  # read these from their rows instead
                    passed_over.setdefault(f"unreadable ({exc})", []).append(symbol)
                batches = {}
                decoded = read_rows(conn, ds, [(s, first[s], state.seals[s][0]) for s in sealed])
                fallback = _segments_by_owner(decoded.owner, sealed)
        for offset, symbol in enumerate(chunk):
            k = chunk_start + offset
            n = 0
            if symbol in batches:
                try:
                    n += put_blocks(k, symbol, batches[symbol])
                    at += n
                except BlockError as exc:  # values the format does not allow: this symbol from its rows
                    passed_over.setdefault(f"unreadable ({exc})", []).append(symbol)
                    beyond[0][k], beyond[1][k] = 0, _NO_DAY  # counted again from the rows
                    fallback[symbol] = (len(decoded), len(decoded))
                    decoded = _concat(ds, [decoded, read_rows(conn, ds, [(symbol, first[symbol], state.seals[symbol][0])])])
                    fallback[symbol] = (fallback[symbol][0], len(decoded))
            if symbol in fallback:
                lo, hi = fallback[symbol]
                part = decoded.take(slice(lo, hi))
                if end is not None:
                    part = part.take(part.days <= _day(end))
                part = part.take(slice(0, cut(k, symbol, part.days, 0, len(part))))
                n += put(part)
                at += len(part)
            tail = rows.take(slice(int(row_offsets[k]), int(row_offsets[k + 1])))
            tail = tail.take(slice(0, cut(k, symbol, tail.days, 0, len(tail))))
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
        ds, symbols, counts, out.days[:at], {c: v[:at] for c, v in out.values.items()}, {c: m[:at] for c, m in out.missing.items()},
        beyond if stop else None,
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


def _put_blocks(conn: sa.Connection, ds: Dataset, symbol: str, blocks: Sequence[tuple[int, int, bytes]]) -> None:
    """Insert or replace the symbol's blocks of these keys: (key, rows, bytes) each."""
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
    for part in _chunks(list(blocks), 40):
        params = []
        for year, n, payload in part:
            params += [ds.table, symbol, year, n, FORMAT, payload]
        conn.exec_driver_sql(
            f"INSERT INTO column_blocks (dataset, symbol, year, rows, format, payload) VALUES "
            f"{', '.join(['(?, ?, ?, ?, ?, ?)'] * len(part))} {_UPSERT_BLOCK}",
            tuple(params),
        )


def _block_keys(conn: sa.Connection, ds: Dataset, symbol: str) -> list[int]:
    m = _marker(conn)
    return sorted(int(r[0]) for r in _fetch(conn, f"SELECT year FROM column_blocks WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol)))


def _delete_blocks(conn: sa.Connection, ds: Dataset, symbol: str, keys: Iterable[int] | None = None) -> None:
    """Delete the symbol's blocks of these keys (all of them when None)."""
    m = _marker(conn)
    if keys is None:
        conn.exec_driver_sql(f"DELETE FROM column_blocks WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))
        return
    for key in keys:
        conn.exec_driver_sql(f"DELETE FROM column_blocks WHERE dataset = {m} AND symbol = {m} AND year = {m}", (ds.table, symbol, key))


def _lay_out(conn: sa.Connection, ds: Dataset, symbol: str, rows: _Rows) -> None:
    """Replace all the symbol's blocks with `rows` (every row under its seal, by date), laid out for a
    seal in the year of the last of them."""
    _delete_blocks(conn, ds, symbol)
    if len(rows):
        _put_blocks(conn, ds, symbol, encode_blocks(ds, rows, int(_years(rows.days[-1:])[0])))


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


def _mark_dirty(conn: sa.Connection, ds: Dataset, symbol: str, years: Iterable[int]) -> None:
    m = _marker(conn)
    for year in sorted(set(years)):
        conn.exec_driver_sql(
            f"INSERT INTO column_dirty (dataset, symbol, year) VALUES ({m}, {m}, {m}) ON CONFLICT DO NOTHING", (ds.table, symbol, year)
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
                _lay_out(conn, ds, symbol, mine)
                _put_seal(conn, ds, symbol, _date(mine.days[-1]), len(mine))
                sealed += len(mine)
    return sealed


def rebuild_all(conn: sa.Connection, ds: Dataset) -> int:
    """Rebuild every symbol's blocks (the symbols with rows, and drop those of symbols without)."""
    symbols = [r[0] for r in _fetch(conn, f"SELECT DISTINCT symbol FROM {ds.table}", ())]
    stale = [r[0] for r in _fetch(conn, f"SELECT symbol FROM column_seals WHERE dataset = {_marker(conn)}", (ds.table,))]
    for symbol in set(stale) - set(symbols):
        _drop_symbol(conn, ds, symbol)
    sealed = rebuild(conn, ds, sorted(symbols))
    if conn.dialect.name == "sqlite" and _has_marks(conn):
        _set_mark(conn, ds)  # every symbol's blocks were just made from its rows
    return sealed


# ---- SQLite: the watermark --------------------------------------------------------------------------
def _set_mark(conn: sa.Connection, ds: Dataset) -> None:
    """Move the watermark to the table's highest rowid (every row at or under it looked at)."""
    conn.exec_driver_sql(
        "INSERT INTO column_marks (dataset, row_mark) VALUES (?, ?) ON CONFLICT (dataset) DO UPDATE SET row_mark = excluded.row_mark",
        (ds.table, _top(conn, ds)),
    )


def reset_marks(conn: sa.Connection, ds: Dataset) -> set[str]:
    """SQLite: check every sealed symbol's rows under its seal (counted from the index), mark out of
    step those that are not their blocks', and set the watermark over every row; returns those
    symbols. What a migration runs once the triggers are in place, and a write when the watermark
    is void. A no-op on PostgreSQL."""
    if conn.dialect.name != "sqlite":
        return set()
    sealed = [r[0] for r in _fetch(conn, "SELECT symbol FROM column_seals WHERE dataset = ?", (ds.table,))]
    bad = _counted_under_seals(conn, ds, sealed)
    for symbol in sorted(bad):
        _mark_dirty(conn, ds, symbol, _block_keys(conn, ds, symbol))
    _set_mark(conn, ds)
    return bad


# ---- after a write ----------------------------------------------------------------------------------
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


def after_write(conn: sa.Connection, ds: Dataset, written: Mapping[str, pd.DataFrame]) -> None:
    """Bring the blocks of the symbols just written in step with their rows, in the write's
    transaction: rebuild what the triggers marked (and on SQLite what shows above the watermark),
    fold a tail that reached its limit, move the watermark. `written`: symbol -> the frame written
    (sorted by date, one row per date; a DataFrame, or a mapping of numpy arrays), used instead of
    reading the rows back whenever it is exactly what a block or the tail holds (a first load, a
    re-fetch, new days, recomputed returns)."""
    symbols = sorted(written)
    if not symbols:
        return
    m = _marker(conn)
    states = _write_states(conn, ds, symbols)
    marked = conn.dialect.name == "sqlite" and _has_marks(conn)
    if marked:
        _look_above_mark(conn, ds, states)
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
    if marked:
        _set_mark(conn, ds)


def _look_above_mark(conn: sa.Connection, ds: Dataset, states: dict[str, _WriteState]) -> None:
    """SQLite, before a write's blocks are brought in step: the rows above the watermark (this write's,
    and any other writer's since the last write here) dated under a seal and above its mark are marked
    out of step, the written symbols' in `states` to be rebuilt now. A void watermark: every sealed
    symbol's rows are counted instead (`reset_marks`)."""
    mark = _watermark(conn, ds)
    if mark is None:
        found = {s: set(_block_keys(conn, ds, s)) for s in reset_marks(conn, ds)}
    else:
        found = _above_mark(conn, ds, mark, skip=[s for s, state in states.items() if state.seal is None])
    for symbol, years in found.items():
        if symbol in states:
            states[symbol].dirty |= years
        elif mark is not None:
            _mark_dirty(conn, ds, symbol, years)


def _under_seal(conn: sa.Connection, ds: Dataset, symbol: str, through: dt.date, frame: pd.DataFrame) -> _Rows:
    """The symbol's rows dated through `through`: the frame just written when it holds every one of
    them (as many as are stored), else read back."""
    m = _marker(conn)
    mine = rows_of_frame(ds, frame)
    mine = mine.take(mine.days <= _day(through))
    stored = _fetch(
        conn, f"SELECT count(*) FROM {ds.table} WHERE symbol = {m} AND date <= {m}",
        (symbol, through.isoformat() if conn.dialect.name == "sqlite" else through),
    )[0][0]
    if int(stored) == len(mine):
        return mine
    rows = read_rows(conn, ds, [(symbol, None, through)])
    rows.owner = None
    return rows


def _rebuild_years(
    conn: sa.Connection, ds: Dataset, symbol: str, seal: tuple[dt.date, int], years: set[int], frame: pd.DataFrame
) -> tuple[dt.date, int] | None:
    """Rebuild the blocks covering the marked years from the rows dated through the seal: from the
    frame just written where it holds every such row (a re-fetch), else read back. Blocks of one
    year each are rebuilt alone; a mark in a block of several years lays the symbol's blocks out
    again from all its rows under the seal."""
    through = seal[0]
    wanted = sorted(y for y in years if y <= through.year)
    m = _marker(conn)
    if wanted:
        keys = _block_keys(conn, ds, symbol)
        affected = {next((k for k in keys if k >= y), None) for y in wanted}
        if None in affected or not all(_single_year(keys, k) for k in affected):
            _lay_out(conn, ds, symbol, _under_seal(conn, ds, symbol, through, frame))
        else:
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
            _delete_blocks(conn, ds, symbol, [y for y in wanted if not len(parts[y])])
            _put_blocks(conn, ds, symbol, [(y, len(parts[y]), encode(ds, parts[y])) for y in wanted if len(parts[y])])
    conn.exec_driver_sql(f"DELETE FROM column_dirty WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))
    total = _fetch(conn, f"SELECT sum(rows) FROM column_blocks WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))[0][0]
    if not total:
        conn.exec_driver_sql(f"DELETE FROM column_seals WHERE dataset = {m} AND symbol = {m}", (ds.table, symbol))
        return None
    _put_seal(conn, ds, symbol, through, int(total))
    return through, int(total)


def _seal(conn: sa.Connection, ds: Dataset, symbol: str, seal: tuple[dt.date, int] | None, frame: pd.DataFrame, tail_count: int) -> None:
    """Fold the symbol's tail (its rows after the seal) into its blocks: into the seal year's block
    when the tail stays in that year, else the blocks laid out again for the tail's last year."""
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
    sealed = (seal[1] if seal else 0) + len(tail)
    if seal is None:
        _lay_out(conn, ds, symbol, tail)
    else:
        keys = _block_keys(conn, ds, symbol)
        year = seal[0].year
        try:
            if keys and keys[-1] == year and int(_years(tail.days[-1:])[0]) == year:
                (block,) = [rows for _, rows in _stored_blocks(conn, ds, symbol, [year])]
                block = _concat(ds, [block.take(block.days <= after), tail])
                _put_blocks(conn, ds, symbol, [(year, len(block), encode(ds, block))])
            else:  # into a new year: the year leaving the last two joins the block of the older ones
                old = [block.take(block.days <= after) for _, block in _stored_blocks(conn, ds, symbol, keys)]
                _lay_out(conn, ds, symbol, _concat(ds, [*old, tail]))
        except BlockError:  # bytes that do not decode: every block again from the rows
            rows = read_rows(conn, ds, [(symbol, None, _date(tail.days[-1]))])
            rows.owner = None
            _lay_out(conn, ds, symbol, rows)
            sealed = len(rows)
    _put_seal(conn, ds, symbol, _date(tail.days[-1]), sealed)


def _stored_blocks(conn: sa.Connection, ds: Dataset, symbol: str, keys: Sequence[int]) -> list[tuple[int, _Rows]]:
    if not keys:
        return []
    fetched = [row for row in _blocks_of(conn, ds, [symbol], min(keys), max(keys)) if int(row[1]) in set(keys)]
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
        # rowid instead (_state, _sqlite_unsealed_inserts)
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


def mark_sql(ds: Dataset, dialect: str) -> list[str]:
    """SQLite: the trigger voiding the watermark when the row at it is deleted (see `_watermark`);
    with `reset_marks` after it, in a dataset's migration. Nothing on PostgreSQL (an insert is marked
    by its trigger)."""
    if dialect != "sqlite":
        return []
    t = ds.table
    return [
        f"CREATE TRIGGER column_marks_{t}_delete AFTER DELETE ON {t} "
        f"WHEN OLD.rowid = (SELECT row_mark FROM column_marks WHERE dataset = '{t}') BEGIN "
        f"UPDATE column_marks SET row_mark = -1 WHERE dataset = '{t}'; END"
    ]


def drop_mark_sql(ds: Dataset, dialect: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS column_marks_{ds.table}_delete"] if dialect == "sqlite" else []
