"""daily_returns through the column path: `read_returns`, `market-pipeline returns` and the returns
check run on its own read the returns as column blocks plus a row tail (warehouse.columns, dataset
RETURNS), and answer exactly what the plain SQL read of the table answered (every value, NULL,
dtype and the index), on SQLite and PostgreSQL: after a first computation, new days, a late
correction under the seal, a recompute of a symbol's whole history (longer and shorter), and
writes to the table that bypass the store."""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from market_pipeline.corporate_actions import parse_split
from market_pipeline.returns.read import read_returns
from market_pipeline.returns.update import ReturnsRequest, judge_stored, update_returns
from market_pipeline.warehouse import columns
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.engine import open_engine
from market_pipeline.warehouse.returns import ReturnsState, ReturnsStore, SymbolReturns
from market_pipeline.warehouse.schema import daily_returns
from market_pipeline.warehouse.store import BarStore
from market_pipeline_tests.test_columnar_reads import bars, with_events

VALUES = ("total_return", "log_return", "split_adjusted_return")


def sql_returns(url: str, symbols: list[str], start=None, end=None) -> pd.DataFrame:
    """The reference: the table's rows read with plain SQL and framed as `read_returns` framed them
    before the column path (symbols in the order asked, dates ascending, dates as pandas makes them
    from the driver's date objects)."""
    table = daily_returns
    query = sa.select(table.c.symbol, table.c.date, *(table.c[c] for c in VALUES))
    if start is not None:
        query = query.where(table.c.date >= start)
    if end is not None:
        query = query.where(table.c.date <= end)
    with open_engine(url).connect() as conn:
        rows = conn.execute(query.where(table.c.symbol.in_(symbols)).order_by(table.c.symbol, table.c.date)).all()
    frame = pd.DataFrame(rows, columns=["symbol", "date", *VALUES])
    frame["date"] = pd.to_datetime(frame["date"])
    for column in VALUES:
        frame[column] = frame[column].astype("float64")
    order = {s: i for i, s in enumerate(symbols)}
    frame = frame.sort_values(["symbol", "date"], key=lambda c: c.map(order) if c.name == "symbol" else c, kind="stable")
    return frame.set_index(["symbol", "date"])[list(VALUES)]


def assert_same(url: str, symbols: list[str], **window) -> pd.DataFrame:
    got = read_returns(symbols, url=url, **window)
    expected = sql_returns(url, symbols, **window)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got.index.levels[1].dtype == expected.index.levels[1].dtype
    return got


def returns_state(url: str) -> tuple[dict, list]:
    with open_engine(url).connect() as conn:
        seals = dict(conn.execute(sa.text("SELECT symbol, rows FROM column_seals WHERE dataset = 'daily_returns'")).all())
        dirty = conn.execute(sa.text("SELECT symbol, year FROM column_dirty WHERE dataset = 'daily_returns'")).all()
    return seals, [tuple(r) for r in dirty]


def blocks_of(url: str, symbol: str) -> list[tuple[int, int]]:
    with open_engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.text("SELECT year, rows FROM column_blocks WHERE dataset = 'daily_returns' AND symbol = :s ORDER BY year"), {"s": symbol}
        )]


def _sql(url: str, *statements: str) -> None:
    with open_engine(url).begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


@pytest.fixture
def returns_panel(any_warehouse_url):
    """AAA and BBB (700 bars from 2021, with splits and dividends) and CCC (10 bars), their returns
    computed whole."""
    url = any_warehouse_url
    frames = {"AAA": bars(700, seed=1), "BBB": bars(700, seed=2, scale=3), "CCC": bars(10, first="2023-06-01", seed=3)}
    BarStore(url).upsert_many(list(frames.items()))
    with_events(url, list(frames), frames)
    update_returns(url, [ReturnsRequest(s, whole=True) for s in frames])
    return url


@pytest.fixture
def reads(monkeypatch) -> list:
    """(table, symbols) of every read through the column path from here on."""
    seen = []
    original = columns.read

    def spy(conn, ds, symbols, *args, **kwargs):
        seen.append((ds.table, list(symbols)))
        return original(conn, ds, symbols, *args, **kwargs)

    monkeypatch.setattr(columns, "read", spy)
    return seen


def test_returns_are_read_from_blocks_and_equal_the_table(returns_panel, reads):
    url = returns_panel
    seals, dirty = returns_state(url)
    assert seals == {"AAA": 699, "BBB": 699} and dirty == []  # CCC's 9 returns are a tail
    assert [key for key, _ in blocks_of(url, "AAA")] == [2021, 2022, 2023]  # the seal's year, the one before, the rest
    got = assert_same(url, ["CCC", "BBB", "AAA"])
    assert reads == [("daily_returns", ["CCC", "BBB", "AAA"])]
    assert got.index.get_level_values("symbol").unique().tolist() == ["CCC", "BBB", "AAA"]
    assert_same(url, ["BBB", "AAA", "CCC"], start="2022-03-15", end="2023-08-01")
    assert_same(url, ["AAA"], start="2023-09-01")
    assert_same(url, ["AAA", "NOPE"])
    empty = assert_same(url, ["NOPE"])
    assert empty.empty


def test_new_days_a_late_correction_and_whole_recomputes(returns_panel):
    url = returns_panel
    store = BarStore(url)
    # new days: the tail grows, then is folded into the seal year's block
    last = bars(700, seed=1)["date"].iloc[-1]
    for i in range(columns.tail_limit("AAA") + 2):
        day = last + pd.offsets.BDay(i + 1)
        store.upsert_bars("AAA", bars(1, first=day.date().isoformat(), seed=40 + i))
        update_returns(url, [ReturnsRequest("AAA", changed_from=day.date())])
    seals, dirty = returns_state(url)
    assert seals["AAA"] > 699 and dirty == []
    assert_same(url, ["AAA", "BBB"])
    # a late correction in a sealed year: the returns from that day on are recomputed
    stored = store.read_bars("AAA")
    revised = stored[(stored["date"] >= "2022-05-02") & (stored["date"] <= "2022-05-06")].copy()
    revised["close"] *= 1.07
    store.upsert_bars("AAA", revised)
    update_returns(url, [ReturnsRequest("AAA", changed_from=dt.date(2022, 5, 2))])
    assert returns_state(url)[1] == []
    assert_same(url, ["AAA"])
    # a split recorded late: the whole history again
    CorporateActionStore(url).record(
        [parse_split({"id": "AAA-late", "ticker": "AAA", "execution_date": "2021-06-01", "split_from": 1, "split_to": 4})], [],
        complete_symbols=["AAA"],
    )
    (outcome,) = update_returns(url, [ReturnsRequest("AAA")])
    assert outcome.action == "whole"
    assert returns_state(url)[1] == []
    assert_same(url, ["AAA", "BBB", "CCC"])
    # a whole recompute with fewer and with more returns (a history cut short, then given back)
    before = sql_returns(url, ["BBB"])
    state = ReturnsStore(url).states(["BBB"])["BBB"]
    short = before.loc["BBB"].reset_index().iloc[300:]
    ReturnsStore(url).replace([SymbolReturns("BBB", None, short, state)])
    assert_same(url, ["BBB", "AAA"])
    ReturnsStore(url).replace([SymbolReturns("BBB", None, before.loc["BBB"].reset_index(), state)])
    pd.testing.assert_frame_equal(assert_same(url, ["BBB"]), before, check_exact=True)


def test_nulls_and_non_finite_values_read_as_stored(any_warehouse_url):
    url = any_warehouse_url
    days = pd.bdate_range("2020-01-02", periods=400)
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"date": days, **{c: rng.normal(0, 0.02, len(days)) for c in VALUES}})
    frame.loc[3, "total_return"] = np.nan
    frame.loc[250, "log_return"] = np.inf  # stored as NULL
    frame.loc[390, "split_adjusted_return"] = np.nan
    state = ReturnsState("NUL", days[-1].date(), "-", [])
    ReturnsStore(url).replace([SymbolReturns("NUL", None, frame, state)])
    assert returns_state(url)[0] == {"NUL": 400}
    got = assert_same(url, ["NUL"])
    assert np.isnan(got["log_return"].iloc[250]) and np.isnan(got["total_return"].iloc[3])


def test_writes_that_bypass_the_store_are_never_served_from_blocks(returns_panel, caplog):
    url = returns_panel
    year_2022 = "date >= '2022-01-01' AND date <= '2022-12-31'" if "sqlite" in url else "date BETWEEN DATE '2022-01-01' AND DATE '2022-12-31'"
    _sql(url, f"UPDATE daily_returns SET total_return = total_return * 2 WHERE symbol = 'AAA' AND {year_2022}")
    when = "'2021-07-04'" if "sqlite" in url else "DATE '2021-07-04'"  # a Sunday: no return there yet
    stamp = "'2026-01-01 00:00:00'" if "sqlite" in url else "TIMESTAMP '2026-01-01'"
    _sql(url, f"INSERT INTO daily_returns (symbol, date, total_return, log_return, split_adjusted_return, computed_at) "
              f"VALUES ('BBB', {when}, 0.5, NULL, 0.5, {stamp})")
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_same(url, ["AAA", "BBB", "CCC"])
    assert "2 out of step (AAA, BBB)" in caplog.records[0].getMessage()
    # the next write of the returns rebuilds their blocks
    update_returns(url, [ReturnsRequest("AAA", whole=True), ReturnsRequest("BBB", whole=True)])
    assert returns_state(url)[1] == []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_same(url, ["AAA", "BBB"])
    assert caplog.records == []


def test_the_returns_command_and_the_check_on_its_own_read_through_the_blocks(returns_panel, reads, monkeypatch, capsys):
    from market_pipeline.cli.main import main

    url = returns_panel
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
    assert main(["returns", "BBB", "CCC", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    expected = sql_returns(url, ["BBB", "CCC"])
    assert [r["total_return"] for r in body["returns"]] == pytest.approx(expected["total_return"].tolist(), abs=1e-9)  # JSON keeps 10 digits
    assert reads == [("daily_returns", ["BBB", "CCC"])]

    # a return no event explains, written by hand: the check run on its own finds it in the stored returns
    reads.clear()
    on = "'2022-03-01'" if "sqlite" in url else "DATE '2022-03-01'"
    _sql(url, f"UPDATE daily_returns SET total_return = 1.5 WHERE symbol = 'BBB' AND date = {on}")
    judged = judge_stored(url, ["AAA", "BBB", "NOPE"], threshold=0.5)
    assert reads == [("daily_returns", ["AAA", "BBB", "NOPE"])]
    assert judged["AAA"] == [] and judged["NOPE"] == []
    assert [o["date"] for o in judged["BBB"]] == ["2022-03-01"] and judged["BBB"][0]["total_return"] == 1.5
