"""A warehouse at revision 0009 (daily_returns stored as rows only, no column marks) upgraded to the
head: revision 0009 is as it shipped, the upgrade builds the returns' column blocks, and the returns
read equal the table's rows right after it, after a write through the store and after a write that
bypasses it; on SQLite and PostgreSQL, and back down to 0009 and up again."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic import command

from market_pipeline.warehouse.engine import _alembic_config, dispose_engine, head_revision, migration_transaction, open_engine, upgrade
from market_pipeline.warehouse.returns import ReturnsState, ReturnsStore, SymbolReturns
from market_pipeline_tests.test_returns_columns import VALUES, assert_same, returns_state

# the tables revision 0009 made as it shipped (and nothing more)
SHIPPED_0009 = {"daily_returns", "daily_returns_state", "symbol_charts", "check_outcomes"}


def _returns(count: int, first: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"date": pd.bdate_range(first, periods=count), **{c: rng.normal(0, 0.02, count) for c in VALUES}})
    frame.loc[7, "log_return"] = np.nan  # a NULL
    return frame


def _revision(url: str) -> str:
    with open_engine(url).connect() as conn:
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _warehouse_at_0009(url: str) -> dict[str, pd.DataFrame]:
    """Revision 0009 with the returns written as the store wrote them then: rows, no blocks."""
    engine = open_engine(url)  # not migrated to the head
    upgrade(engine, "0008")
    before = set(sa.inspect(engine).get_table_names())
    upgrade(engine, "0009")
    assert set(sa.inspect(open_engine(url)).get_table_names()) - before == SHIPPED_0009
    frames = {"OLD": _returns(600, "2021-01-04", 1), "OLE": _returns(10, "2024-03-01", 2)}
    insert = sa.text(
        "INSERT INTO daily_returns (symbol, date, total_return, log_return, split_adjusted_return, computed_at) "
        "VALUES (:s, :d, :t, :l, :a, :c)"
    )
    with engine.begin() as conn:
        for symbol, frame in frames.items():
            conn.execute(insert, [
                {"s": symbol, "d": row.date.date(), "t": row.total_return, "l": None if np.isnan(row.log_return) else row.log_return,
                 "a": row.split_adjusted_return, "c": dt.datetime(2026, 1, 2, 3, 4, 5)}
                for row in frame.itertuples(index=False)
            ])
    return frames


def _sql(url: str, statement: str) -> None:
    with open_engine(url).begin() as conn:
        conn.execute(sa.text(statement))


def test_a_warehouse_at_0009_reads_its_returns_right_after_the_upgrade(any_warehouse_url):
    url = any_warehouse_url
    frames = _warehouse_at_0009(url)
    assert _revision(url) == "0009"
    before = assert_same(url, ["OLD", "OLE"])  # the first use migrates to the head
    assert _revision(url) == head_revision()
    assert returns_state(url) == ({"OLD": 600, "OLE": 10}, [])  # the upgrade sealed every history
    # a write through the store (new days), then one that bypasses it (a value under the seal)
    more = _returns(640, "2021-01-04", 1).iloc[600:]
    ReturnsStore(url).replace([SymbolReturns("OLD", more["date"].iloc[0].date(), more, ReturnsState("OLD", None, "-", []))])
    assert len(assert_same(url, ["OLD", "OLE"])) == len(before) + 40
    on = "'2021-06-01'" if url.startswith("sqlite") else "DATE '2021-06-01'"
    _sql(url, f"UPDATE daily_returns SET total_return = 0.25 WHERE symbol = 'OLD' AND date = {on}")
    got = assert_same(url, ["OLD", "OLE"])
    assert got.loc[("OLD", pd.Timestamp("2021-06-01")), "total_return"] == 0.25
    assert len(frames["OLE"]) == len(got.loc["OLE"])


def test_the_upgrade_goes_down_to_0009_and_up_again(any_warehouse_url):
    url = any_warehouse_url
    _warehouse_at_0009(url)
    upgrade(open_engine(url))
    cfg = _alembic_config()
    with migration_transaction(open_engine(url)) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    assert _revision(url) == "0009"
    assert "column_marks" not in sa.inspect(open_engine(url)).get_table_names()
    assert returns_state(url) == ({}, [])  # the returns' blocks are gone
    dispose_engine(url)
    assert_same(url, ["OLD", "OLE"])
    assert _revision(url) == head_revision() and returns_state(url) == ({"OLD": 600, "OLE": 10}, [])
