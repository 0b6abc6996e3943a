"""The columnar read path (warehouse.columns): `read_bars`, `read_bars_many` and what builds on them
answer exactly what the SQL store's rows (and its adjusted views) hold at the moment of the call, on
SQLite and PostgreSQL: after first loads, appends, late corrections, during a run, after a writer is
killed mid-write, after a disk-full write, after writes that bypass the bar store, and after the
migration of a warehouse written before column blocks existed."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from market_pipeline.corporate_actions import parse_dividend, parse_split
from market_pipeline.warehouse import columns
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.engine import dispose_engine, open_engine, upgrade
from market_pipeline.warehouse.reader import read_bars
from market_pipeline.warehouse.registry import SymbolRegistry
from market_pipeline.warehouse.store import BarStore

VIEWS = {"none": "ohlcv_daily", "splits": "ohlcv_daily_adjusted", "total_return": "ohlcv_daily_total_return"}
VALUES = ("open", "high", "low", "close", "volume", "vwap", "transactions")


def bars(n: int, first: str = "2021-01-04", seed: int = 1, scale: float = 1.0) -> pd.DataFrame:
    """`n` bars on business days from `first`, some without vwap or transactions."""
    rng = np.random.default_rng(seed)
    close = scale * 40 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    vwap = close * 1.001
    vwap[rng.random(n) < 0.05] = np.nan
    tx = pd.array(rng.integers(1, 90_000, n), dtype="Int64")
    tx[rng.random(n) < 0.05] = pd.NA
    return pd.DataFrame({
        "date": pd.bdate_range(first, periods=n), "open": close * 0.99, "high": close * 1.02, "low": close * 0.97,
        "close": close, "volume": rng.integers(100, 10**7, n).astype(float), "vwap": vwap, "transactions": tx,
    })


def stored(url: str, symbols: list[str], adjustment: str = "none", start=None, end=None) -> pd.DataFrame:
    """The reference: the rows of `ohlcv_daily` (or of its adjusted view) straight from SQL, in the
    frame `read_bars` promises (symbols in the order asked, dates ascending)."""
    where, params = "symbol = :symbol", {}
    if start:
        where += " AND date >= :start"
        params["start"] = dt.date.fromisoformat(start)
    if end:
        where += " AND date <= :end"
        params["end"] = dt.date.fromisoformat(end)
    parts = []
    with open_engine(url).connect() as conn:
        for symbol in symbols:
            rows = conn.execute(
                sa.text(f"SELECT symbol, date, {', '.join(VALUES)} FROM {VIEWS[adjustment]} WHERE {where} ORDER BY date"),
                {**params, "symbol": symbol},
            ).all()
            parts += [tuple(r) for r in rows]
    frame = pd.DataFrame(parts, columns=["symbol", "date", *VALUES])
    frame["symbol"] = frame["symbol"].astype("str")
    frame["date"] = pd.to_datetime(frame["date"].astype(str)).astype("datetime64[ns]")
    for c in VALUES[:-1]:
        frame[c] = frame[c].astype("float64")
    frame["transactions"] = frame["transactions"].astype("Int64")
    return frame.set_index(["symbol", "date"])


def assert_reads_equal_rows(url: str, symbols: list[str], **window) -> None:
    for adjustment in VIEWS:
        got = read_bars(symbols, adjustment=adjustment, url=url, **window)
        expected = stored(url, [s for s in symbols], adjustment, **window)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def state(url: str) -> tuple[list, list]:
    with open_engine(url).connect() as conn:
        seals = conn.execute(sa.text("SELECT symbol, sealed_through, rows FROM column_seals ORDER BY symbol")).all()
        dirty = conn.execute(sa.text("SELECT symbol, year FROM column_dirty ORDER BY symbol, year")).all()
    return [tuple(r) for r in seals], [tuple(r) for r in dirty]


def with_events(url: str, symbols: list[str], frames: dict[str, pd.DataFrame]) -> None:
    """Two splits and quarterly dividends per symbol: the adjusted reads have factors to apply."""
    SymbolRegistry(url).add(symbols, "stock")
    all_splits, all_dividends = [], []
    for symbol in symbols:
        dates = frames[symbol]["date"].dt.date.tolist()
        closes = frames[symbol]["close"].to_numpy()
        all_splits += [
            parse_split({"id": f"{symbol}-s{i}", "ticker": symbol, "execution_date": dates[k].isoformat(), "split_from": 1, "split_to": to})
            for i, (k, to) in enumerate(((len(dates) // 3, 2), (2 * len(dates) // 3, 3)))
        ]
        all_dividends += [
            parse_dividend({"id": f"{symbol}-d{k}", "ticker": symbol, "ex_dividend_date": dates[k].isoformat(),
                            "cash_amount": round(float(closes[k - 1]) * 0.01, 2), "currency": "USD", "distribution_type": "recurring"})
            for k in range(63, len(dates), 63)
        ]
    CorporateActionStore(url).record(all_splits, all_dividends, complete_symbols=symbols)


@pytest.fixture
def panel(any_warehouse_url):
    """AAA: 3 years, sealed whole by its first load; BBB: the same plus a tail of new days; CCC: 10 bars
    (a tail only, never sealed); all with splits and dividends."""
    url = any_warehouse_url
    store = BarStore(url)
    frames = {"AAA": bars(700, seed=1), "BBB": bars(700, seed=2, scale=3), "CCC": bars(10, first="2023-06-01", seed=3)}
    store.upsert_many(list(frames.items()))
    extra = bars(712, seed=2, scale=3).iloc[700:].assign(date=pd.bdate_range(frames["BBB"]["date"].iloc[-1] + pd.offsets.BDay(1), periods=12))
    store.upsert_bars("BBB", extra)
    with_events(url, ["AAA", "BBB", "CCC"], frames)
    return url


def test_reads_equal_the_rows_for_every_adjustment(panel):
    url = panel
    seals, dirty = state(url)
    assert [s[0] for s in seals] == ["AAA", "BBB"] and dirty == []  # CCC's 10 bars are a tail
    assert_reads_equal_rows(url, ["CCC", "BBB", "AAA"])
    assert_reads_equal_rows(url, ["BBB", "AAA", "CCC"], start="2022-03-15", end="2023-08-01")
    assert_reads_equal_rows(url, ["BBB"], start="2023-09-01")  # the tail and the last block's end
    # a symbol without bars reads as nothing, beside others and alone
    got = read_bars(["AAA", "NOPE"], url=url)
    assert set(got.index.get_level_values("symbol")) == {"AAA"}
    assert read_bars(["NOPE"], url=url).empty


def test_read_bars_many_and_one_symbol_equal_the_rows(panel):
    url = panel
    store = BarStore(url)
    since = {"AAA": dt.date(2023, 2, 1)}
    frames = store.read_bars_many(["BBB", "AAA", "CCC", "NOPE"], since=since)
    assert list(frames) == ["BBB", "AAA", "CCC", "NOPE"] and frames["NOPE"].empty
    for symbol in ("AAA", "BBB", "CCC"):
        expected = stored(url, [symbol], start=since[symbol].isoformat() if symbol in since else None).reset_index().drop(columns="symbol")
        pd.testing.assert_frame_equal(frames[symbol], expected, check_exact=True)
        pd.testing.assert_frame_equal(
            store.read_bars(symbol, dt.date(2022, 1, 1), dt.date(2022, 12, 31)),
            stored(url, [symbol], start="2022-01-01", end="2022-12-31").reset_index().drop(columns="symbol"),
            check_exact=True,
        )


def test_arrow_output_holds_the_same_bars(panel):
    frame = read_bars(["BBB", "CCC"], adjustment="total_return", url=panel)
    table = read_bars(["BBB", "CCC"], adjustment="total_return", url=panel, output="arrow")
    assert table.column_names == ["symbol", "date", *VALUES]
    back = table.to_pandas()
    assert back["symbol"].astype(str).tolist() == frame.index.get_level_values("symbol").tolist()
    assert pd.to_datetime(back["date"]).tolist() == frame.index.get_level_values("date").tolist()
    for c in VALUES:
        assert back[c].astype(frame[c].dtype).equals(frame[c].reset_index(drop=True)), c


def test_late_corrections_and_new_days_are_read_at_once(panel):
    url = panel
    store = BarStore(url)
    old = stored(url, ["AAA"]).reset_index()
    revised = old[old["date"] >= "2022-06-01"].drop(columns="symbol").copy()
    revised.loc[revised.index[5], "close"] *= 1.05  # a correction in a sealed year
    revised.loc[revised.index[6], "vwap"] = np.nan  # a value that becomes NULL
    revised.loc[revised.index[7], "transactions"] = pd.NA
    result = store.upsert_bars("AAA", revised)
    assert result.rows_changed == 3
    assert state(url)[1] == []  # the write rebuilt the year it marked
    assert_reads_equal_rows(url, ["AAA", "BBB"])
    # bars inserted on dates inside the sealed years (a gap filled later), and new days
    filled = bars(3, first="2021-01-01", seed=9)  # a Friday and the following Monday and Tuesday: one is new
    filled = filled[~filled["date"].isin(old["date"])]
    store.upsert_bars("AAA", filled)
    store.upsert_bars("AAA", bars(2, first="2030-01-01", seed=4))
    assert_reads_equal_rows(url, ["AAA"])
    # writing the same values again marks nothing and changes nothing
    store.upsert_bars("AAA", revised)
    assert state(url)[1] == []
    assert_reads_equal_rows(url, ["AAA"])


def test_tails_are_sealed_a_little_at_a_time(any_warehouse_url):
    url = any_warehouse_url
    store = BarStore(url)
    first = bars(300, seed=5)
    store.upsert_bars("DLY", first)
    limit = columns.tail_limit("DLY")
    later = bars(300 + limit + 3, seed=5).iloc[300:].assign(date=pd.bdate_range(first["date"].iloc[-1] + pd.offsets.BDay(1), periods=limit + 3))
    for i in range(len(later)):  # daily refreshes: the window of 3 again and one new day
        store.upsert_bars("DLY", pd.concat([first.tail(3), later.iloc[: i + 1]]).tail(4))
        seals, dirty = state(url)
        sealed_through = seals[0][1]
        assert dirty == []
        if i + 1 < limit:  # the blocks are left alone while the tail grows
            assert str(sealed_through) == str(first["date"].iloc[-1].date())
    assert str(sealed_through) > str(first["date"].iloc[-1].date())  # the tail was folded in once
    assert_reads_equal_rows(url, ["DLY"])


def test_a_read_during_a_run_sees_what_it_has_stored(polygon_env, instance, warehouse_url, monkeypatch):
    """A run that stored one symbol and is still going: the read has that symbol's bars, exactly."""
    from market_pipeline.definitions import defs
    from market_pipeline.defs.bars.partitions import symbols_partitions
    from market_pipeline.defs.bars.reconcile import range_tags

    symbols = {"AAPL": "stock", "MSFT": "stock"}
    registry = SymbolRegistry(warehouse_url)
    for symbol, asset_class in symbols.items():
        registry.add([symbol], asset_class, "2023-01-03")
    instance.add_dynamic_partitions(symbols_partitions.name, list(symbols))
    first_stored, release = threading.Event(), threading.Event()
    original = BarStore.upsert_many
    calls: list[str] = []

    def gated(self, items, fetched_at=None):
        calls.append(items[0][0])
        if len(calls) > 1:  # the run's second write waits until the test has read
            assert release.wait(120)
        out = original(self, items, fetched_at)
        if len(calls) == 1:
            first_stored.set()
        return out

    monkeypatch.setattr(BarStore, "upsert_many", gated)
    job = defs.resolve_job_def("ohlcv_daily_job")
    outcome = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault("result", job.execute_in_process(instance=instance, tags=range_tags(list(symbols)), raise_on_error=False))
    )
    runner.start()
    try:
        assert first_stored.wait(120), "the run stored nothing"
        done = calls[0]
        got = read_bars(list(symbols), url=warehouse_url)
        assert set(got.index.get_level_values("symbol")) == {done} and runner.is_alive()
        pd.testing.assert_frame_equal(got, stored(warehouse_url, list(symbols)), check_exact=True)
    finally:
        release.set()
        runner.join(180)
    assert outcome["result"].success
    assert_reads_equal_rows(warehouse_url, list(symbols))


_KILLED_WRITER = """
import sys
from market_pipeline.warehouse import columns
from market_pipeline.warehouse.store import BarStore
from market_pipeline_tests.test_columnar_reads import bars

original = columns._put_blocks

def stalled(*args, **kwargs):
    original(*args, **kwargs)
    print("blocks written", flush=True)
    sys.stdin.readline()  # never answered: the process is killed here, its transaction open

columns._put_blocks = stalled
frame = bars(900, seed=11)
frame.loc[10, "close"] *= 2  # a correction in a sealed year and 200 new days
BarStore(sys.argv[1]).upsert_bars("KIL", frame)
"""


def test_a_writer_killed_during_the_columnar_write_changes_nothing(any_warehouse_url):
    url = any_warehouse_url
    store = BarStore(url)
    store.upsert_bars("KIL", bars(700, seed=11))
    before, before_state = stored(url, ["KIL"]), state(url)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "blocks written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    dispose_engine(url)
    assert state(url) == before_state
    pd.testing.assert_frame_equal(stored(url, ["KIL"]), before, check_exact=True)
    assert_reads_equal_rows(url, ["KIL"])
    frame = bars(900, seed=11)
    frame.loc[10, "close"] *= 2
    store.upsert_bars("KIL", frame)  # the same write again goes through
    assert_reads_equal_rows(url, ["KIL"])


def test_disk_full_during_the_columnar_write_fails_the_write_and_changes_nothing(sqlite_url, monkeypatch):
    url = sqlite_url
    store = BarStore(url)
    store.upsert_bars("DSK", bars(400, seed=12))
    before, before_state = stored(url, ["DSK"]), state(url)
    original = columns._put_blocks

    def full(conn, *args, **kwargs):
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")  # no page more: "database or disk is full"
        return original(conn, *args, **kwargs)

    monkeypatch.setattr(columns, "_put_blocks", full)
    try:
        with pytest.raises(sa.exc.OperationalError, match="full"):
            store.upsert_bars("DSK", bars(2000, seed=12))
    finally:
        dispose_engine(url)  # the limit lives on the pooled connection
    monkeypatch.setattr(columns, "_put_blocks", original)
    assert state(url) == before_state
    pd.testing.assert_frame_equal(stored(url, ["DSK"]), before, check_exact=True)
    assert_reads_equal_rows(url, ["DSK"])


def _sql(url: str, *statements: str) -> None:
    with open_engine(url).begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def test_blocks_out_of_step_are_never_served(panel, caplog):
    """Writes that bypass the bar store (an operator's SQL), blocks of another format, missing and
    corrupt blocks: each read answers the rows, says once which symbols it read from rows, and the
    next write of the symbol rebuilds its blocks."""
    url = panel
    year_2021 = "date >= '2021-01-01' AND date <= '2021-12-31'" if "sqlite" in url else "date BETWEEN DATE '2021-01-01' AND DATE '2021-12-31'"
    _sql(
        url,
        f"UPDATE ohlcv_daily SET close = close * 2 WHERE symbol = 'AAA' AND {year_2021}",
        "DELETE FROM ohlcv_daily WHERE symbol = 'BBB' AND date = (SELECT min(date) FROM ohlcv_daily WHERE symbol = 'BBB')",
    )
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_reads_equal_rows(url, ["AAA", "BBB", "CCC"])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(VIEWS) and "2 out of step (AAA, BBB)" in lines[0], lines


    store = BarStore(url)
    store.upsert_bars("AAA", stored(url, ["AAA"]).reset_index().drop(columns="symbol").tail(2))
    store.upsert_bars("BBB", stored(url, ["BBB"]).reset_index().drop(columns="symbol").tail(2))
    assert state(url)[1] == []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_reads_equal_rows(url, ["AAA", "BBB"])
    assert caplog.records == []

    # rows inserted under the seal by hand, one of them replacing a stored bar (SQLite's INSERT OR
    # REPLACE deletes and inserts without a delete trigger firing)
    columns_sql = "symbol, date, open, high, low, close, volume, vwap, transactions, fetched_at"
    if "sqlite" in url:
        replace = (f"INSERT OR REPLACE INTO ohlcv_daily ({columns_sql}) SELECT symbol, date, open, high, low, close * 3, "
                   "volume, vwap, transactions, fetched_at FROM ohlcv_daily WHERE symbol = 'AAA' AND date = '2022-05-02'")
        insert = f"INSERT INTO ohlcv_daily ({columns_sql}) VALUES ('AAA', '2022-05-01', 1, 1, 1, 1, 1, NULL, NULL, '2026-01-01 00:00:00')"
    else:
        replace = (f"INSERT INTO ohlcv_daily ({columns_sql}) SELECT symbol, date, open, high, low, close * 3, volume, vwap, "
                   "transactions, fetched_at FROM ohlcv_daily WHERE symbol = 'AAA' AND date = DATE '2022-05-02' "
                   "ON CONFLICT (symbol, date) DO UPDATE SET close = excluded.close")
        insert = f"INSERT INTO ohlcv_daily ({columns_sql}) VALUES ('AAA', DATE '2022-05-01', 1, 1, 1, 1, 1, NULL, NULL, TIMESTAMP '2026-01-01')"
    _sql(url, replace, insert)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_reads_equal_rows(url, ["AAA"])
    assert "out of step (AAA)" in caplog.records[0].getMessage()
    # rebuilt by the next write of AAA whose dates fall in that year (a re-fetch), or when its tail is folded in
    aaa = stored(url, ["AAA"]).reset_index().drop(columns="symbol")
    store.upsert_bars("AAA", aaa[(aaa["date"] >= "2022-04-25") & (aaa["date"] <= "2022-05-06")])
    assert state(url)[1] == []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_reads_equal_rows(url, ["AAA"])
    assert caplog.records == []

    _sql(url, "UPDATE column_blocks SET format = 99 WHERE symbol = 'AAA' AND year = 2022")
    _sql(url, "DELETE FROM column_blocks WHERE symbol = 'BBB' AND year = 2021")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_reads_equal_rows(url, ["AAA", "BBB"])
    assert "1 of another format (AAA)" in caplog.records[0].getMessage() and "1 missing (BBB)" in caplog.records[0].getMessage()
    store.upsert_bars("AAA", stored(url, ["AAA"]).reset_index().drop(columns="symbol").tail(1))
    with open_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM column_blocks WHERE format <> :f"), {"f": columns.FORMAT}).scalar() == 0

    # half-written bytes (a copy cut short): never decoded into bars
    with open_engine(url).begin() as conn:
        payload = conn.execute(sa.text("SELECT payload FROM column_blocks WHERE symbol = 'AAA' AND year = 2022")).scalar()
        conn.execute(sa.text("UPDATE column_blocks SET payload = :p WHERE symbol = 'AAA' AND year = 2022"), {"p": bytes(payload)[:200]})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="market_pipeline.warehouse.columns"):
        assert_reads_equal_rows(url, ["AAA", "CCC"])
    assert "unreadable" in caplog.records[0].getMessage()

    # every block and seal gone: the rows answer; the next write of each symbol seals it again
    _sql(url, "DELETE FROM column_blocks", "DELETE FROM column_seals")
    assert_reads_equal_rows(url, ["AAA", "BBB", "CCC"])
    store.upsert_bars("AAA", stored(url, ["AAA"]).reset_index().drop(columns="symbol").tail(1))
    assert [s[0] for s in state(url)[0]] == ["AAA"]
    assert_reads_equal_rows(url, ["AAA", "BBB"])


def test_a_rename_moves_the_blocks_with_the_bars(panel):
    from market_pipeline.reference.events import RenamePlan
    from market_pipeline.warehouse.reference import ReferenceStore

    url = panel
    before = read_bars(["AAA"], url=url)
    ReferenceStore(url).rename(RenamePlan(old="AAA", new="AAB", figi=None, evidence="test"))
    after = read_bars(["AAB", "AAA"], url=url)
    assert after.index.get_level_values("symbol").unique().tolist() == ["AAB"]
    pd.testing.assert_frame_equal(after.droplevel("symbol"), before.droplevel("symbol"), check_exact=True)
    assert_reads_equal_rows(url, ["AAB", "AAA"])
    BarStore(url).upsert_bars("AAB", stored(url, ["AAB"]).reset_index().drop(columns="symbol").tail(1))
    assert state(url)[1] == []  # the next write rebuilt what the move marked
    assert_reads_equal_rows(url, ["AAB"])


def insert_rows(conn, symbol: str, frame: pd.DataFrame, fetched_at) -> None:
    """`frame`'s bars inserted into ohlcv_daily row by row, as an older version wrote them; the k-th
    stamped `fetched_at(k)`."""
    for k, row in enumerate(frame.itertuples(index=False)):
        conn.execute(
            sa.text(
                "INSERT INTO ohlcv_daily (symbol, date, open, high, low, close, volume, vwap, transactions, fetched_at) "
                "VALUES (:s, :d, :o, :h, :l, :c, :v, :w, :t, :f)"
            ),
            {"s": symbol, "d": row.date.date(), "o": row.open, "h": row.high, "l": row.low, "c": row.close,
             "v": row.volume, "w": None if np.isnan(row.vwap) else row.vwap,
             "t": None if pd.isna(row.transactions) else int(row.transactions), "f": fetched_at(k)},
        )


def _old_warehouse(url: str) -> None:
    """A warehouse at revision 0007 with bars written as the bar store wrote them then (no blocks)."""
    engine = open_engine(url)  # not migrated to the head
    upgrade(engine, "0007")
    frames = {"OLD": bars(600, seed=21), "OLE": bars(20, first="2024-03-01", seed=22)}
    with engine.begin() as conn:
        for symbol, frame in frames.items():
            insert_rows(conn, symbol, frame, lambda k: dt.datetime(2026, 1, 2, 3, 4, 5))


def test_an_existing_warehouse_reads_the_same_after_the_migration(any_warehouse_url):
    url = any_warehouse_url
    _old_warehouse(url)
    with open_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0007"
    before = stored(url, ["OLD", "OLE"])
    dispose_engine(url)
    assert_reads_equal_rows(url, ["OLD", "OLE"])  # the first use migrates to the head
    pd.testing.assert_frame_equal(stored(url, ["OLD", "OLE"]), before, check_exact=True)
    seals, dirty = state(url)
    assert [(s, r) for s, _, r in seals] == [("OLD", 600), ("OLE", 20)] and dirty == []
    BarStore(url).upsert_bars("OLD", bars(605, seed=21).tail(6))
    assert_reads_equal_rows(url, ["OLD", "OLE"])


def test_the_cli_export_the_checks_and_symbol_stats_read_through_the_blocks(panel, monkeypatch, capsys):
    import json

    from market_pipeline.cli.main import main
    from market_pipeline.quality.report import stats_for

    url = panel
    reads: list[list[str]] = []
    original = columns.read

    def spy(conn, ds, symbols, *args, **kwargs):
        reads.append(list(symbols))
        return original(conn, ds, symbols, *args, **kwargs)

    monkeypatch.setattr(columns, "read", spy)
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
    assert main(["bars", "BBB", "CCC", "--adjustment", "total_return", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    expected = stored(url, ["BBB", "CCC"], "total_return")
    assert [b["close"] for b in body["bars"]] == pytest.approx(expected["close"].tolist(), rel=1e-9)  # JSON keeps 10 digits
    assert reads == [["BBB", "CCC"]]

    reads.clear()
    now = dt.datetime(2024, 6, 3, 22, tzinfo=dt.timezone.utc)
    stats = dict((row.symbol, s) for row, s in stats_for(SymbolRegistry(url).list(), BarStore(url), now=now))
    assert reads and {s for batch in reads for s in batch} == {"AAA", "BBB", "CCC"}
    for symbol in ("AAA", "BBB", "CCC"):
        rows = stored(url, [symbol])
        assert stats[symbol].record_count == len(rows)
        assert stats[symbol].last_date == rows.index.get_level_values("date")[-1].date().isoformat()


def test_a_read_sees_one_moment_while_writes_commit_beside_it(panel):
    """Within one snapshot, a write committed meanwhile (a correction that rebuilds a block, new days
    that seal a tail) is not seen half: the snapshot answers as before, the next read the new bars."""
    url = panel
    store = BarStore(url)
    before = stored(url, ["AAA", "BBB"])
    with columns.snapshot(store.engine) as conn:
        first = columns.read(conn, columns.OHLCV, ["AAA", "BBB"]).frame()
        revised = before.loc["AAA"].reset_index().tail(300).copy()
        revised["close"] *= 1.01
        store.upsert_bars("AAA", revised)
        new_days = bars(60, first="2030-01-01", seed=30)
        store.upsert_bars("BBB", new_days)
        again = columns.read(conn, columns.OHLCV, ["AAA", "BBB"]).frame()
    pd.testing.assert_frame_equal(first, before, check_exact=True)
    pd.testing.assert_frame_equal(again, before, check_exact=True)
    assert_reads_equal_rows(url, ["AAA", "BBB"])
    assert not read_bars(["AAA", "BBB"], url=url).equals(before)
