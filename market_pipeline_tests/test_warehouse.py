"""The warehouse on SQLite and PostgreSQL: migrations, idempotent upserts, revisions, rollback."""


import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.warehouse import BarStore
from market_pipeline.warehouse.engine import current_revision, get_engine, head_revision, normalize_url


def bars(start: str, n: int, price: float = 100.0) -> pd.DataFrame:
    dates = pd.bdate_range(start, periods=n)
    close = price + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "date": dates, "open": close - 0.5, "high": close + 1.0, "low": close - 1.0, "close": close,
            "volume": np.full(n, 1234.5), "vwap": close, "transactions": pd.array([10] * n, dtype="Int64"),
        }
    )[list(BAR_COLUMNS)]


def count(url: str, symbol: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM ohlcv_daily WHERE symbol = :s"), {"s": symbol}).scalar()


def test_migrations_from_empty(any_warehouse_url):
    engine = get_engine(any_warehouse_url)
    assert current_revision(engine) == head_revision()
    tables = set(sa.inspect(engine).get_table_names())
    assert {"tracked_symbols", "ohlcv_daily", "symbol_stats", "alembic_version"} <= tables
    pk = sa.inspect(engine).get_pk_constraint("ohlcv_daily")["constrained_columns"]
    assert pk == ["symbol", "date"]


def test_upsert_is_idempotent(any_warehouse_url):
    store = BarStore(any_warehouse_url)
    frame = bars("2024-01-02", 50)
    first = store.upsert_bars("AAPL", frame)
    again = store.upsert_bars("AAPL", frame)
    assert (first.rows_inserted, first.rows_changed) == (50, 0)
    assert (again.rows_inserted, again.rows_changed) == (0, 0)
    assert count(any_warehouse_url, "AAPL") == 50
    back = store.read_bars("AAPL")
    pd.testing.assert_frame_equal(back.reset_index(drop=True), frame.reset_index(drop=True), check_dtype=False)


def test_upsert_many_writes_each_symbol_its_own_bars(any_warehouse_url):
    """The grouped refresh writes a batch of symbols in one transaction: each gets exactly its own
    bars and its own counts (on PostgreSQL the staging table is reused symbol after symbol)."""
    store = BarStore(any_warehouse_url)
    store.upsert_bars("BBB", bars("2024-01-02", 5, price=200.0))
    items = [("CCC", bars("2024-01-02", 4, price=300.0)), ("AAA", bars("2024-01-02", 3, price=100.0)),
             ("BBB", bars("2024-01-08", 3, price=900.0)), ("EMPTY", bars("2024-01-02", 0))]
    written = store.upsert_many(items)
    assert {s: (w.rows_inserted, w.rows_changed) for s, w in written.items()} == {
        "AAA": (3, 0), "BBB": (2, 1), "CCC": (4, 0), "EMPTY": (0, 0),
    }
    assert [count(any_warehouse_url, s) for s in ("AAA", "BBB", "CCC", "EMPTY")] == [3, 7, 4, 0]
    assert store.read_bars("AAA")["close"].tolist() == [100.0, 101.0, 102.0]
    assert store.read_bars("CCC")["close"].tolist() == [300.0, 301.0, 302.0, 303.0]
    assert store.read_bars("BBB")["close"].tolist() == [200.0, 201.0, 202.0, 203.0, 900.0, 901.0, 902.0]


def test_revision_overwrites(any_warehouse_url):
    store = BarStore(any_warehouse_url)
    store.upsert_bars("MSFT", bars("2024-01-02", 10))
    revised = bars("2024-01-12", 3, price=500.0)  # overlaps the last 2 stored dates, adds one
    result = store.upsert_bars("MSFT", revised)
    assert count(any_warehouse_url, "MSFT") == 11
    assert result.rows_changed == 2 and result.rows_inserted == 1
    stored = store.read_bars("MSFT").set_index("date")
    assert stored.loc[pd.Timestamp(revised["date"].iloc[0]), "close"] == 500.0


def test_failure_mid_write_keeps_previous_rows(any_warehouse_url):
    store = BarStore(any_warehouse_url)
    store.upsert_bars("SPY", bars("2024-01-02", 20))
    before = store.read_bars("SPY")
    broken = bars("2024-01-02", 30, price=900.0)
    broken.loc[25, "open"] = None  # NOT NULL violation on the 26th row: the whole write must roll back
    with pytest.raises(sa.exc.IntegrityError):
        store.upsert_bars("SPY", broken)
    pd.testing.assert_frame_equal(store.read_bars("SPY"), before)


def test_refetch_start_and_summary(any_warehouse_url):
    store = BarStore(any_warehouse_url)
    assert store.refetch_start("QQQ", 3) is None
    frame = bars("2024-01-02", 10)
    store.upsert_bars("QQQ", frame)
    assert store.refetch_start("QQQ", 3) == frame["date"].iloc[-3].date()
    n, first, last = store.summary(["QQQ"])["QQQ"]
    assert (n, first, last) == (10, frame["date"].iloc[0].date(), frame["date"].iloc[-1].date())


def test_postgres_scheme_is_psycopg2():
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_upsert_chunks_and_nulls_round_trip(any_warehouse_url):
    """More bars than one SQLite statement takes (500), a partial last chunk, NULL vwap and
    transactions: every value reads back as written, and a second write changes exactly one bar."""
    store = BarStore(any_warehouse_url)
    frame = bars("2000-01-03", 1234)
    frame.loc[[0, 500, 1233], "vwap"] = np.nan
    frame["transactions"] = frame["transactions"].astype("Int64")
    frame.loc[[1, 999], "transactions"] = pd.NA
    first = store.upsert_bars("LONG", frame)
    assert (first.rows_upserted, first.rows_inserted, first.rows_changed) == (1234, 1234, 0)
    back = store.read_bars("LONG")
    pd.testing.assert_frame_equal(back.reset_index(drop=True), frame.reset_index(drop=True), check_dtype=False)
    revised = frame.copy()
    revised.loc[700, "close"] += 1.0
    again = store.upsert_bars("LONG", revised)
    assert (again.rows_inserted, again.rows_changed) == (0, 1)
    assert again.fetched_at is not None and again.fetched_at >= first.fetched_at


def test_read_bars_many_is_read_bars_for_each_symbol(any_warehouse_url):
    store = BarStore(any_warehouse_url)
    store.upsert_bars("AAA", bars("2024-01-02", 30, price=10.0))
    with_nulls = bars("2024-02-01", 7, price=20.0)
    with_nulls.loc[3, "vwap"] = np.nan
    with_nulls.loc[4, "transactions"] = pd.NA
    store.upsert_bars("BBB", with_nulls)
    many = store.read_bars_many(["BBB", "NONE", "AAA"])
    assert list(many) == ["BBB", "NONE", "AAA"]
    assert many["NONE"].empty and list(many["NONE"].columns) == list(BAR_COLUMNS)
    for symbol in ("AAA", "BBB"):
        pd.testing.assert_frame_equal(many[symbol], store.read_bars(symbol))
    # and what was written comes back: values, NULL vwap as NaN, NULL transactions as <NA>, dtypes
    written = with_nulls.reset_index(drop=True)
    pd.testing.assert_frame_equal(many["BBB"], written.assign(date=written["date"].astype("datetime64[ns]")))
    assert np.isnan(many["BBB"].loc[3, "vwap"]) and pd.isna(many["BBB"].loc[4, "transactions"])


def _table(url: str) -> list[tuple]:
    with get_engine(url).connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT symbol, date, open, high, low, close, volume, vwap, transactions FROM ohlcv_daily ORDER BY symbol, date"
        )]


def test_a_batch_of_symbols_writes_what_one_by_one_writes(tmp_path):
    """The SQLite batch path (one read and multi-row statements for hundreds of symbols: a grouped
    refresh) leaves the same rows and reports the same counts as writing each symbol on its own:
    new dates, late corrections (a value, a NULL appearing, a NULL filled), untouched dates,
    unordered and duplicated input, an empty frame, more rows than one statement takes."""
    urls = [f"sqlite:///{tmp_path / name}.sqlite" for name in ("one", "many")]
    stores = [BarStore(url) for url in urls]
    seed = {f"S{i:03d}": bars("2024-01-02", 20, price=10.0 + i) for i in range(150)}
    for store in stores:
        for symbol, frame in seed.items():
            store.upsert_bars(symbol, frame)
    batch = []
    for i, symbol in enumerate(seed):
        frame = bars("2024-01-24", 6, price=10.0 + i + 16)  # 4 stored dates again, 2 new ones
        if i % 3 == 0:
            frame.loc[1, "close"] += 0.25  # a late correction
        if i % 5 == 0:
            frame.loc[2, "vwap"] = np.nan  # a value withdrawn
            frame.loc[3, "transactions"] = pd.NA
        if i % 7 == 0:
            frame = pd.concat([frame.iloc[[5, 0, 3]], frame]).reset_index(drop=True)  # unordered, dates twice
        batch.append((symbol, frame))
    batch += [("EMPTY", bars("2024-01-02", 0)), ("NEW", bars("2023-01-02", 700, price=50.0))]
    one = {symbol: stores[0].upsert_bars(symbol, frame) for symbol, frame in batch}
    many = stores[1].upsert_many(batch)
    counts = lambda written: {s: (w.rows_upserted, w.rows_inserted, w.rows_changed) for s, w in written.items()}
    assert counts(many) == counts(one)
    assert [counts(many)[s] for s in ("S000", "S001", "S003", "S005")] == [(6, 2, 3), (6, 2, 0), (6, 2, 1), (6, 2, 2)]
    assert counts(many)["NEW"] == (700, 700, 0) and counts(many)["EMPTY"] == (0, 0, 0)
    assert _table(urls[1]) == _table(urls[0])
    assert len(_table(urls[1])) == 150 * 22 + 700
    again = stores[1].upsert_many(batch)  # nothing new, nothing changed
    assert {s: (w.rows_inserted, w.rows_changed) for s, w in again.items()} == {s: (0, 0) for s, _ in batch}


def test_a_write_reports_the_symbols_count_and_range_as_summary_would(any_warehouse_url):
    """On SQLite a symbol's write also reports its bar count and first and last date after the write
    (the run records them without counting the symbol's bars again): equal to `summary` on a first
    load, a re-write inside the history, new dates after it, dates before it, and a write that
    leaves stored dates on both sides. On PostgreSQL the write does not report them (None)."""
    store = BarStore(any_warehouse_url)
    writes = [
        bars("2024-03-01", 40),  # first load
        bars("2024-03-11", 5),  # inside: rows on both sides stay
        bars("2024-04-20", 10, price=140.0),  # after, across the last stored date
        bars("2024-02-01", 12, price=90.0),  # before, touching the first stored date
        bars("2024-01-02", 3, price=80.0),  # before, with a hole up to the next stored date
    ]
    for frame in writes:
        written = store.upsert_bars("SYM", frame)
        expected = store.summary(["SYM"])["SYM"]
        if store.dialect == "sqlite":
            assert written.stored == expected
        else:
            assert written.stored is None
    assert expected[0] == count(any_warehouse_url, "SYM")


def test_head_revision_read_from_the_files_is_alembics_head():
    from alembic.script import ScriptDirectory

    from market_pipeline.warehouse.engine import _alembic_config

    assert head_revision() == ScriptDirectory.from_config(_alembic_config()).get_current_head()
