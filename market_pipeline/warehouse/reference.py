"""The symbol lifecycle tables: `symbol_reference` (what Polygon says about each tracked symbol),
`symbol_aliases` (old names of renamed symbols) and `tracked_symbols.delisted_on`; and the rename.

A rename is ONE transaction: the new symbol's registry row (a copy of the old one's status, start
date and history marks), every row of every warehouse table keyed by the old symbol (bars, stats,
and any table with a `symbol` column: quarantine, corporate actions…) moved with
`UPDATE … SET symbol = new`, the old registry row removed and the old name remembered in
`symbol_aliases`. Interrupted at any point, it leaves either the old or the new state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from market_pipeline import settings
from market_pipeline.reference.events import RenamePlan
from market_pipeline.reference.records import ReferenceRecord
from market_pipeline.polygon.tickers import SymbolError
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import metadata, ohlcv_daily, symbol_aliases, symbol_reference, tracked_symbols
from market_pipeline.warehouse.timestamps import utcnow

R, A, T = symbol_reference, symbol_aliases, tracked_symbols
_NOT_MOVED = {"tracked_symbols", "symbol_aliases", "symbol_reference"}


@dataclass(frozen=True)
class StoredReference:
    record: ReferenceRecord
    fetched_at: dt.datetime


def registry_delisting(record: ReferenceRecord) -> tuple[bool, dt.date | None]:
    """(whether saving `record` sets the registry's `delisted_on`, the date it sets: None to clear it)."""
    delisted = record.delisted_on if record.active is False and record.asset_class != "crypto" else None
    return record.status not in ("error", "not_found", "invalid"), delisted


@dataclass(frozen=True)
class RenameOutcome:
    old: str
    new: str
    moved: dict[str, int]  # table -> rows moved


def _record(row) -> StoredReference:
    m = row._mapping
    fields = {k: m[k] for k in ReferenceRecord.__dataclass_fields__ if k in m}
    return StoredReference(ReferenceRecord(**fields), m["fetched_at"])


def moved_tables() -> list[sa.Table]:
    """Every warehouse table keyed by symbol whose rows follow a rename (the registry aside)."""
    return [t for t in metadata.sorted_tables if "symbol" in t.c and t.name not in _NOT_MOVED]


class ReferenceStore:
    """Reference rows, aliases and renames in the warehouse named by `url`."""

    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or settings.db_url())

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    # ---- reference rows ---------------------------------------------------------------------
    def get(self, symbol: str) -> StoredReference | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(R).where(R.c.symbol == symbol)).first()
        return _record(row) if row else None

    def get_many(self, symbols: Sequence[str] | None = None) -> dict[str, StoredReference]:
        query = sa.select(R)
        out: dict[str, StoredReference] = {}
        with self.engine.connect() as conn:
            if symbols is None:
                return {r.symbol: _record(r) for r in conn.execute(query)}
            for start in range(0, len(symbols), 500):
                chunk = list(symbols[start : start + 500])
                out.update({r.symbol: _record(r) for r in conn.execute(query.where(R.c.symbol.in_(chunk)))})
        return out

    def missing(self, symbols: Sequence[str]) -> list[str]:
        """The symbols (in order) that have no reference row yet: first run, fetch theirs."""
        known = self.get_many(symbols)
        return [s for s in symbols if s not in known]

    def unfetched(self) -> set[str]:
        """The symbols whose reference could never be read (an `error` row without any identity): a
        run of theirs tries again. One query, however many symbols are tracked."""
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(R.c.symbol).where(R.c.status == "error", R.c.ticker.is_(None))).scalars())

    def save(self, record: ReferenceRecord, fetched_at: dt.datetime | None = None, conn: sa.Connection | None = None) -> None:
        """Store a record (replacing the symbol's previous one) and apply its delisting to the registry.

        A failed fetch (`error`) keeps the previous identity fields and only updates the status.
        """
        if conn is None:
            with self.engine.begin() as conn:
                return self.save(record, fetched_at, conn)
        fetched_at = fetched_at or utcnow()
        values = {k: v for k, v in record.__dict__.items()}
        values["fetched_at"] = fetched_at
        values["status_text"] = values["status_text"] or None
        exists = conn.execute(sa.select(R.c.symbol).where(R.c.symbol == record.symbol)).first() is not None
        if exists and record.status == "error":
            conn.execute(R.update().where(R.c.symbol == record.symbol).values(
                status="error", status_text=values["status_text"], fetched_at=fetched_at))
            return
        if exists:
            conn.execute(R.update().where(R.c.symbol == record.symbol).values(**values))
        else:
            conn.execute(R.insert().values(**values))
        applies, delisted = registry_delisting(record)
        if applies:
            conn.execute(
                T.update().where(T.c.symbol == record.symbol, T.c.delisted_on.is_distinct_from(delisted))
                .values(delisted_on=delisted, updated_at=utcnow())
            )

    def save_many(self, records: Sequence[ReferenceRecord], fetched_at: dt.datetime | None = None) -> None:
        """`save` each record, in order, in one transaction."""
        if not records:
            return
        fetched_at = fetched_at or utcnow()
        with self.engine.begin() as conn:
            for record in records:
                self.save(record, fetched_at, conn)

    # ---- aliases ------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """old symbol -> the symbol its history now lives under."""
        with self.engine.connect() as conn:
            return {old: new for old, new in conn.execute(sa.select(A.c.old_symbol, A.c.symbol))}

    def previous_symbols(self, symbol: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(A.c.old_symbol).where(A.c.symbol == symbol).order_by(A.c.renamed_on)).scalars())

    # ---- rename -------------------------------------------------------------------------------
    def rename(
        self,
        plan: RenamePlan,
        *,
        renamed_on: dt.date | None = None,
        new_record: ReferenceRecord | None = None,
        checkpoint: Callable[[str], None] | None = None,
    ) -> RenameOutcome:
        """Move OLD's history to NEW in one transaction (see the module doc). Raises `SymbolError`
        (nothing changed) when OLD is not tracked, NEW is already tracked or NEW already has bars.
        `checkpoint(step)` is called after every statement (tests interrupt the rename there)."""
        old, new = plan.old, plan.new
        step = checkpoint or (lambda _name: None)
        now = utcnow()
        moved: dict[str, int] = {}
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # bar writers of either symbol wait for the rename
                from market_pipeline.warehouse.store import _PG_LOCK_NAMESPACE

                for symbol in sorted((old, new)):
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PG_LOCK_NAMESPACE, symbol))
            row = conn.execute(sa.select(T).where(T.c.symbol == old)).first()
            if row is None:
                raise SymbolError(f"{old} is not tracked: nothing to rename")
            if conn.execute(sa.select(T.c.symbol).where(T.c.symbol == new)).first() is not None:
                raise SymbolError(
                    f"{new} is already tracked: its own history and {old}'s would mix; nothing was changed"
                )
            clash = conn.execute(sa.select(sa.func.count()).select_from(ohlcv_daily).where(ohlcv_daily.c.symbol == new)).scalar()
            if clash:
                raise SymbolError(f"{new} already has {clash} stored bar(s): nothing was changed")
            copy = dict(row._mapping)
            copy.update(symbol=new, updated_at=now, delisted_on=None)
            conn.execute(T.insert().values(**copy))
            step("tracked_symbols")
            for table in moved_tables():
                if table.name != "ohlcv_daily":  # e.g. a stale symbol_stats row of the new name
                    conn.execute(table.delete().where(table.c.symbol == new))
                moved[table.name] = conn.execute(table.update().where(table.c.symbol == old).values(symbol=new)).rowcount
                step(table.name)
            conn.execute(R.delete().where(R.c.symbol.in_([old, new])))
            if new_record is not None:
                self.save(new_record, now, conn)
            step("symbol_reference")
            conn.execute(A.update().where(A.c.symbol == old).values(symbol=new))  # older names follow
            conn.execute(A.delete().where(A.c.old_symbol.in_([old, new])))
            conn.execute(A.insert().values(old_symbol=old, symbol=new, composite_figi=plan.figi, renamed_on=renamed_on, created_at=now))
            step("symbol_aliases")
            conn.execute(T.delete().where(T.c.symbol == old))
            step("done")
        return RenameOutcome(old, new, moved)
