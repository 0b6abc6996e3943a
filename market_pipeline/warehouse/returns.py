"""The `daily_returns` table and its upkeep state (`daily_returns_state`).

`ReturnsStore.replace` writes a batch of symbols' recomputed returns in one transaction: per symbol
its rows from the first recomputed date on are rewritten in place (inserted where new, deleted where
their bar is gone), its column blocks brought in step (warehouse.columns, dataset `columns.RETURNS`),
and its state (current through which bar, from which adjustment factors, its unexplained large
returns) replaced; an interrupted write leaves every symbol as it was. Reads (`read_returns`,
`market-pipeline returns`, the returns check run on its own) go through the column blocks: each
symbol's older returns in a few blocks, its recent ones as rows, as of one snapshot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from market_pipeline import settings
from market_pipeline.warehouse import columns
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import (
    adjustment_factors,
    daily_returns,
    daily_returns_state,
    dividends,
    splits,
    symbol_aliases,
)
from market_pipeline.warehouse.stats_cache import _chunks
from market_pipeline.warehouse.timestamps import as_date, utcnow

R, S = daily_returns, daily_returns_state
_VALUES = ("total_return", "log_return", "split_adjusted_return")
NO_FACTORS = "-"  # the factors print of a symbol without adjustment factors


@dataclasses.dataclass(frozen=True)
class ReturnsState:
    symbol: str
    current_through: dt.date | None  # the last bar date whose return is stored and current
    factors_print: str
    outliers: list[dict]  # unexplained large returns, by date (see market_pipeline.returns)


@dataclasses.dataclass
class SymbolReturns:
    """One symbol's recomputed returns: `frame` (date, total_return, log_return, split_adjusted_return)
    replaces its stored rows dated on or after `since` (None: all of them)."""

    symbol: str
    since: dt.date | None
    frame: pd.DataFrame
    state: ReturnsState


class ReturnsStore:
    """daily_returns of the warehouse at `url` (default: MARKET_PIPELINE_DB_URL)."""

    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or settings.db_url())

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    # ---- upkeep -----------------------------------------------------------------------------
    def states(self, symbols: Sequence[str]) -> dict[str, ReturnsState]:
        out = {}
        with self.engine.connect() as conn:
            for part in _chunks(list(symbols)):
                for row in conn.execute(sa.select(S).where(S.c.symbol.in_(part))):
                    m = row._mapping
                    try:
                        outliers = json.loads(m["outliers"])
                    except ValueError:
                        outliers = None
                    if isinstance(outliers, list):  # an unreadable state is recomputed whole
                        out[m["symbol"]] = ReturnsState(m["symbol"], as_date(m["current_through"]), m["factors_print"], outliers)
        return out

    def factor_prints(self, symbols: Sequence[str]) -> dict[str, str]:
        """symbol -> a digest of its adjustment_factors rows now (NO_FACTORS without any)."""
        rows: dict[str, list] = {}
        c = adjustment_factors.c
        with self.engine.connect() as conn:
            for part in _chunks(list(symbols)):
                query = (
                    sa.select(c.symbol, c.valid_from, c.valid_to, c.split_factor, c.total_return_factor)
                    .where(c.symbol.in_(part)).order_by(c.symbol, c.valid_from)
                )
                for symbol, *values in conn.execute(query):
                    rows.setdefault(symbol, []).append("|".join(_text(v) for v in values))
        return {
            symbol: hashlib.sha256("\n".join(rows[symbol]).encode()).hexdigest()[:32] if symbol in rows else NO_FACTORS
            for symbol in symbols
        }

    def event_dates(self, symbols: Sequence[str]) -> dict[str, set[dt.date]]:
        """symbol -> the dates of its recorded events that explain a large return: active or duplicated
        splits, active dividends (ex-dates) and renames."""
        out: dict[str, set[dt.date]] = {s: set() for s in symbols}
        queries = (
            (splits.c.symbol, splits.c.execution_date, splits.c.status.in_(["active", "duplicate"])),
            (dividends.c.symbol, dividends.c.ex_dividend_date, dividends.c.status == "active"),
            (symbol_aliases.c.symbol, symbol_aliases.c.renamed_on, sa.true()),
        )
        with self.engine.connect() as conn:
            for part in _chunks(list(symbols)):
                for symbol_column, date_column, condition in queries:
                    query = sa.select(symbol_column, date_column).where(symbol_column.in_(part), condition, date_column.is_not(None))
                    for symbol, day in conn.execute(query):
                        out[symbol].add(as_date(day))
        return out

    def forget(self, symbols: Iterable[str]) -> None:
        """Drop the states of symbols whose bars changed while their returns were not recomputed: their
        next update recomputes the whole history."""
        symbols = sorted(set(symbols))
        if not symbols:
            return
        with self.engine.begin() as conn:
            for part in _chunks(symbols):
                conn.execute(S.delete().where(S.c.symbol.in_(part)))

    def replace(self, updates: Sequence[SymbolReturns], computed_at: dt.datetime | None = None) -> None:
        """Write the recomputed returns of many symbols and their states in one transaction."""
        if not updates:
            return
        computed_at = computed_at or utcnow()
        updates = list({u.symbol: u for u in updates}.values())
        columns_in: list[list] = [[] for _ in range(5)]  # symbol, date, *values
        written: dict[str, dict] = {}  # what each symbol's rows from `since` on are now, as arrays (NULL as NaN)
        for update in updates:
            frame = update.frame
            if frame.empty:
                written[update.symbol] = _NO_RETURNS
                continue
            values = {c: _finite(frame[c].to_numpy(dtype="float64")) for c in _VALUES}
            written[update.symbol] = {"date": frame["date"].to_numpy(), **values}
            days = np.asarray(frame["date"].to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]")
            columns_in[0].extend([update.symbol] * len(frame))
            columns_in[1].append(days)  # one array per symbol, made text or dates at once below
            for i, c in enumerate(_VALUES, start=2):
                columns_in[i].extend(_nullable(values[c]))
        with self.engine.begin() as conn:
            # rows rewritten in place (a value recomputed unchanged marks no block out of step), those
            # whose bar is gone deleted
            stale = _stale_rows(conn, updates, written)
            if stale:
                conn.execute(R.delete().where(R.c.symbol == sa.bindparam("s"), R.c.date == sa.bindparam("d")), stale)
            if columns_in[0]:
                days = np.concatenate(columns_in[1])
                if conn.dialect.name == "sqlite":  # plain DBAPI rows: a few times faster than Core's dicts
                    stamp = computed_at.isoformat(sep=" ")
                    conn.exec_driver_sql(
                        "INSERT INTO daily_returns (symbol, date, total_return, log_return, split_adjusted_return, computed_at) "
                        f"VALUES (?, ?, ?, ?, ?, ?) {_UPSERT}",
                        list(zip(columns_in[0], np.datetime_as_string(days, unit="D").tolist(), *columns_in[2:], [stamp] * len(days))),
                    )
                else:
                    columns_in[1] = days.astype(object).tolist()
                    names = ("symbol", "date", *_VALUES)
                    insert = postgresql.insert(R)
                    conn.execute(
                        insert.on_conflict_do_update(
                            index_elements=["symbol", "date"], set_={c: insert.excluded[c] for c in (*_VALUES, "computed_at")}
                        ),
                        [{**dict(zip(names, row)), "computed_at": computed_at} for row in zip(*columns_in)],
                    )
            # the column blocks of the symbols written, in the same transaction
            columns.after_write(conn, columns.RETURNS, written)
            states = [
                {
                    "symbol": u.symbol, "current_through": u.state.current_through, "factors_print": u.state.factors_print,
                    "outliers": json.dumps(u.state.outliers), "computed_at": computed_at,
                }
                for u in updates
            ]
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(S)
            conn.execute(
                insert.on_conflict_do_update(index_elements=["symbol"], set_={c: insert.excluded[c] for c in states[0] if c != "symbol"}),
                states,
            )

    # ---- reads ------------------------------------------------------------------------------
    def counts(self, symbols: Sequence[str]) -> dict[str, int]:
        """symbol -> its rows in daily_returns (counted from the primary key's index)."""
        out = {s: 0 for s in symbols}
        with self.engine.connect() as conn:
            for part in _chunks(list(symbols)):
                query = sa.select(R.c.symbol, sa.func.count()).where(R.c.symbol.in_(part)).group_by(R.c.symbol)
                for symbol, count in conn.execute(query):
                    out[symbol] = int(count)
        return out

    def read(self, symbols: Sequence[str], start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
        """The stored returns of `symbols` from `start` to `end` (inclusive), as of one snapshot, through
        the column blocks: indexed by (symbol, date) (datetime64[s]), symbols in the order given, dates
        ascending; the three columns float64 with NaN for NULL."""
        with columns.snapshot(self.engine) as conn:
            data = columns.read(conn, columns.RETURNS, list(symbols), start, end)
        if not len(data.days):
            empty = pd.DataFrame({"symbol": pd.Series([], dtype=object), "date": pd.Series([], dtype="datetime64[s]")})
            return empty.assign(**{c: pd.Series([], dtype="float64") for c in _VALUES}).set_index(["symbol", "date"])
        frame = data.frame()
        return frame.set_axis(frame.index.set_levels(frame.index.levels[1].as_unit("s"), level="date"), axis=0)


_UPSERT = (
    "ON CONFLICT (symbol, date) DO UPDATE SET total_return = excluded.total_return, log_return = excluded.log_return, "
    "split_adjusted_return = excluded.split_adjusted_return, computed_at = excluded.computed_at"
)


def _stale_rows(conn: sa.Connection, updates: Sequence[SymbolReturns], written: dict[str, dict]) -> list[dict]:
    """The stored rows, dated on or after each update's first recomputed date (all of a whole
    recompute's), that its recomputed returns do not have: {"s": symbol, "d": date}."""
    bounds = [(u.symbol, u.since or dt.date(1, 1, 1)) for u in updates]
    stored: list[tuple] = []
    for part in _chunks(bounds):
        if conn.dialect.name == "postgresql":
            result = conn.exec_driver_sql(
                "SELECT d.symbol, d.date FROM unnest(%s::text[], %s::date[]) AS s(symbol, lo) "
                "JOIN daily_returns d ON d.symbol = s.symbol AND d.date >= s.lo",
                ([b[0] for b in part], [b[1] for b in part]),
            )
        else:
            result = conn.exec_driver_sql(
                f"WITH s(symbol, lo) AS (VALUES {', '.join(['(?, ?)'] * len(part))}) "
                "SELECT d.symbol, d.date FROM s CROSS JOIN daily_returns d WHERE d.symbol = s.symbol AND d.date >= s.lo",
                tuple(v for symbol, lo in part for v in (symbol, lo.isoformat())),
            )
        stored += result.all()
    if not stored:
        return []
    kept = {
        symbol: set(np.datetime_as_string(np.asarray(frame["date"], dtype="datetime64[D]"), unit="D").tolist())
        for symbol, frame in written.items()
    }
    return [{"s": symbol, "d": as_date(day)} for symbol, day in stored if str(day)[:10] not in kept.get(symbol, ())]


_NO_RETURNS = {"date": np.array([], dtype="datetime64[ns]"), **{c: np.array([], dtype="float64") for c in _VALUES}}


def _finite(values: np.ndarray) -> np.ndarray:
    """The values as stored: NaN where not a finite number (stored as NULL)."""
    return np.where(np.isfinite(values), values, np.nan)


def _nullable(values: np.ndarray) -> list:
    out = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        out[i] = None
    return out


def _text(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else repr(float(value)) if isinstance(value, float) else str(value)
