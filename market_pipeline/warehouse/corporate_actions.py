"""The `splits`, `dividends` and `adjustment_factors` tables: recording reads, keeping factors right.

`CorporateActionStore.record` takes the parsed rows of one read of the provider's lists and, per
symbol whose events changed, in ONE transaction: writes new and changed events (first_seen /
last_seen), marks events absent from a complete re-read `withdrawn` (never deleted), resolves
duplicated listings against the as-traded bars and replaces the symbol's `adjustment_factors`.
A failure rolls the symbol back as a whole, so the views never see half-applied factors.
Unchanged events only get their `last_seen` bumped.

`recompute(symbols)` redoes the duplicates and factors from what is stored (after bars arrive: a
dividend's factor needs the close before its ex-date, a duplicate's resolution the prices).

Every transaction that changes an event's state (its fields, status or reason) keeps the state it
replaced in `corporate_action_revisions`, and one that changes a symbol's factors says so in
`adjustment_factor_changes` (warehouse.revisions): a point-in-time read adjusts with the events
known then.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from market_pipeline import settings
from market_pipeline.corporate_actions import (
    Dividend,
    EventChanges,
    Split,
    StoredEvent,
    diff_events,
    factor_ranges,
    resolve_duplicates,
)
from market_pipeline.warehouse import revisions
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import adjustment_factors, dividends, splits, tracked_symbols
from market_pipeline.warehouse.store import BarStore, utcnow

_LOCK_NAMESPACE = 0x434F5250  # "CORP": pg_advisory_xact_lock(namespace, hashtext(symbol))
_CHUNK = 500
MAX_ERROR_CHARS = 2000

_SPLIT_FIELDS = ("execution_date", "split_from", "split_to", "adjustment_type", "historical_adjustment_factor")
_DIVIDEND_FIELDS = (
    "ex_dividend_date", "declaration_date", "record_date", "pay_date", "cash_amount", "currency",
    "distribution_type", "frequency",
)


@dataclasses.dataclass
class RecordOutcome:
    """What one read changed: per kind, the EventChanges; the symbols whose factors were recomputed."""

    splits: EventChanges
    dividends: EventChanges
    recomputed: list[str]
    ignored_untracked: int  # rows of tickers the warehouse does not track
    # every state change of an event this read made (its fields, status, reason: before and after),
    # duplicate resolutions included
    revisions: list[revisions.EventRevision] = dataclasses.field(default_factory=list)

    def metadata(self) -> dict:
        s, d = self.splits.summary("split"), self.dividends.summary("dividend")
        return {
            "new": s["new"] + d["new"],
            "changed": s["changed"] + d["changed"],
            "withdrawn": s["withdrawn"] + d["withdrawn"],
            "symbols_recomputed": self.recomputed,
        }


def _split_from_row(row) -> Split:
    m = row._mapping
    return Split(
        symbol=m["symbol"], provider_id=m["provider_id"], execution_date=m["execution_date"],
        split_from=m["split_from"], split_to=m["split_to"], adjustment_type=m["adjustment_type"],
        historical_adjustment_factor=m["historical_adjustment_factor"], status=m["status"], reason=m["reason"],
    )


def _dividend_from_row(row) -> Dividend:
    m = row._mapping
    return Dividend(
        symbol=m["symbol"], provider_id=m["provider_id"], ex_dividend_date=m["ex_dividend_date"],
        cash_amount=m["cash_amount"], currency=m["currency"], distribution_type=m["distribution_type"],
        declaration_date=m["declaration_date"], record_date=m["record_date"], pay_date=m["pay_date"],
        frequency=m["frequency"], status=m["status"], reason=m["reason"],
    )


def _insert(conn: sa.Connection, table: sa.Table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class CorporateActionStore:
    """Corporate actions of the warehouse named by `url` (default: MARKET_PIPELINE_DB_URL)."""

    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or settings.db_url())

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    # ---- reads --------------------------------------------------------------------------------
    def splits(self, symbol: str) -> list[Split]:
        with self.engine.connect() as conn:
            return self._splits(conn, [symbol])

    def splits_by_symbol(self, symbols: Sequence[str]) -> dict[str, list[Split]]:
        """Every symbol's recorded splits (by date), in one read: symbol -> splits (absent: none)."""
        with self.engine.connect() as conn:
            rows = self._splits(conn, list(symbols)) if symbols else []
        out: dict[str, list[Split]] = {}
        for split in rows:
            out.setdefault(split.symbol, []).append(split)
        return out

    def dividends(self, symbol: str) -> list[Dividend]:
        with self.engine.connect() as conn:
            return self._dividends(conn, [symbol])

    def factor_ranges(self, symbol: str) -> pd.DataFrame:
        query = (
            sa.select(adjustment_factors.c.valid_from, adjustment_factors.c.valid_to,
                      adjustment_factors.c.split_factor, adjustment_factors.c.total_return_factor)
            .where(adjustment_factors.c.symbol == symbol)
            .order_by(adjustment_factors.c.valid_from)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame(rows, columns=["valid_from", "valid_to", "split_factor", "total_return_factor"])

    @staticmethod
    def _splits(conn: sa.Connection, symbols: Sequence[str]) -> list[Split]:
        return _read_events(conn, splits, splits.c.execution_date, _split_from_row, symbols)

    @staticmethod
    def _dividends(conn: sa.Connection, symbols: Sequence[str]) -> list[Dividend]:
        return _read_events(conn, dividends, dividends.c.ex_dividend_date, _dividend_from_row, symbols)

    def tracked_equities(self) -> set[str]:
        """Every tracked stock and ETF symbol (active or not): the symbols whose events are kept."""
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.select(tracked_symbols.c.symbol).where(tracked_symbols.c.asset_class.in_(["stock", "etf"]))
                ).scalars()
            )

    # ---- writes -------------------------------------------------------------------------------
    def record(
        self,
        split_rows: Iterable[Split],
        dividend_rows: Iterable[Dividend],
        *,
        complete_symbols: Iterable[str] = (),
        read_symbols: Iterable[str] = (),
        now: dt.datetime | None = None,
    ) -> RecordOutcome:
        """Store one read. `complete_symbols`: symbols whose whole lists were read (absent events are
        withdrawn); `read_symbols`: symbols the read covered (their status becomes `ok`)."""
        now = now or utcnow()
        tracked = self.tracked_equities()
        split_rows = [s for s in split_rows if s.symbol]
        dividend_rows = [d for d in dividend_rows if d.symbol]
        kept_splits = [s for s in split_rows if s.symbol in tracked]
        kept_dividends = [d for d in dividend_rows if d.symbol in tracked]
        ignored = len(split_rows) + len(dividend_rows) - len(kept_splits) - len(kept_dividends)
        complete = sorted(set(complete_symbols) & tracked)
        symbols = sorted({e.symbol for e in (*kept_splits, *kept_dividends)} | set(complete))
        with self.engine.connect() as conn:
            stored_splits = {(s.symbol, s.provider_id): s for s in self._splits(conn, symbols)}
            stored_dividends = {(d.symbol, d.provider_id): d for d in self._dividends(conn, symbols)}
        split_changes = diff_events(
            {k: StoredEvent(s.symbol, s.provider_id, s.content(), s.status) for k, s in stored_splits.items()},
            kept_splits, complete,
        )
        dividend_changes = diff_events(
            {k: StoredEvent(d.symbol, d.provider_id, d.content(), d.status) for k, d in stored_dividends.items()},
            kept_dividends, complete,
        )
        touched = sorted(split_changes.touched_symbols | dividend_changes.touched_symbols)
        revised: list[revisions.EventRevision] = []
        for symbol in touched:
            with self.engine.begin() as conn:
                self._lock(conn, symbol)
                before = revisions.event_states(conn, symbol)
                self._write_events(conn, symbol, split_changes, dividend_changes, now)
                self._recompute(conn, symbol, now)
                revised += revisions.keep_event_states(conn, symbol, before, now)
        with self.engine.begin() as conn:
            self._bump_last_seen(conn, splits, split_changes.unchanged, now)
            self._bump_last_seen(conn, dividends, dividend_changes.unchanged, now)
            covered = sorted(set(read_symbols) & tracked)
            for i in range(0, len(covered), _CHUNK):
                conn.execute(
                    tracked_symbols.update()
                    .where(tracked_symbols.c.symbol.in_(covered[i : i + _CHUNK]))
                    .values(corporate_actions_status="ok", corporate_actions_error=None, corporate_actions_read_at=now)
                )
        return RecordOutcome(split_changes, dividend_changes, touched, ignored, revised)

    def mark_failed(self, symbols: Iterable[str], error: str) -> None:
        """The read of these symbols' lists failed: their status says why; events and factors stay as they were."""
        symbols = sorted(set(symbols))
        with self.engine.begin() as conn:
            for i in range(0, len(symbols), _CHUNK):
                conn.execute(
                    tracked_symbols.update()
                    .where(tracked_symbols.c.symbol.in_(symbols[i : i + _CHUNK]))
                    .values(corporate_actions_status="failed", corporate_actions_error=error[:MAX_ERROR_CHARS])
                )

    def recompute(self, symbols: Iterable[str], now: dt.datetime | None = None) -> dict[str, dict[str, str]]:
        """Resolve duplicates and rebuild the factors of each symbol (one transaction each, stamped
        `now`). Returns, per symbol, the dividends not applied and why."""
        now = now or utcnow()
        out = {}
        symbols = sorted(set(symbols))
        with self.engine.connect() as conn:  # most symbols have no event: no write transaction for them
            having = set()
            for i in range(0, len(symbols), _CHUNK):
                chunk = symbols[i : i + _CHUNK]
                for table in (splits, dividends):
                    having |= set(conn.execute(sa.select(table.c.symbol).where(table.c.symbol.in_(chunk)).distinct()).scalars())
        for symbol in [s for s in symbols if s in having]:
            with self.engine.begin() as conn:
                self._lock(conn, symbol)
                before = revisions.event_states(conn, symbol)
                out[symbol] = self._recompute(conn, symbol, now)
                revisions.keep_event_states(conn, symbol, before, now)
        return out

    # ---- internals ----------------------------------------------------------------------------
    @staticmethod
    def _lock(conn: sa.Connection, symbol: str) -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, symbol))
        elif not conn.connection.dbapi_connection.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @staticmethod
    def _write_events(conn, symbol: str, split_changes: EventChanges, dividend_changes: EventChanges, now) -> None:
        for table, changes, fields in (
            (splits, split_changes, _SPLIT_FIELDS),
            (dividends, dividend_changes, _DIVIDEND_FIELDS),
        ):
            rows = [
                {
                    "symbol": e.symbol, "provider_id": e.provider_id,
                    **{f: getattr(e, f) for f in fields},
                    "first_seen": now, "last_seen": now, "status": e.status, "reason": e.reason,
                }
                for e in (*changes.new, *changes.changed, *changes.reappeared)
                if e.symbol == symbol
            ]
            if rows:
                statement = _insert(conn, table)
                update = {c: statement.excluded[c] for c in (*fields, "last_seen", "status", "reason")}
                conn.execute(
                    statement.on_conflict_do_update(index_elements=["symbol", "provider_id"], set_=update), rows
                )
            gone = [e.provider_id for e in changes.withdrawn if e.symbol == symbol]
            if gone:
                conn.execute(
                    table.update()
                    .where(table.c.symbol == symbol, table.c.provider_id.in_(gone))
                    .values(status="withdrawn", reason=f"absent from the provider's list read at {now:%Y-%m-%d %H:%M} UTC")
                )

    @staticmethod
    def _bump_last_seen(conn, table: sa.Table, events: list, now) -> None:
        by_symbol: dict[str, list[str]] = {}
        for e in events:
            by_symbol.setdefault(e.symbol, []).append(e.provider_id)
        for symbol, ids in by_symbol.items():
            conn.execute(
                table.update().where(table.c.symbol == symbol, table.c.provider_id.in_(ids)).values(last_seen=now)
            )

    def _recompute(self, conn: sa.Connection, symbol: str, now: dt.datetime) -> dict[str, str]:
        stored_splits = self._splits(conn, [symbol])
        stored_dividends = self._dividends(conn, [symbol])
        bars = BarStore(self.url)._read(conn, symbol)[["date", "open", "close"]] if (stored_splits or stored_dividends) else None
        resolved = resolve_duplicates(stored_splits, bars)
        for old, new in zip(stored_splits, resolved):
            if (old.status, old.reason) != (new.status, new.reason):
                conn.execute(
                    splits.update()
                    .where(splits.c.symbol == symbol, splits.c.provider_id == new.provider_id)
                    .values(status=new.status, reason=new.reason)
                )
        ranges = factor_ranges(resolved, stored_dividends, bars)
        for dividend in stored_dividends:
            if dividend.status != "active":
                continue
            reason = ranges.unapplied.get(dividend.provider_id)
            reason = f"not applied: {reason}" if reason else None
            if reason != dividend.reason:
                conn.execute(
                    dividends.update()
                    .where(dividends.c.symbol == symbol, dividends.c.provider_id == dividend.provider_id)
                    .values(reason=reason)
                )
        rows = [
            {
                "symbol": symbol, "valid_from": r.valid_from, "valid_to": r.valid_to,
                "split_factor": float(r.split_factor), "total_return_factor": float(r.total_return_factor),
            }
            for r in ranges.frame.itertuples(index=False)
        ]
        key = lambda r: (r["valid_from"], r["valid_to"], r["split_factor"], r["total_return_factor"])  # noqa: E731
        stored = [
            key(r._asdict()) for r in conn.execute(
                sa.select(adjustment_factors.c.valid_from, adjustment_factors.c.valid_to, adjustment_factors.c.split_factor,
                          adjustment_factors.c.total_return_factor)
                .where(adjustment_factors.c.symbol == symbol).order_by(adjustment_factors.c.valid_from)
            )
        ]
        if stored == [key(r) for r in rows]:
            return ranges.unapplied  # the same factors: nothing rewritten, no change recorded
        conn.execute(adjustment_factors.delete().where(adjustment_factors.c.symbol == symbol))
        if rows:
            conn.execute(adjustment_factors.insert(), rows)
        revisions.factors_changed(conn, symbol, now, stored)
        return ranges.unapplied


def _read_events(conn: sa.Connection, table: sa.Table, date_column, from_row, symbols: Sequence[str]) -> list:
    """The stored events of `symbols` from `table` (splits or dividends), by symbol then date, read in
    chunks of `_CHUNK` symbols."""
    out = []
    for i in range(0, len(symbols), _CHUNK):
        query = sa.select(table).where(table.c.symbol.in_(list(symbols[i : i + _CHUNK])))
        out += [from_row(r) for r in conn.execute(query.order_by(table.c.symbol, date_column))]
    return out
