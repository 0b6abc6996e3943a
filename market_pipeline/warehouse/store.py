"""The bar store: per-symbol upserts and reads of `ohlcv_daily`.

Every write of a symbol's bars is one transaction: re-running never duplicates a bar, a later fetch
overwrites a revised bar, and a failure mid-write leaves the symbol's previous rows untouched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from market_pipeline import settings
from market_pipeline.bars import BAR_COLUMNS, empty_bars
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import BAR_VALUE_COLUMNS, ohlcv_daily

_INSERT_COLUMNS = ("symbol", *BAR_COLUMNS, "fetched_at")


def utcnow() -> dt.datetime:
    """Naive UTC now: how the warehouse stores timestamps on every engine."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class UpsertResult:
    rows_upserted: int  # rows written (new + existing)
    rows_inserted: int  # dates the symbol did not have
    rows_changed: int  # existing dates whose values differed (late corrections)


def _nullable(values: np.ndarray) -> list:
    """Floats as Python floats, NaN as None (NULL on every engine; PostgreSQL would store NaN)."""
    return [None if v != v else v for v in values.tolist()]


def _rows(symbol: str, frame: pd.DataFrame, fetched_at: dt.datetime) -> list[tuple]:
    """DBAPI parameter tuples in _INSERT_COLUMNS order; dates as ISO text, NaN as NULL."""
    n = len(frame)
    dates = pd.DatetimeIndex(frame["date"]).strftime("%Y-%m-%d").tolist()
    values = [_nullable(frame[c].to_numpy("float64")) for c in ("open", "high", "low", "close", "volume", "vwap")]
    tx = [None if pd.isna(v) else int(v) for v in frame["transactions"].astype("Int64")]
    stamp = fetched_at.isoformat(sep=" ")
    return list(zip([symbol] * n, dates, *values, tx, [stamp] * n))


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


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
        fetched_at = fetched_at or utcnow()
        rows = _rows(symbol, frame, fetched_at)
        with self.engine.begin() as conn:
            existing = self._read(conn, symbol, frame["date"].min().date(), frame["date"].max().date())
            inserted, changed = self._diff(existing, frame)
            self._write(conn, rows)
        return UpsertResult(len(rows), inserted, changed)

    @staticmethod
    def _diff(existing: pd.DataFrame, incoming: pd.DataFrame) -> tuple[int, int]:
        if existing.empty:
            return len(incoming), 0
        merged = incoming.merge(existing, on="date", how="left", suffixes=("", "_old"), indicator=True)
        new = int((merged["_merge"] == "left_only").sum())
        both = merged[merged["_merge"] == "both"]
        differs = np.zeros(len(both), dtype=bool)
        for column in BAR_VALUE_COLUMNS:
            a = both[column].astype("float64").to_numpy()
            b = both[f"{column}_old"].astype("float64").to_numpy()
            differs |= ~_same(a, b)
        return new, int(differs.sum())

    def _write(self, conn: sa.Connection, rows: list[tuple]) -> None:
        names = ", ".join(_INSERT_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in (*BAR_VALUE_COLUMNS, "fetched_at"))
        marker = _marker(conn)
        placeholders = ", ".join([marker] * len(_INSERT_COLUMNS))
        sql = (
            f"INSERT INTO ohlcv_daily ({names}) VALUES ({placeholders}) "
            f"ON CONFLICT (symbol, date) DO UPDATE SET {updates}"
        )
        conn.exec_driver_sql(sql, rows)

    # ---- reads --------------------------------------------------------------------------------
    def _read(self, conn: sa.Connection, symbol: str, start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
        """One query, raw DBAPI rows, vectorised conversions (no per-row type processing)."""
        marker = _marker(conn)
        sql = f"SELECT {', '.join(BAR_COLUMNS)} FROM ohlcv_daily WHERE symbol = {marker}"
        params: list = [symbol]
        if start is not None:
            sql += f" AND date >= {marker}"
            params.append(start.isoformat())
        if end is not None:
            sql += f" AND date <= {marker}"
            params.append(end.isoformat())
        cursor = conn.exec_driver_sql(sql + " ORDER BY date", tuple(params))
        rows = cursor.fetchall()
        if not rows:
            return empty_bars()
        frame = pd.DataFrame.from_records(rows, columns=list(BAR_COLUMNS), coerce_float=True)
        frame["date"] = pd.to_datetime(frame["date"].astype(str), format="%Y-%m-%d")
        for column in ("open", "high", "low", "close", "volume", "vwap"):
            frame[column] = frame[column].astype("float64")
        frame["transactions"] = frame["transactions"].astype("Int64")
        return frame

    def read_bars(self, symbol: str, start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
        """One symbol's stored bars as a bar frame, in one query."""
        with self.engine.connect() as conn:
            return self._read(conn, symbol, start, end)

    def refetch_start(self, symbol: str, window: int) -> dt.date | None:
        """The date of the `window`-th last stored bar (the first date to fetch again), or None if none."""
        with self.engine.connect() as conn:
            dates = conn.execute(
                sa.select(ohlcv_daily.c.date)
                .where(ohlcv_daily.c.symbol == symbol)
                .order_by(ohlcv_daily.c.date.desc())
                .limit(max(window, 1))
            ).scalars().all()
        if not dates:
            return None
        return dates[-1] if window > 0 else dates[0] + dt.timedelta(days=1)

    def summary(self, symbols: list[str] | None = None) -> dict[str, tuple[int, dt.date, dt.date]]:
        """symbol -> (bar count, first date, last date), in one GROUP BY query."""
        query = sa.select(
            ohlcv_daily.c.symbol,
            sa.func.count(),
            sa.func.min(ohlcv_daily.c.date),
            sa.func.max(ohlcv_daily.c.date),
        ).group_by(ohlcv_daily.c.symbol)
        if symbols is not None:
            query = query.where(ohlcv_daily.c.symbol.in_(symbols))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {s: (int(n), _as_date(lo), _as_date(hi)) for s, n, lo, hi in rows}


def _marker(conn: sa.Connection) -> str:
    """The DBAPI placeholder: `?` for sqlite3, `%s` for psycopg2."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
