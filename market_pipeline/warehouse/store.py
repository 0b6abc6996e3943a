"""The bar store: per-symbol upserts and reads of `ohlcv_daily`.

Every write of a symbol's bars is one transaction: re-running never duplicates a bar, a later fetch
overwrites a revised bar, and a failure mid-write leaves the symbol's previous rows untouched.

Writes take the bulk path of each engine:

* PostgreSQL: under a per-symbol advisory transaction lock (concurrent writers of one symbol queue;
  writers of different symbols never wait for each other), the bars go to a session-local temporary
  table with one binary `COPY`, then one statement merges them into `ohlcv_daily`: dates the symbol
  already has with `INSERT ... ON CONFLICT DO UPDATE`, new dates with a plain append, and counts
  which dates were new and which changed against the rows as they were before it.
* SQLite (one writer at a time anyway): the symbol's stored rows in the incoming date range are read
  once (raw DBAPI rows, compared with numpy) and the bars written with multi-row
  `INSERT ... ON CONFLICT DO UPDATE` statements of 500 bars. A batch of many symbols (a grouped
  refresh) is read, compared and written the same way for all of them at once.

Every write ends, in its transaction, by bringing the symbols' column blocks in step
(`warehouse.columns.after_write`): bar frames are read from the blocks plus each symbol's short tail
of newer rows. The other read paths (its last stored dates, its count and date range) are served by
the primary key (symbol, date); no other index is needed.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, repeat

import numpy as np
import pandas as pd
import sqlalchemy as sa

from market_pipeline import settings
from market_pipeline.polygon.bars import BAR_COLUMNS, empty_bars
from market_pipeline.warehouse import columns, revisions
from market_pipeline.warehouse.columns import pg_copy as _pg_copy
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import BAR_VALUE_COLUMNS, ohlcv_daily
from market_pipeline.warehouse.timestamps import as_date, clock_at, utcnow  # noqa: F401  (imported from here too)

_INSERT_COLUMNS = ("symbol", *BAR_COLUMNS, "fetched_at")
_FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")
_UPDATES = ", ".join(f"{c} = excluded.{c}" for c in (*BAR_VALUE_COLUMNS, "fetched_at"))


@dataclass(frozen=True)
class UpsertResult:
    rows_upserted: int  # rows written (new + existing)
    rows_inserted: int  # dates the symbol did not have
    rows_changed: int  # existing dates whose values differed (late corrections)
    fetched_at: dt.datetime | None = None  # the `fetched_at` stamped on every row written
    # the symbol's (bar count, first date, last date) just after the write, in its transaction, when
    # the write could tell at no extra cost (SQLite, one symbol); None: ask BarStore.summary
    stored: tuple[int, dt.date, dt.date] | None = None
    # the dates whose previous values the write kept in ohlcv_revisions (the changed ones)
    revised: tuple[dt.date, ...] = ()


# ---- frame -> column arrays ---------------------------------------------------------------------
def _days(frame: pd.DataFrame) -> np.ndarray:
    """The bar dates as datetime64[D]."""
    return np.asarray(frame["date"].to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]")


def _floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype="float64", na_value=np.nan)


def _transactions(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, missing mask) of the nullable `transactions` column."""
    column = frame["transactions"]
    if not isinstance(column.dtype, pd.Int64Dtype):
        column = column.astype("Int64")
    mask = column.isna().to_numpy()
    return column.to_numpy(dtype="int64", na_value=0), mask


def _nullable(values: np.ndarray) -> list:
    """Floats as Python floats, NaN as None (NULL on every engine; PostgreSQL would store NaN)."""
    out = values.tolist()
    missing = np.isnan(values)
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            out[i] = None
    return out


def _bar_columns(frame: pd.DataFrame) -> list[list]:
    """The bars' values column by column in BAR_COLUMNS order; dates as ISO text, NaN as NULL."""
    dates = np.datetime_as_string(_days(frame), unit="D").tolist()
    values = [_nullable(_floats(frame, c)) for c in _FLOAT_COLUMNS]
    tx, missing = _transactions(frame)
    tx_list = tx.tolist()
    for i in np.flatnonzero(missing).tolist():
        tx_list[i] = None
    return [dates, *values, tx_list]


def _symbol_bars(symbol: str, frame: pd.DataFrame):
    """DBAPI parameter tuples (symbol, *BAR_COLUMNS) per bar (a lazy iterator)."""
    return zip(repeat(symbol), *_bar_columns(frame))


def _rows(symbol: str, frame: pd.DataFrame, fetched_at: dt.datetime):
    """DBAPI parameter tuples in _INSERT_COLUMNS order (a lazy iterator)."""
    return zip(repeat(symbol), *_bar_columns(frame), repeat(fetched_at.isoformat(sep=" ")))


# ---- PostgreSQL: binary COPY into a temporary table, one merge statement ----------------------------
_PG_EPOCH = np.datetime64("2000-01-01", "D")  # day 0 of PostgreSQL's binary date format
_PG_NO_TX = -(2**63)  # stands for a NULL transaction count inside the COPY stream (never a real count)
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_PG_COPY_TRAILER = b"\xff\xff"
_PG_STAGE_COLUMNS = ("date", *_FLOAT_COLUMNS, "transactions")
# one binary COPY tuple: field count, then (length, big-endian value) per field; all fixed width
_PG_ROW = np.dtype(
    [("fields", ">i2"), ("date_len", ">i4"), ("date", ">i4")]
    + [item for c in _FLOAT_COLUMNS for item in ((f"{c}_len", ">i4"), (c, ">f8"))]
    + [("transactions_len", ">i4"), ("transactions", ">i8")]
)
_PG_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS ohlcv_stage (
    date date NOT NULL, open float8, high float8, low float8, close float8, volume float8,
    vwap float8, transactions int8
) ON COMMIT DELETE ROWS
"""
_PG_COPY_IN = f"COPY ohlcv_stage ({', '.join(_PG_STAGE_COLUMNS)}) FROM STDIN WITH (FORMAT binary)"
_PG_VALUES = ", ".join(f"NULLIF({c}, 'NaN'::float8) AS {c}" for c in _FLOAT_COLUMNS)
_PG_OLD = ", ".join(f"t.{c}" for c in BAR_VALUE_COLUMNS)
_PG_NEW = ", ".join(f"s.{c}" for c in BAR_VALUE_COLUMNS)
_PG_LOCK_NAMESPACE = 0x4F484C43  # "OHLC": pg_advisory_xact_lock(namespace, hashtext(symbol))
# One statement; every part of it sees the table as it was when the statement started (after the
# symbol's lock was granted), so `matched` says exactly which dates are new and which changed.
# Existing dates are merged with INSERT ... ON CONFLICT DO UPDATE. New dates skip the speculative
# insertion of ON CONFLICT (2-3x dearer per row): under the symbol's lock no other upsert_bars can add
# them, and should any other writer have done so the primary key fails the whole transaction. The
# same statement keeps the changed bars' previous values and records the runs of new dates
# (warehouse.revisions), so a change never commits without its revision.
_PG_MERGE = f"""
WITH src AS (
    SELECT date, {_PG_VALUES}, NULLIF(transactions, '{_PG_NO_TX}'::int8) AS transactions FROM ohlcv_stage
),
matched AS (
    SELECT s.*, t.date IS NOT NULL AS existed,
           t.date IS NOT NULL AND ({_PG_OLD}) IS DISTINCT FROM ({_PG_NEW}) AS changed, {revisions.PG_OLD_VALUES}
    FROM src s LEFT JOIN ohlcv_daily t ON t.symbol = %(symbol)s AND t.date = s.date
),
appended AS (
    INSERT INTO ohlcv_daily ({", ".join(_INSERT_COLUMNS)})
    SELECT %(symbol)s, {", ".join(_PG_STAGE_COLUMNS)}, %(fetched_at)s FROM matched WHERE NOT existed ORDER BY date
    RETURNING 1
),
merged AS (
    INSERT INTO ohlcv_daily ({", ".join(_INSERT_COLUMNS)})
    SELECT %(symbol)s, {", ".join(_PG_STAGE_COLUMNS)}, %(fetched_at)s FROM matched WHERE existed ORDER BY date
    ON CONFLICT (symbol, date) DO UPDATE SET {_UPDATES}
    RETURNING 1
),{revisions.PG_MERGE_REVISIONS}
SELECT (SELECT count(*) FROM appended), (SELECT count(*) FROM merged), count(*) FILTER (WHERE changed),
       (SELECT count(*) FROM superseded) + (SELECT count(*) FROM arrived), array_agg(date ORDER BY date) FILTER (WHERE changed)
FROM matched
"""
# The same when the symbol has no row in the incoming date range (a first load, a run of new days).
_PG_APPEND = f"""
INSERT INTO ohlcv_daily ({", ".join(_INSERT_COLUMNS)})
SELECT %(symbol)s, date, {_PG_VALUES}, NULLIF(transactions, '{_PG_NO_TX}'::int8), %(fetched_at)s
FROM ohlcv_stage ORDER BY date
"""
_PG_ANY_STORED = "SELECT EXISTS (SELECT 1 FROM ohlcv_daily WHERE symbol = %s AND date BETWEEN %s AND %s)"


def _pg_copy_payload(frame: pd.DataFrame) -> bytes:
    """The bars as a PostgreSQL binary COPY stream for `ohlcv_stage` (NaN and _PG_NO_TX mark NULLs)."""
    rows = np.empty(len(frame), dtype=_PG_ROW)
    rows["fields"] = len(_PG_STAGE_COLUMNS)
    rows["date_len"] = 4
    rows["date"] = (_days(frame) - _PG_EPOCH).astype("int64")
    for column in _FLOAT_COLUMNS:
        rows[f"{column}_len"] = 8
        rows[column] = _floats(frame, column)
    tx, missing = _transactions(frame)
    rows["transactions_len"] = 8
    rows["transactions"] = np.where(missing, _PG_NO_TX, tx)
    return _PG_COPY_HEADER + rows.tobytes() + _PG_COPY_TRAILER


def _pg_read_query(symbol: str, start: dt.date | None, end: dt.date | None) -> tuple[str, tuple]:
    """The SELECT behind a PostgreSQL frame read (NULLs as NaN / _PG_NO_TX: fixed-width binary rows)."""
    where, params = "symbol = %s", [symbol]
    if start is not None:
        where += " AND date >= %s"
        params.append(start)
    if end is not None:
        where += " AND date <= %s"
        params.append(end)
    values = ", ".join(f"COALESCE({c}, 'NaN'::float8)" for c in _FLOAT_COLUMNS)
    sql = (
        f"SELECT date, {values}, COALESCE(transactions, '{_PG_NO_TX}'::int8) FROM ohlcv_daily "
        f"WHERE {where} ORDER BY date"
    )
    return sql, tuple(params)


def _pg_read(conn: sa.Connection, symbol: str, start: dt.date | None, end: dt.date | None) -> pd.DataFrame:
    """A symbol's bars through a binary COPY, parsed with numpy (3-4x faster than fetching rows)."""
    query, params = _pg_read_query(symbol, start, end)
    sql = f"COPY ({query}) TO STDOUT WITH (FORMAT binary)"
    stream = io.BytesIO()
    _pg_copy(conn, sql, params, stream)
    payload = stream.getbuffer()
    count, extra = divmod(len(payload) - len(_PG_COPY_HEADER) - len(_PG_COPY_TRAILER), _PG_ROW.itemsize)
    if extra or payload[: len(_PG_COPY_HEADER)] != _PG_COPY_HEADER:
        raise RuntimeError(f"unexpected binary COPY stream from PostgreSQL reading {symbol}")
    if count == 0:
        return empty_bars()
    rows = np.frombuffer(payload, dtype=_PG_ROW, count=count, offset=len(_PG_COPY_HEADER))
    data = {"date": (_PG_EPOCH + rows["date"].astype("int64")).astype("datetime64[ns]")}
    for column in _FLOAT_COLUMNS:
        data[column] = rows[column].astype("float64")
    tx = rows["transactions"].astype("int64")
    missing = tx == _PG_NO_TX
    data["transactions"] = pd.arrays.IntegerArray(np.where(missing, 0, tx), missing)
    return pd.DataFrame(data, columns=list(BAR_COLUMNS))


# ---- SQLite: read the stored range once, diff with numpy, executemany -------------------------------
def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _as_float(values) -> np.ndarray:
    """A column of DBAPI values (None for NULL) as float64 with NaN for NULL."""
    return np.array(values, dtype="float64")


def _diff(stored: list[tuple], frame: pd.DataFrame, dates: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(found, changed): which of `frame`'s dates the stored rows (date text, *BAR_VALUE_COLUMNS) hold,
    and which of those hold other values."""
    found = np.zeros(len(frame), dtype=bool)
    differs = np.zeros(len(frame), dtype=bool)
    if not stored:
        return found, differs
    columns = list(zip(*stored))
    position = pd.Index(columns[0]).get_indexer(dates)
    found = position >= 0
    at = position[found]
    changed = np.zeros(len(at), dtype=bool)
    for i, column in enumerate(BAR_VALUE_COLUMNS, start=1):
        old = _as_float(columns[i])[at]
        new = frame[column].to_numpy(dtype="float64", na_value=np.nan)[found]
        changed |= ~_same(old, new)
    differs[found] = changed
    return found, differs


def _record_revisions(
    conn: sa.Connection, symbols: np.ndarray, dates: np.ndarray, found: np.ndarray, differs: np.ndarray,
    stored_keys: np.ndarray, fetched_at: dt.datetime,
) -> None:
    """Before a write of these bars (symbol and ISO date each, by symbol then date): keep the values it
    replaces (`differs`) and record its runs of new dates (not `found`), in its transaction."""
    if differs.any():
        revisions.keep_superseded(conn, list(zip(symbols[differs].tolist(), dates[differs].tolist())), fetched_at)
    if not found.all():
        keys = np.char.add(np.char.add(symbols.astype(str), "|"), dates.astype(str))
        revisions.record_insertions(conn, revisions.insertion_runs(symbols, keys, ~found, stored_keys, dates), fetched_at)


def normalize_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """A bar frame as it is stored: ordered by date, one row per date (the last one wins)."""
    if not frame["date"].is_monotonic_increasing:
        frame = frame.sort_values("date", kind="stable")
    if frame["date"].duplicated().any():
        frame = frame.drop_duplicates("date", keep="last")
    return frame


# Multi-row VALUES statements of up to _SQLITE_CHUNK bars, not one executemany: sqlite3 releases the GIL
# around every statement step, so an executemany of 5,000 rows hands the GIL over 5,000 times, and
# while fetch threads decode JSON (one long C call that never yields) each hand-over waits for them:
# measured 74 ms a symbol against 22 ms alone. Eleven statements a symbol hand it over eleven times;
# full chunks reuse one prepared statement (sqlite3's statement cache), alone they cost the same as
# executemany. ?1 is fetched_at, shared by every row.
_SQLITE_CHUNK = 500
_SQLITE_PER_ROW = len(_INSERT_COLUMNS) - 1  # every column but fetched_at


@lru_cache(maxsize=64)
def _sqlite_upsert_sql(rows: int) -> str:
    per_row = _SQLITE_PER_ROW
    values = ", ".join(
        "(" + ", ".join(f"?{2 + per_row * k + j}" for j in range(per_row)) + ", ?1)" for k in range(rows)
    )
    return (
        f"INSERT INTO ohlcv_daily ({', '.join(_INSERT_COLUMNS)}) VALUES {values} "
        f"ON CONFLICT (symbol, date) DO UPDATE SET {_UPDATES}"
    )


def _sqlite_write(conn: sa.Connection, rows, fetched_at: dt.datetime) -> None:
    """Bars as (symbol, *BAR_COLUMNS) tuples, written by INSERT ... ON CONFLICT DO UPDATE statements
    of _SQLITE_CHUNK rows each, every row stamped `fetched_at`."""
    rows = list(rows)
    stamp = fetched_at.isoformat(sep=" ")
    for i in range(0, len(rows), _SQLITE_CHUNK):
        part = rows[i : i + _SQLITE_CHUNK]
        conn.exec_driver_sql(_sqlite_upsert_sql(len(part)), (stamp, *chain.from_iterable(part)))


def _sqlite_stored(conn: sa.Connection, symbol: str, dates: list[str], in_range: int) -> tuple[int, dt.date, dt.date]:
    """The symbol's (count, first date, last date) right after a write of `dates` (ordered) in this
    transaction: the rows in the written range are those that were there plus the new ones
    (`in_range`); the rows before and after it are counted with two index range reads, which are
    empty on a first load (a `count(*)` over the whole symbol would read every bar just written)."""
    before = conn.exec_driver_sql(
        "SELECT count(*), min(date) FROM ohlcv_daily WHERE symbol = ? AND date < ?", (symbol, dates[0])
    ).one()
    after = conn.exec_driver_sql(
        "SELECT count(*), max(date) FROM ohlcv_daily WHERE symbol = ? AND date > ?", (symbol, dates[-1])
    ).one()
    first = as_date(before[1]) if before[0] else dt.date.fromisoformat(dates[0])
    last = as_date(after[1]) if after[0] else dt.date.fromisoformat(dates[-1])
    return int(before[0]) + in_range + int(after[0]), first, last


def _segments_ordered(days: np.ndarray, counts: np.ndarray) -> bool:
    """Whether every segment (one symbol's bars, `counts` long each, back to back) has strictly
    increasing dates: ordered, and no date twice."""
    if len(days) < 2:
        return True
    rising = days[1:] > days[:-1]
    starts = np.cumsum(counts)[:-1]  # where a new symbol begins: no order between symbols
    rising[starts[(starts > 0) & (starts < len(days))] - 1] = True
    return bool(rising.all())


def _sqlite_merge_many(conn: sa.Connection, items: list[tuple[str, pd.DataFrame]], fetched_at: dt.datetime) -> dict:
    """Many symbols' bars in set-based statements (what a grouped refresh writes: a few new dates for
    hundreds of symbols): the stored rows of all of them in the batch's date range read in one query
    per 500 symbols, compared with numpy on (symbol, date), and every bar written by multi-row
    INSERT ... ON CONFLICT statements of _SQLITE_CHUNK rows. symbol -> (written, new, changed);
    the same rows and counts as symbol by symbol."""
    if not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock before the read (see _merge_portable)
    symbols = [symbol for symbol, _ in items]
    frames = [frame for _, frame in items]
    counts = np.array([len(frame) for frame in frames])
    days = np.concatenate([_days(frame) for frame in frames])
    if not _segments_ordered(days, counts):
        frames = [normalize_bars(frame) for frame in frames]
        counts = np.array([len(frame) for frame in frames])
        days = np.concatenate([_days(frame) for frame in frames])
    owner = np.repeat(np.arange(len(symbols)), counts)
    dates = np.datetime_as_string(days, unit="D")
    keys = np.char.add(np.char.add(np.array(symbols)[owner], "|"), dates)
    new_values = [np.concatenate([_floats(frame, c) for frame in frames]) for c in _FLOAT_COLUMNS]
    tx_parts = [_transactions(frame) for frame in frames]
    tx = np.concatenate([values for values, _ in tx_parts])
    tx_missing = np.concatenate([missing for _, missing in tx_parts])

    stored: list[tuple] = []
    low, high = str(days.min()), str(days.max())
    for i in range(0, len(symbols), 500):
        part = symbols[i : i + 500]
        stored += _raw_rows(conn.exec_driver_sql(
            f"SELECT symbol, date, {', '.join(BAR_VALUE_COLUMNS)} FROM ohlcv_daily "
            f"WHERE symbol IN ({', '.join('?' * len(part))}) AND date >= ? AND date <= ?",
            (*part, low, high),
        ))
    found = np.zeros(len(keys), dtype=bool)
    differs = np.zeros(len(keys), dtype=bool)
    stored_keys = np.empty(0, dtype=str)
    if stored:
        columns = list(zip(*stored))
        stored_keys = np.char.add(np.char.add(np.array(columns[0], dtype=str), "|"), np.array(columns[1], dtype=str))
        position = pd.Index(stored_keys).get_indexer(keys)
        found = position >= 0
        at = position[found]
        new_all = [*new_values, np.where(tx_missing, np.nan, tx.astype("float64"))]
        for i, column in enumerate(BAR_VALUE_COLUMNS, start=2):
            old = _as_float(columns[i])[at]
            new = new_all[BAR_VALUE_COLUMNS.index(column)][found]
            differs[found] |= ~_same(old, new)
    inserted = np.bincount(owner[~found], minlength=len(symbols))
    changed = np.bincount(owner[differs], minlength=len(symbols))

    _record_revisions(conn, np.array(symbols)[owner], dates, found, differs, stored_keys, fetched_at)
    _sqlite_write(conn, chain.from_iterable(map(_symbol_bars, symbols, frames)), fetched_at)
    revised: dict[int, list[dt.date]] = {}
    for k, day in zip(owner[differs].tolist(), dates[differs].tolist()):
        revised.setdefault(k, []).append(dt.date.fromisoformat(day))
    return {
        symbol: (int(count), int(inserted[k]), int(changed[k]), tuple(revised.get(k, ())))
        for k, (symbol, count) in enumerate(zip(symbols, counts.tolist()))
    }


class BarStore:
    """Reads and writes `ohlcv_daily` for one warehouse URL."""

    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or settings.db_url())

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # ---- writes -------------------------------------------------------------------------------
    def upsert_bars(self, symbol: str, frame: pd.DataFrame, fetched_at: dt.datetime | None = None) -> UpsertResult:
        """Write one symbol's bars in one transaction; returns what was new and what changed."""
        if frame.empty:
            return UpsertResult(0, 0, 0)
        return self.upsert_many([(symbol, frame)], fetched_at)[symbol]

    def upsert_many(self, items: list[tuple[str, pd.DataFrame]], fetched_at: dt.datetime | None = None) -> dict[str, UpsertResult]:
        """Write many symbols' bars in ONE transaction (symbol by symbol inside it, in symbol order so
        concurrent writers lock alike); all or nothing. symbol -> what was new and what changed."""
        fetched_at = fetched_at or utcnow()
        out: dict[str, UpsertResult] = {}
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite" and len(items) > 1 and len({symbol for symbol, _ in items}) == len(items):
                ordered = sorted(((symbol, frame) for symbol, frame in items if not frame.empty), key=lambda item: item[0])
                merged = _sqlite_merge_many(conn, ordered, fetched_at) if ordered else {}
                columns.after_write(conn, columns.OHLCV, {symbol: normalize_bars(frame) for symbol, frame in ordered})
                return {
                    symbol: UpsertResult(*merged[symbol][:3], fetched_at, revised=merged[symbol][3])
                    if symbol in merged else UpsertResult(0, 0, 0)
                    for symbol, _ in items
                }
            merge = self._merge_postgresql if conn.dialect.name == "postgresql" else self._merge_portable
            written_frames = {}
            for symbol, frame in sorted(items, key=lambda item: item[0]):
                if frame.empty:
                    out[symbol] = UpsertResult(0, 0, 0)
                else:
                    frame = written_frames[symbol] = normalize_bars(frame)
                    written, inserted, changed, revised, *stored = merge(conn, symbol, frame, fetched_at)
                    out[symbol] = UpsertResult(
                        written, inserted, changed, fetched_at, stored[0] if stored else None, revised=revised
                    )
            # the column blocks of the symbols written, in the same transaction (warehouse.columns)
            columns.after_write(conn, columns.OHLCV, written_frames)
        return out

    @staticmethod
    def _merge_postgresql(conn: sa.Connection, symbol: str, frame: pd.DataFrame, fetched_at: dt.datetime):
        # one writer per symbol at a time (others wait here, then see its rows): exact counts, no
        # deadlock, and the append of new dates below cannot meet a concurrent insert of the same date
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PG_LOCK_NAMESPACE, symbol))
        conn.exec_driver_sql(_PG_STAGE)
        conn.exec_driver_sql("TRUNCATE ohlcv_stage")  # emptied at commit too; TRUNCATE leaves no dead rows behind for the next symbol of an upsert_many to scan
        _pg_copy(conn, _PG_COPY_IN, (), io.BytesIO(_pg_copy_payload(frame)))
        params = {"symbol": symbol, "fetched_at": fetched_at}
        days = _days(frame)
        if not conn.exec_driver_sql(_PG_ANY_STORED, (symbol, days[0].item(), days[-1].item())).scalar():
            inserted = conn.exec_driver_sql(_PG_APPEND, params).rowcount
            # one run of new dates: the symbol had no bar in the written range
            run = revisions.Insertion(symbol, str(days[0]), str(days[-1]), inserted)
            revisions.record_insertions(conn, [run], fetched_at)
            return inserted, inserted, 0, ()
        inserted, existing, changed, recorded, revised = conn.exec_driver_sql(_PG_MERGE, params).one()
        if int(inserted):
            revisions.began_before(conn, fetched_at)
        return int(inserted) + int(existing), int(inserted), int(changed), tuple(revised or ())

    @staticmethod
    def _merge_portable(conn: sa.Connection, symbol: str, frame: pd.DataFrame, fetched_at: dt.datetime):
        marker = _marker(conn)
        if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
            # take the write lock before reading: a writer of the same symbol that commits between
            # our read and our write would otherwise make the counts (not the rows) wrong
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        dates = np.datetime_as_string(_days(frame), unit="D").tolist()
        stored = conn.exec_driver_sql(
            f"SELECT date, {', '.join(BAR_VALUE_COLUMNS)} FROM ohlcv_daily "
            f"WHERE symbol = {marker} AND date >= {marker} AND date <= {marker}",
            (symbol, dates[0], dates[-1]),
        ).fetchall()
        found, differs = _diff(stored, frame, dates)
        inserted, changed = int((~found).sum()), int(differs.sum())
        day_array = np.array(dates)
        stored_keys = np.array([f"{symbol}|{row[0]}" for row in stored], dtype=str)
        _record_revisions(conn, np.full(len(dates), symbol), day_array, found, differs, stored_keys, fetched_at)
        revised = tuple(dt.date.fromisoformat(d) for d in day_array[differs].tolist())
        if conn.dialect.name == "sqlite":
            _sqlite_write(conn, _symbol_bars(symbol, frame), fetched_at)
            return len(frame), inserted, changed, revised, _sqlite_stored(conn, symbol, dates, len(stored) + inserted)
        placeholders = ", ".join([marker] * len(_INSERT_COLUMNS))
        conn.exec_driver_sql(
            f"INSERT INTO ohlcv_daily ({', '.join(_INSERT_COLUMNS)}) VALUES ({placeholders}) "
            f"ON CONFLICT (symbol, date) DO UPDATE SET {_UPDATES}",
            list(_rows(symbol, frame, fetched_at)),
        )
        return len(frame), inserted, changed, revised

    # ---- reads --------------------------------------------------------------------------------
    def _read(self, conn: sa.Connection, symbol: str, start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
        """One symbol's bars from its rows on `conn` (inside its transaction): one query, raw DBAPI rows
        (a binary COPY on PostgreSQL), vectorised conversions. Reads outside a write go through the
        column blocks instead (read_bars, read_bars_many)."""
        if conn.dialect.name == "postgresql":
            return _pg_read(conn, symbol, start, end)
        marker = _marker(conn)
        sql = f"SELECT date, {', '.join(BAR_VALUE_COLUMNS)} FROM ohlcv_daily WHERE symbol = {marker}"
        params: list = [symbol]
        if start is not None:
            sql += f" AND date >= {marker}"
            params.append(start.isoformat())
        if end is not None:
            sql += f" AND date <= {marker}"
            params.append(end.isoformat())
        return _frame_from_rows(_raw_rows(conn.exec_driver_sql(sql + " ORDER BY date", tuple(params))))

    def read_bars_many(self, symbols: list[str], since: dict[str, dt.date] | None = None) -> dict[str, pd.DataFrame]:
        """Several symbols' stored bars (symbol -> bar frame, empty for a symbol without bars), those
        dated on or after `since[symbol]` for a symbol there, as of one moment: through the column
        blocks (warehouse.columns)."""
        with columns.snapshot(self.engine) as conn:
            return columns.read(conn, columns.OHLCV, list(symbols), since=since).frames()

    def read_bars(self, symbol: str, start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
        """One symbol's stored bars as a bar frame (through the column blocks)."""
        with columns.snapshot(self.engine) as conn:
            return columns.read(conn, columns.OHLCV, [symbol], start, end).frames()[symbol]

    def last_bar_rows(self, symbol: str, count: int) -> list[tuple]:
        """The symbol's last `count` stored bars as rows (date, open, high, low, close, volume, vwap,
        transactions; None for NULL), by date: one query on the primary key (a few rows are cheaper
        read as rows than through the column blocks)."""
        with self.engine.connect() as conn:
            marker = _marker(conn)
            rows = _raw_rows(conn.exec_driver_sql(
                f"SELECT date, {', '.join(BAR_VALUE_COLUMNS)} FROM ohlcv_daily WHERE symbol = {marker} "
                f"ORDER BY date DESC LIMIT {int(count)}",
                (symbol,),
            ))
        return rows[::-1]

    def refetch_start(self, symbol: str, window: int) -> dt.date | None:
        """The date of the `window`-th last stored bar (the first date to fetch again), or None if none."""
        return self.refetch_starts([symbol], window)[symbol]

    def refetch_starts(self, symbols: list[str], window: int) -> dict[str, dt.date | None]:
        """`refetch_start` of each symbol, on one connection (one statement each on the primary key)."""
        out: dict[str, dt.date | None] = {}
        with self.engine.connect() as conn:
            sql = f"SELECT date FROM ohlcv_daily WHERE symbol = {_marker(conn)} ORDER BY date DESC LIMIT {max(int(window), 1)}"
            for symbol in symbols:
                dates = [as_date(row[0]) for row in _raw_rows(conn.exec_driver_sql(sql, (symbol,)))]
                out[symbol] = None if not dates else dates[-1] if window > 0 else dates[0] + dt.timedelta(days=1)
        return out

    def count_rows(self) -> int:
        """The number of bars in the table (all symbols)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ohlcv_daily)).scalar_one())

    def summary(self, symbols: list[str] | None = None) -> dict[str, tuple[int, dt.date, dt.date]]:
        """symbol -> (bar count, first date, last date), in one GROUP BY query (per 500 `symbols`:
        SQLite takes at most 32,766 bound values in a statement)."""
        query = sa.select(
            ohlcv_daily.c.symbol,
            sa.func.count(),
            sa.func.min(ohlcv_daily.c.date),
            sa.func.max(ohlcv_daily.c.date),
        ).group_by(ohlcv_daily.c.symbol)
        if symbols is None:
            queries = [query]
        else:
            symbols = list(symbols)
            queries = [query.where(ohlcv_daily.c.symbol.in_(symbols[i : i + 500])) for i in range(0, len(symbols), 500)]
        with self.engine.connect() as conn:
            rows = [row for q in queries for row in conn.execute(q)]
        return {s: (int(n), as_date(lo), as_date(hi)) for s, n, lo, hi in rows}


def _raw_rows(result: sa.CursorResult) -> list[tuple]:
    """All rows as the DBAPI's plain tuples (no SQLAlchemy Row per row: 2-3x faster for bar reads)."""
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def _frame_from_rows(rows: list[tuple]) -> pd.DataFrame:
    """A bar frame from DBAPI rows (date text, *BAR_VALUE_COLUMNS; None for NULL): made a 2-D object
    array in one C loop, then cut into columns (a `zip(*rows)` transpose takes about 1 s a million rows)."""
    if not rows:
        return empty_bars()
    table = np.array(rows, dtype=object)
    data = {"date": table[:, 0].astype("datetime64[D]").astype("datetime64[ns]")}
    for i, column in enumerate(_FLOAT_COLUMNS, start=1):
        data[column] = _as_float(table[:, i])
    tx = table[:, 7]
    missing = tx == None  # noqa: E711 (elementwise)
    data["transactions"] = pd.arrays.IntegerArray(np.where(missing, 0, tx).astype("int64"), missing)
    return pd.DataFrame(data, columns=list(BAR_COLUMNS))


def _marker(conn: sa.Connection) -> str:
    """The DBAPI placeholder: `?` for sqlite3, `%s` for psycopg2."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


