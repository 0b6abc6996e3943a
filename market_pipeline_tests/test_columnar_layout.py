"""The column blocks' layout and SQLite's watermark (warehouse.columns): a history is three blocks
(the years before the last two, each of the last two), a fold rewrites only the seal year's block
until it enters a new year, a correction in an old year lays the blocks out again; and on SQLite a
row inserted under a seal by another writer is found above the watermark (rows written since the
last write, in rowid order), or by counting the symbols' rows when that is cheaper or the watermark
is void (the row at it deleted: rowids under it may be given again), and the next write marks it
out of step. Every read equals the rows."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import sqlalchemy as sa

from market_pipeline.warehouse import columns
from market_pipeline.warehouse.engine import open_engine
from market_pipeline.warehouse.reader import read_bars
from market_pipeline.warehouse.store import BarStore
from market_pipeline_tests.test_columnar_reads import _sql, assert_reads_equal_rows, bars, state, stored

COLUMNS_SQL = "symbol, date, open, high, low, close, volume, vwap, transactions, fetched_at"


def blocks(url: str, symbol: str) -> dict[int, bytes]:
    with open_engine(url).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT year, payload FROM column_blocks WHERE dataset = 'ohlcv_daily' AND symbol = :s ORDER BY year"), {"s": symbol}
        ).all()
    return {int(year): bytes(payload) for year, payload in rows}


def watermark(url: str) -> int:
    with open_engine(url).connect() as conn:
        return conn.execute(sa.text("SELECT row_mark FROM column_marks WHERE dataset = 'ohlcv_daily'")).scalar()


def test_a_history_is_three_blocks_and_a_fold_rewrites_only_the_seal_years(any_warehouse_url):
    url = any_warehouse_url
    store = BarStore(url)
    full = bars(2700, first="2014-01-02", seed=7)  # 2014-01-02 .. 2024-05-08
    store.upsert_bars("LAY", full.iloc[:2400])  # through 2023-03-15
    assert list(blocks(url, "LAY")) == [2021, 2022, 2023]
    assert_reads_equal_rows(url, ["LAY"])
    assert_reads_equal_rows(url, ["LAY"], start="2022-11-01", end="2023-02-01")
    before = blocks(url, "LAY")
    # new days of the seal's year reaching the tail's limit: folded into 2023's block, nothing older rewritten
    store.upsert_bars("LAY", full.iloc[2400 : 2400 + columns.tail_limit("LAY")])
    seals, dirty = state(url)
    assert dirty == [] and str(seals[0][1]) > "2023-03-15"
    after = blocks(url, "LAY")
    assert after[2021] == before[2021] and after[2022] == before[2022] and after[2023] != before[2023]
    assert_reads_equal_rows(url, ["LAY"])
    # daily refreshes into a new year: 2022 joins the old years' block, 2023 and 2024 have their own
    for end in range(2400 + columns.tail_limit("LAY") + 5, 2700, 5):
        store.upsert_bars("LAY", full.iloc[end - 8 : end])  # a re-fetch window and new days
    seals, dirty = state(url)
    assert dirty == [] and str(seals[0][1]) >= "2024-01-01"
    assert list(blocks(url, "LAY")) == [2022, 2023, 2024]
    assert_reads_equal_rows(url, ["LAY"])
    assert_reads_equal_rows(url, ["LAY"], start="2021-06-01", end="2023-03-01")
    # a correction in an old year: marked, and the blocks laid out again from the rows
    old = stored(url, ["LAY"]).reset_index().drop(columns="symbol")
    revised = old[(old["date"] >= "2016-03-01") & (old["date"] <= "2016-03-10")].copy()
    revised["close"] *= 1.1
    store.upsert_bars("LAY", revised)
    assert state(url)[1] == [] and list(blocks(url, "LAY")) == [2022, 2023, 2024]
    assert_reads_equal_rows(url, ["LAY"])


def test_blocks_of_one_year_each_still_read_and_are_laid_out_again(any_warehouse_url):
    """Blocks written one per year (by a version before this layout) read the same; the first fold
    that enters a new year lays them out in three."""
    url = any_warehouse_url
    store = BarStore(url)
    store.upsert_bars("OLD", bars(1000, first="2020-01-02", seed=9))
    rows = stored(url, ["OLD"]).reset_index()
    frame = rows.drop(columns="symbol")
    with open_engine(url).begin() as conn:
        conn.execute(sa.text("DELETE FROM column_blocks WHERE symbol = 'OLD'"))
        per_year = columns.rows_of_frame(columns.OHLCV, frame)
        years = columns._years(per_year.days)
        columns._put_blocks(conn, columns.OHLCV, "OLD", [
            (int(y), int((years == y).sum()), columns.encode(columns.OHLCV, per_year.take(years == y))) for y in sorted(set(years.tolist()))
        ])
    assert list(blocks(url, "OLD")) == [2020, 2021, 2022, 2023]
    assert_reads_equal_rows(url, ["OLD"])
    assert_reads_equal_rows(url, ["OLD"], start="2021-02-01", end="2022-02-01")
    later = bars(1100, first="2020-01-02", seed=9).iloc[1000:]
    store.upsert_bars("OLD", later)
    assert list(blocks(url, "OLD")) == [2022, 2023, 2024] and state(url)[1] == []
    assert_reads_equal_rows(url, ["OLD"])


@pytest.fixture
def ten(sqlite_url):
    """Ten symbols of 600 bars, sealed by their first loads, on SQLite."""
    store = BarStore(sqlite_url)
    store.upsert_many([(f"S{i}", bars(600, seed=20 + i)) for i in range(10)])
    return sqlite_url


@pytest.fixture
def paths(monkeypatch):
    """Which way each read looked for rows inserted under a seal."""
    seen = []
    above, counted = columns._above_mark, columns._counted_under_seals

    def spy_above(conn, ds, mark, skip=()):
        seen.append("watermark")
        return above(conn, ds, mark, skip)

    def spy_counted(conn, ds, symbols):
        seen.append("per symbol")
        return counted(conn, ds, symbols)

    monkeypatch.setattr(columns, "_above_mark", spy_above)
    monkeypatch.setattr(columns, "_counted_under_seals", spy_counted)
    return seen


def _read_all(url, symbols, caplog) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_reads_equal_rows(url, symbols)
    return " ".join(r.getMessage() for r in caplog.records)


def test_an_insert_under_a_seal_is_found_above_the_watermark(ten, paths, caplog):
    url = ten
    names = [f"S{i}" for i in range(10)]
    mark = watermark(url)
    assert mark == 6000  # every row looked at by the write
    _sql(url, f"INSERT INTO ohlcv_daily ({COLUMNS_SQL}) VALUES ('S3', '2021-07-04', 1, 1, 1, 1, 1, NULL, NULL, '2026-01-01 00:00:00')")
    paths.clear()
    assert "1 out of step (S3)" in _read_all(url, names, caplog)
    assert set(paths) == {"watermark"}  # a big read: only the rows over the mark were looked at
    # many rows written since by another writer (a symbol loaded with SQL): a read of one symbol counts
    # its rows under its seal instead of looking at all of those
    _sql(url, f"INSERT INTO ohlcv_daily ({COLUMNS_SQL}) SELECT 'ZZZ', date, open, high, low, close, volume, vwap, transactions, "
              "fetched_at FROM ohlcv_daily WHERE symbol = 'S1'")
    paths.clear()
    assert "1 out of step (S3)" in _read_all(url, ["S3"], caplog)
    assert set(paths) == {"per symbol"}
    paths.clear()
    assert _read_all(url, ["S4"], caplog) == "" and set(paths) == {"per symbol"}
    # the next write of any symbol marks S3 out of step and moves the watermark over the row
    BarStore(url).upsert_bars("S7", bars(601, seed=27).tail(1))
    assert ("S3", 2021) in state(url)[1] and watermark(url) > mark
    assert "1 out of step (S3)" in _read_all(url, names, caplog)
    BarStore(url).upsert_bars("S3", stored(url, ["S3"]).reset_index().drop(columns="symbol").tail(2))  # rebuilt
    assert state(url)[1] == [] and _read_all(url, names, caplog) == ""


def test_replaced_rows_and_rowids_used_again_are_found(ten, paths, caplog):
    url = ten
    names = [f"S{i}" for i in range(10)]
    # INSERT OR REPLACE of a sealed bar: no delete trigger fires, but the new row's rowid is above the watermark
    _sql(url, f"INSERT OR REPLACE INTO ohlcv_daily ({COLUMNS_SQL}) SELECT symbol, date, open, high, low, close * 3, volume, vwap, "
              "transactions, fetched_at FROM ohlcv_daily WHERE symbol = 'S2' AND date = '2021-05-03'")
    paths.clear()
    assert "1 out of step (S2)" in _read_all(url, names, caplog)
    assert set(paths) == {"watermark"}
    BarStore(url).upsert_bars("S2", stored(url, ["S2"]).reset_index().drop(columns="symbol").tail(2))
    assert state(url)[1] == [] and _read_all(url, names, caplog) == ""
    # the newest rows deleted (the row at the watermark among them), then a row inserted under another
    # seal takes one of their rowids: the watermark is void, the reads count every symbol's rows
    top = watermark(url)
    _sql(url, f"DELETE FROM ohlcv_daily WHERE rowid > {top - 2}",
         f"INSERT INTO ohlcv_daily ({COLUMNS_SQL}) VALUES ('S5', '2021-07-04', 1, 1, 1, 1, 1, NULL, NULL, '2026-01-01 00:00:00')")
    with open_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT rowid FROM ohlcv_daily WHERE symbol = 'S5' AND date = '2021-07-04'")).scalar() <= top
    assert watermark(url) == -1
    paths.clear()
    assert "S5" in _read_all(url, names, caplog) and set(paths) == {"per symbol"}
    # the next write counts every sealed symbol's rows once, marks S5, and sets the watermark again
    BarStore(url).upsert_bars("S0", bars(601, seed=20).tail(1))
    assert ("S5", 2021) in state(url)[1] and watermark(url) > 0
    paths.clear()
    assert "S5" in _read_all(url, names, caplog) and set(paths) == {"watermark"}


def test_reads_stay_right_with_the_watermark_on_postgres_too(any_warehouse_url):
    """On PostgreSQL inserts are marked by their trigger; both engines answer the rows after a
    write under a seal from outside the store."""
    url = any_warehouse_url
    store = BarStore(url)
    store.upsert_many([(f"P{i}", bars(500, seed=40 + i)) for i in range(3)])
    when, stamp = ("'2021-07-04'", "'2026-01-01 00:00:00'") if "sqlite" in url else ("DATE '2021-07-04'", "TIMESTAMP '2026-01-01'")
    _sql(url, f"INSERT INTO ohlcv_daily ({COLUMNS_SQL}) VALUES ('P1', {when}, 1, 1, 1, 1, 1, NULL, NULL, {stamp})")
    assert_reads_equal_rows(url, ["P0", "P1", "P2"])
    got = read_bars(["P1"], url=url)
    assert pd.Timestamp("2021-07-04") in got.loc["P1"].index
