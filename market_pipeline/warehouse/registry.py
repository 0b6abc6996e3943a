"""The symbol registry: the `tracked_symbols` table behind the CLI, the sensor and the asset.

Every operation validates all of its input before it writes anything: bad input raises
`SymbolError` (a user-facing message) and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from market_pipeline import settings
from market_pipeline.polygon.tickers import SymbolError, normalize_symbol, parse_start_date, validate_asset_class
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import tracked_symbols
from market_pipeline.warehouse.timestamps import utcnow

T = tracked_symbols
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class TrackedSymbol:
    symbol: str
    asset_class: str
    active: bool
    start_date: dt.date | None
    backfill_status: str
    backfill_error: str | None
    last_backfill: dt.datetime | None
    last_run_id: str | None
    history_from: dt.date | None
    created_at: dt.datetime
    updated_at: dt.datetime
    delisted_on: dt.date | None = None
    quarantined_bars: int = 0  # wire bars of the last completed fetch set aside in ohlcv_quarantine
    bars_basis: str = "as_traded"  # 'adjusted': stored before 0003, re-fetched as traded on the next run
    corporate_actions_status: str | None = None
    corporate_actions_error: str | None = None
    corporate_actions_read_at: dt.datetime | None = None

    @property
    def status(self) -> str:
        """What `symbols list` and `stats` show: `delisted` once a delisted symbol's history is
        complete (it is never fetched again), else the backfill status."""
        return "delisted" if self.delisted_on is not None and self.backfill_status == "completed" else self.backfill_status

    def as_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
        return out


@dataclass(frozen=True)
class AddOutcome:
    symbol: str
    action: str  # "added", "reactivated", "updated" (start date) or "unchanged"


class SymbolRegistry:
    """Tracked symbols in the warehouse named by `url` (default: MARKET_PIPELINE_DB_URL)."""

    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or settings.db_url())

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    # ---- reads --------------------------------------------------------------------------------
    def get(self, symbol: str) -> TrackedSymbol | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(T).where(T.c.symbol == symbol.strip().upper())).first()
        return TrackedSymbol(**row._mapping) if row else None

    def get_many(self, symbols: Sequence[str]) -> list[TrackedSymbol]:
        """The tracked rows of exactly these stored symbols (unknown ones are left out), in one query."""
        rows: list[TrackedSymbol] = []
        with self.engine.connect() as conn:
            for start in range(0, len(symbols), 500):
                chunk = list(symbols[start : start + 500])
                rows.extend(TrackedSymbol(**r._mapping) for r in conn.execute(sa.select(T).where(T.c.symbol.in_(chunk))))
        return rows

    def list(self, include_inactive: bool = False) -> list[TrackedSymbol]:
        query = sa.select(T).order_by(T.c.symbol)
        if not include_inactive:
            query = query.where(T.c.active.is_(True))
        with self.engine.connect() as conn:
            return [TrackedSymbol(**row._mapping) for row in conn.execute(query)]

    def active_symbols(self, asset_classes: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(symbol, asset_class) of every active symbol, ordered by symbol; [] when none."""
        query = sa.select(T.c.symbol, T.c.asset_class).where(T.c.active.is_(True))
        if asset_classes is not None:
            query = query.where(T.c.asset_class.in_(list(asset_classes)))
        with self.engine.connect() as conn:
            return [(s, a) for s, a in conn.execute(query.order_by(T.c.symbol))]

    def resolve(self, symbols: Sequence[str]) -> list[TrackedSymbol]:
        """The tracked rows of `symbols` (any case, crypto in any accepted form), in the given order."""
        known = {row.symbol: row for row in self.list(include_inactive=True)}
        found, unknown = [], []
        for raw in symbols:
            key = _lookup_key(raw, known)
            (found.append(known[key]) if key else unknown.append(raw))
        if unknown:
            from market_pipeline.warehouse.schema import symbol_aliases

            with self.engine.connect() as conn:
                renamed = dict(conn.execute(
                    sa.select(symbol_aliases.c.old_symbol, symbol_aliases.c.symbol)
                    .where(symbol_aliases.c.old_symbol.in_([(u or "").strip().upper() for u in unknown]))
                ).all())
            hint = "".join(f"; {old} was renamed to {new}: use {new}" for old, new in renamed.items())
            raise SymbolError(
                f"not tracked: {', '.join(unknown)}{hint or '; add with `market-pipeline symbols add SYMBOL --asset-class ...`'}"
            )
        return found

    # ---- registry changes -----------------------------------------------------------------------
    def add(
        self,
        symbols: Sequence[str],
        asset_class: str,
        start_date: str | dt.date | None = None,
        *,
        verify: Callable[[str, str], bool | str | None] | None = None,
    ) -> list[AddOutcome]:
        """Track symbols (idempotent; reactivates inactive ones). Validates everything first."""
        asset_class = validate_asset_class(asset_class)
        start = parse_start_date(start_date)
        if not symbols:
            raise SymbolError("no symbol given: name at least one, such as AAPL")
        normalized = list(dict.fromkeys(normalize_symbol(s, asset_class) for s in symbols))
        with self.engine.connect() as conn:
            existing = {
                row.symbol: row
                for row in conn.execute(sa.select(T).where(T.c.symbol.in_(normalized)))
            }
        for symbol, row in existing.items():
            if row.asset_class != asset_class:
                raise SymbolError(
                    f"{symbol} is already tracked as {row.asset_class}, not {asset_class}: "
                    "an asset class cannot change; check the symbol"
                )
        if verify is not None:
            # verify(symbol, asset_class): True/None = fine, False = unknown, a string = why it is refused
            answers = {s: verify(s, asset_class) for s in normalized if s not in existing}
            unknown = [s for s, answer in answers.items() if answer is False]
            refused = [answer for answer in answers.values() if isinstance(answer, str)]
            if unknown:
                refused.insert(0, f"Polygon does not know {', '.join(unknown)} as {asset_class}: check the spelling")
            if refused:
                raise SymbolError("; ".join(refused))
        now = utcnow()
        outcomes = []
        with self.engine.begin() as conn:
            for symbol in normalized:
                row = existing.get(symbol)
                if row is None:
                    conn.execute(
                        T.insert().values(
                            symbol=symbol, asset_class=asset_class, active=True, start_date=start,
                            backfill_status="pending", created_at=now, updated_at=now,
                        )
                    )
                    outcomes.append(AddOutcome(symbol, "added"))
                    continue
                changes = {}
                if not row.active:
                    changes.update(active=True, backfill_status="pending", backfill_error=None)
                if start is not None and start != row.start_date:
                    changes["start_date"] = start
                if changes:
                    conn.execute(T.update().where(T.c.symbol == symbol).values(updated_at=now, **changes))
                action = "reactivated" if not row.active else ("updated" if changes else "unchanged")
                outcomes.append(AddOutcome(symbol, action))
        return outcomes

    def set_active(self, symbols: Sequence[str], active: bool) -> list[str]:
        """Activate or deactivate tracked symbols (bars are never deleted). Returns those changed."""
        if not symbols:
            raise SymbolError("no symbol given")
        rows = self.resolve(symbols)
        changed = [r.symbol for r in rows if r.active != active]
        if changed:
            values = {"active": active, "updated_at": utcnow()}
            if active:
                values.update(backfill_status="pending", backfill_error=None)
            with self.engine.begin() as conn:
                conn.execute(T.update().where(T.c.symbol.in_(changed)).values(**values))
        return changed

    # ---- backfill status ----------------------------------------------------------------------
    def mark_in_progress(self, symbol: str, run_id: str | None) -> None:
        self._set_status(symbol, backfill_status="in_progress", last_run_id=run_id)

    def mark_completed(
        self, symbol: str, run_id: str | None, history_from: dt.date | None, quarantined: int = 0
    ) -> None:
        now = utcnow()
        values = dict(
            backfill_status="completed", backfill_error=None, last_backfill=now, last_run_id=run_id,
            quarantined_bars=quarantined,
        )
        if history_from is not None:
            values["bars_basis"] = "as_traded"  # a whole history was just written, fetched as traded
            current = self.get(symbol)
            if current is None or current.history_from is None or history_from < current.history_from:
                values["history_from"] = history_from
        self._set_status(symbol, **values)

    def mark_in_progress_many(self, symbols: Sequence[str], run_id: str | None) -> None:
        """`mark_in_progress` for many symbols in one transaction (a statement per 500)."""
        symbols, now = list(symbols), utcnow()
        if symbols:
            with self.engine.begin() as conn:
                for start in range(0, len(symbols), 500):
                    conn.execute(
                        T.update().where(T.c.symbol.in_(symbols[start : start + 500]))
                        .values(backfill_status="in_progress", last_run_id=run_id, updated_at=now)
                    )

    def mark_completed_many(self, quarantined: dict[str, int], run_id: str | None) -> None:
        """`mark_completed` (no new history start) for many symbols in one transaction:
        `quarantined` maps each symbol to the bars of its fetch set aside."""
        now = utcnow()
        by_count: dict[int, list[str]] = {}
        for symbol, count in quarantined.items():
            by_count.setdefault(count, []).append(symbol)
        with self.engine.begin() as conn:
            for count, symbols in by_count.items():
                conn.execute(
                    T.update().where(T.c.symbol.in_(symbols)).values(
                        backfill_status="completed", backfill_error=None, last_backfill=now, last_run_id=run_id,
                        quarantined_bars=count, updated_at=now,
                    )
                )

    def mark_failed(self, symbol: str, error: str, run_id: str | None) -> None:
        self._set_status(
            symbol, backfill_status="failed", backfill_error=error[:MAX_ERROR_CHARS], last_run_id=run_id
        )

    def fail_many(self, errors: dict[str, str], run_id: str | None) -> None:
        """`mark_failed` for many symbols (symbol -> its reason) in one transaction."""
        by_error: dict[str, list[str]] = {}
        for symbol, error in errors.items():
            by_error.setdefault(error[:MAX_ERROR_CHARS], []).append(symbol)
        now = utcnow()
        with self.engine.begin() as conn:
            for error, symbols in by_error.items():
                for start in range(0, len(symbols), 500):
                    conn.execute(
                        T.update().where(T.c.symbol.in_(symbols[start : start + 500]))
                        .values(backfill_status="failed", backfill_error=error, last_run_id=run_id, updated_at=now)
                    )

    def in_progress(self) -> dict[str, str | None]:
        """symbol -> the run it is in progress in, for every symbol `in_progress` now."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T.c.symbol, T.c.last_run_id).where(T.c.backfill_status == "in_progress"))
            return dict(rows.all())

    def fail_in_progress_for_run(self, run_id: str, reason: str, reasons: dict[str, str] | None = None) -> list[str]:
        """Mark every symbol a run left `in_progress` as `failed` (for runs that died, were cancelled or
        stopped): "run X ended before this symbol finished: `reason`", or the symbol's own reason
        from `reasons` (what the run recorded for it, when its own write could not be made)."""
        reasons = reasons or {}
        with self.engine.begin() as conn:
            symbols = conn.execute(
                sa.select(T.c.symbol).where(T.c.last_run_id == run_id, T.c.backfill_status == "in_progress")
            ).scalars().all()
            generic = [s for s in symbols if s not in reasons]
            groups = [(generic, f"run {run_id} ended before this symbol finished: {reason}")]
            groups += [([s], reasons[s]) for s in symbols if s in reasons]
            for members, error in groups:
                if not members:
                    continue
                conn.execute(
                    T.update()
                    .where(T.c.symbol.in_(members), T.c.last_run_id == run_id, T.c.backfill_status == "in_progress")
                    .values(backfill_status="failed", backfill_error=error[:MAX_ERROR_CHARS], updated_at=utcnow())
                )
        return list(symbols)

    def _set_status(self, symbol: str, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(T.update().where(T.c.symbol == symbol).values(updated_at=utcnow(), **values))


def _lookup_key(raw: str, known: dict[str, TrackedSymbol]) -> str | None:
    text = (raw or "").strip().upper()
    if text in known:
        return text
    for asset_class in ("crypto", "stock"):
        try:
            key = normalize_symbol(raw, asset_class)
        except SymbolError:
            continue
        if key in known:
            return key
    return None
