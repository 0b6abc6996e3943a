"""Two small per-symbol records of what runs showed: `symbol_charts` (the last chart drawn on each
symbol's ohlcv_daily materialization: which run, up to which bar, when) and `check_outcomes` (the latest
outcome of every asset check per symbol, as the run that evaluated it recorded it)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from market_pipeline import settings
from market_pipeline.quality.outcomes import CheckOutcome
from market_pipeline.warehouse.engine import get_engine, normalize_url
from market_pipeline.warehouse.schema import check_outcomes, symbol_charts
from market_pipeline.warehouse.stats_cache import _chunks, put_symbol_rows
from market_pipeline.warehouse.timestamps import as_date, utcnow


@dataclasses.dataclass(frozen=True)
class DrawnChart:
    symbol: str
    run_id: str | None
    through_date: dt.date | None
    drawn_at: dt.datetime


class ViewsLog:
    """symbol_charts and check_outcomes of the warehouse at `url`."""

    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or settings.db_url())

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.url)

    # ---- charts -----------------------------------------------------------------------------
    def charts(self, symbols: Sequence[str]) -> dict[str, DrawnChart]:
        out = {}
        with self.engine.connect() as conn:
            for part in _chunks(list(symbols)):
                for row in conn.execute(sa.select(symbol_charts).where(symbol_charts.c.symbol.in_(part))):
                    m = row._mapping
                    out[m["symbol"]] = DrawnChart(m["symbol"], m["run_id"], as_date(m["through_date"]), m["drawn_at"])
        return out

    def put_charts(self, drawn: Iterable[DrawnChart]) -> None:
        put_symbol_rows(self.engine, symbol_charts, [dataclasses.asdict(d) for d in {d.symbol: d for d in drawn}.values()])

    # ---- check outcomes ---------------------------------------------------------------------
    def put_outcomes(self, outcomes: Sequence[CheckOutcome], run_id: str | None, at: dt.datetime | None = None) -> None:
        """Record the latest outcome of each (symbol, asset, check), in one transaction."""
        if not outcomes:
            return
        at = at or utcnow()
        rows = list({
            (o.symbol, o.asset, o.check_name): {**dataclasses.asdict(o), "run_id": run_id, "evaluated_at": at}
            for o in outcomes
        }.values())
        with self.engine.begin() as conn:
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(check_outcomes)
            update = {c: insert.excluded[c] for c in ("passed", "severity", "summary", "run_id", "evaluated_at")}
            conn.execute(insert.on_conflict_do_update(index_elements=["symbol", "asset", "check_name"], set_=update), rows)

    def outcomes(self, symbols: Sequence[str] | None = None, run_ids: Sequence[str] | None = None) -> list[CheckOutcome]:
        """The latest outcomes (of `symbols`, or every symbol; recorded by `run_ids` only, when given),
        by symbol, asset and check."""
        c = check_outcomes.c
        query = sa.select(check_outcomes).order_by(c.symbol, c.asset, c.check_name)
        if run_ids is not None:
            query = query.where(c.run_id.in_(list(run_ids)))
        rows = []
        with self.engine.connect() as conn:
            if symbols is None:
                rows = conn.execute(query).all()
            else:
                for part in _chunks(list(symbols)):
                    rows += conn.execute(query.where(c.symbol.in_(part))).all()
        out = [CheckOutcome(**{k: r._mapping[k] for k in CheckOutcome.__dataclass_fields__}) for r in rows]
        return sorted(out, key=lambda o: (o.symbol, o.asset, o.check_name))
