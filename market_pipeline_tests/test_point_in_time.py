"""Point-in-time reads (warehouse.point_in_time, warehouse.revisions) on SQLite and PostgreSQL: a
history served by the sandbox in one version, then revised (late corrections of recent bars, a split
recorded late, a duplicate listing withdrawn, a dividend corrected, a quarantined bar served clean,
a symbol added), reads as of an instant between the two runs exactly as it read then, in every
adjustment, while the current read is the second run's; `revisions` lists the changes; bad instants
are refused. Every instant is injected (`clock_at`), none read from the wall clock."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import sqlalchemy as sa

from market_pipeline.cli.main import main
from market_pipeline.polygon.client import PolygonClient
from market_pipeline.refresh.corporate_actions import refresh_corporate_actions
from market_pipeline.refresh.ingest import refresh_symbol
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline.warehouse import SymbolRegistry
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.engine import open_engine
from market_pipeline.warehouse.reader import ReadError, read_bars
from market_pipeline.warehouse.store import BarStore, clock_at
from market_pipeline_tests.test_columnar_reads import VIEWS, stored

UTC = dt.timezone.utc
START = dt.date(2025, 1, 2)
FIRST_RUN = dt.datetime(2025, 6, 6, 23, 0)  # naive UTC: the instants the runs' writes are stamped with
SECOND_RUN = dt.datetime(2025, 6, 11, 23, 0)
BETWEEN = "2025-06-08T12:00:00Z"
AFTER = dt.datetime(2025, 6, 12, 9, 0)
FIRST_SYMBOLS = ["AAPL", "MSFT", "KO", "NVDA"]
ALL = [*FIRST_SYMBOLS, "SPY"]


def run(sandbox, url: str, symbols: list[str], at: dt.datetime) -> None:
    """One refresh as a run does it, stamped `at`: the corporate-action lists, then each symbol's bars."""
    sandbox.now = lambda: at.replace(tzinfo=UTC)
    registry = SymbolRegistry(url)
    with clock_at(at), PolygonClient(SANDBOX_API_KEY, sandbox.url, 0) as client:
        actions = refresh_corporate_actions(client, CorporateActionStore(url), symbols)
        assert actions.ok, actions.error
        for symbol in symbols:
            result = refresh_symbol(client, BarStore(url), registry, registry.get(symbol), run_id="r", today=at.date())
            assert result.status == "completed", result.error


def reads(url: str, symbols: list[str], **kw) -> dict[str, pd.DataFrame]:
    return {adjustment: read_bars(symbols, adjustment=adjustment, url=url, **kw) for adjustment in VIEWS}


@pytest.fixture
def revised(any_warehouse_url, sandbox):
    """Two runs over the sandbox: what read_bars returned after the first, the warehouse after the second."""
    url = any_warehouse_url
    SymbolRegistry(url).add(FIRST_SYMBOLS, "stock", START)
    sandbox.add_split("AAPL", "2025-03-03", 1, 2, recorded=False)  # happened; listed late
    sandbox.add_split("NVDA", "2025-04-01", 1, 3)
    duplicate = sandbox.duplicate_split("NVDA", "2025-04-01", listed_on="2025-04-08")
    sandbox.corrupt_bars("KO", ["2025-06-05"], "nan_in_close")  # set aside in quarantine, not stored
    run(sandbox, url, FIRST_SYMBOLS, FIRST_RUN)
    with clock_at(FIRST_RUN):
        first = reads(url, FIRST_SYMBOLS)

    sandbox.revise_bars("MSFT", ["2025-06-05", "2025-06-06"], 1.01)  # late corrections in the re-fetch window
    sandbox.record_split("AAPL", "2025-03-03")
    sandbox.withdraw_split("NVDA", "2025-04-08")
    dividend, ex_date, cash = next(d for d in sandbox.dividend_ids("KO") if d[1].startswith("2025-05"))
    sandbox.correct_dividend(dividend, round(cash * 1.5, 2))
    sandbox.restore_bars("KO", ["2025-06-05"])  # served clean now
    SymbolRegistry(url).add(["SPY"], "stock", START)
    run(sandbox, url, ALL, SECOND_RUN)
    return url, first, {"duplicate": duplicate, "dividend": dividend, "ex_date": ex_date}


def test_a_read_as_of_an_instant_between_two_runs_is_what_was_read_then(revised):
    url, first, _ = revised
    with clock_at(AFTER):
        then = reads(url, ALL, as_of=BETWEEN)
        now = reads(url, ALL)
        aware = read_bars(ALL, adjustment="total_return", url=url, as_of=dt.datetime(2025, 6, 8, 8, tzinfo=dt.timezone(dt.timedelta(hours=-4))))
        arrow = read_bars(ALL, adjustment="splits", url=url, as_of=BETWEEN, output="arrow")
        window = read_bars(["MSFT", "KO"], "2025-06-02", "2025-06-10", "total_return", url=url, as_of=BETWEEN)
    for adjustment in VIEWS:
        pd.testing.assert_frame_equal(then[adjustment], first[adjustment], check_exact=True)
        # today's read is the second run's: the rows and views as SQL holds them now
        pd.testing.assert_frame_equal(now[adjustment], stored(url, ALL, adjustment), check_exact=True)
        assert not now[adjustment].equals(first[adjustment])
    pd.testing.assert_frame_equal(aware, first["total_return"], check_exact=True)  # the same instant, -04:00
    assert arrow.to_pandas()["close"].tolist() == first["splits"]["close"].tolist()
    expected = first["total_return"]
    dates = expected.index.get_level_values("date")
    chosen = expected.index.get_level_values("symbol").isin(["MSFT", "KO"]) & (dates >= "2025-06-02") & (dates <= "2025-06-10")
    pd.testing.assert_frame_equal(window.reset_index(), expected[chosen].reset_index(), check_exact=True)
    # what the second run changed, seen from both sides
    assert "SPY" not in then["none"].index.get_level_values("symbol")  # not fetched yet then: no bars, no error
    assert ("KO", pd.Timestamp("2025-06-05")) not in then["none"].index and ("KO", pd.Timestamp("2025-06-05")) in now["none"].index
    assert then["none"].loc[("MSFT", pd.Timestamp("2025-06-06")), "close"] != now["none"].loc[("MSFT", pd.Timestamp("2025-06-06")), "close"]
    assert now["none"].loc[("MSFT", pd.Timestamp("2025-06-09"))].notna().all()  # a new session since
    aapl_before = ("AAPL", pd.Timestamp("2025-02-28"))
    assert then["splits"].loc[aapl_before, "close"] == then["none"].loc[aapl_before, "close"]  # split unknown then
    assert now["splits"].loc[aapl_before, "close"] == pytest.approx(now["none"].loc[aapl_before, "close"] / 2)


def test_factors_changed_without_the_ranges_they_replaced_are_rebuilt_as_they_were(revised):
    """Each factor change keeps the ranges it replaced, and a read as of before it adjusts with them; a
    change recorded without them (before the warehouse kept them) is rebuilt from the events and bars
    known then, to the same bits."""
    url, first, _ = revised
    with open_engine(url).begin() as conn:
        kept = dict(conn.execute(sa.text(
            "SELECT symbol, superseded FROM adjustment_factor_changes WHERE changed_at > :t"), {"t": FIRST_RUN}).all())
        assert {"AAPL", "KO"} <= set(kept) and all(v is not None for v in kept.values())
        assert len(kept["KO"]) > 0 and len(kept["AAPL"]) == 0  # KO had factors then (dividends), AAPL none (its split unknown)
        conn.execute(sa.text("UPDATE adjustment_factor_changes SET superseded = NULL"))
    with clock_at(AFTER):
        then = reads(url, ALL, as_of=BETWEEN)
    for adjustment in VIEWS:
        pd.testing.assert_frame_equal(then[adjustment], first[adjustment], check_exact=True)


def test_bars_stored_since_anywhere_in_a_history_are_left_out_of_a_read_as_of_before(any_warehouse_url, monkeypatch):
    """The sessions appended since an instant are left out by the read itself (one read of the panel),
    from the tail or from inside the column blocks; a history also extended back since, or one whose
    span since holds bars older than it, is read whole and its bars stored since dropped where they are."""
    from market_pipeline.warehouse import point_in_time
    from market_pipeline_tests.test_columnar_reads import bars

    url, store, t0, day = any_warehouse_url, BarStore(any_warehouse_url), dt.datetime(2025, 3, 3, 22), dt.timedelta(days=1)
    frames = {s: bars(300, seed=k) for k, s in enumerate(["AAA", "BBB", "CCC"])}
    ddd = bars(300, seed=9)
    with clock_at(t0):
        gap = frames["CCC"].drop(index=[280, 281]).iloc[:288]  # two sessions missing then
        store.upsert_many([("AAA", frames["AAA"].iloc[100:290]), ("BBB", frames["BBB"].iloc[:290]), ("CCC", gap), ("DDD", ddd.iloc[:200])])
        first = read_bars([*frames, "DDD"], url=url)
    with clock_at(t0 + day):
        store.upsert_many([(s, f.iloc[278:295]) for s, f in frames.items()])  # sessions again, five new, CCC's gap filled
        store.upsert_bars("AAA", frames["AAA"].iloc[:100])  # its older history, backfilled since
        store.upsert_bars("DDD", ddd.iloc[200:260])  # more new sessions than a tail holds: sealed into its blocks
    with open_engine(url).connect() as conn:
        sealed = conn.execute(sa.text("SELECT sealed_through FROM column_seals WHERE symbol = 'DDD' AND dataset = 'ohlcv_daily'")).scalar()
    assert str(sealed)[:10] > str(ddd["date"].iloc[200].date())
    reads_made = []
    original = point_in_time.columns.read
    monkeypatch.setattr(point_in_time.columns, "read", lambda *a, **k: reads_made.append(k.get("until")) or original(*a, **k))
    then = {}
    with clock_at(t0 + 2 * day):
        for names in (["BBB", "CCC"], list(frames)):
            then[len(names)] = read_bars(names, url=url, as_of=(t0 + day / 2).isoformat())
        now = read_bars(list(frames), url=url)
    # BBB alone is left out by the read; CCC's span since holds sessions stored before, AAA's is not its last
    assert [sorted(u) if u else u for u in reads_made] == [["BBB", "CCC"], None, ["AAA", "BBB", "CCC"], None, None]
    pd.testing.assert_frame_equal(then[3], first.loc[list(frames)], check_exact=True)
    pd.testing.assert_frame_equal(then[2], first.loc[["BBB", "CCC"]], check_exact=True)
    assert [len(now.loc[s]) for s in frames] == [295, 295, 295]
    revised = ddd.iloc[[259]].copy()
    revised["close"] *= 1.01
    with clock_at(t0 + 2 * day):  # a session stored since, revised since: nothing of it held then
        assert store.upsert_bars("DDD", revised).revised == (revised["date"].iloc[0].date(),)
    with clock_at(t0 + 3 * day):
        pd.testing.assert_frame_equal(read_bars(["BBB", "DDD"], url=url, as_of=(t0 + day / 2).isoformat()), first.loc[["BBB", "DDD"]], check_exact=True)
        assert len(read_bars(["DDD"], url=url)) == 260
    # the day before each one's first session since
    assert reads_made[-2] == {"BBB": frames["BBB"]["date"].iloc[290].date() - day, "DDD": ddd["date"].iloc[200].date() - day}


def test_revisions_lists_each_change_with_its_old_and_new_values(revised, monkeypatch, capsys):
    url, first, ids = revised
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
    with clock_at(AFTER):
        assert main(["revisions", "MSFT", "--json"]) == 0
        msft = json.loads(capsys.readouterr().out)
        assert main(["revisions", "NVDA"]) == 0
        nvda = capsys.readouterr().out
        assert main(["revisions", "KO", "--json", "--since", "2025-06-08"]) == 0
        ko = json.loads(capsys.readouterr().out)
        assert main(["revisions", "AAPL", "--json"]) == 0
        aapl = json.loads(capsys.readouterr().out)
        assert main(["revisions", "MSFT", "--since", "2025-06-12T00:00:00Z"]) == 0
        quiet = capsys.readouterr().out
    bars = {b["date"]: b for b in msft["bars"]}
    assert set(bars) == {"2025-06-05", "2025-06-06"}
    old_close = first["none"].loc[("MSFT", pd.Timestamp("2025-06-06")), "close"]
    assert bars["2025-06-06"]["old"]["close"] == old_close
    assert bars["2025-06-06"]["new"]["close"] == pytest.approx(old_close * 1.01, rel=1e-3)
    assert bars["2025-06-06"]["replaced_at"] == SECOND_RUN.isoformat()
    assert bars["2025-06-06"]["stored_at"] == FIRST_RUN.isoformat()
    assert msft["bars_first_stored"] > 100  # the whole history, then the new sessions
    assert ids["duplicate"] in nvda and "status duplicate -> withdrawn" in nvda
    changes = {(c["kind"], c["provider_id"]): c for c in ko["corporate_actions"]}
    change = changes[("dividend", ids["dividend"])]
    assert change["new"]["cash_amount"] == pytest.approx(change["old"]["cash_amount"] * 1.5, abs=0.01)
    assert ko["bars"] == [] and ko["bars_first_stored"] == 4  # the clean 2025-06-05 and three new sessions
    late = [c for c in aapl["corporate_actions"] if c["kind"] == "split"]
    assert len(late) == 1 and late[0]["old"] is None and late[0]["new"]["execution_date"] == "2025-03-03"
    assert late[0]["changed_at"] == SECOND_RUN.isoformat()
    assert "MSFT: 0 revised bar(s), 0 corporate-action change(s)" in quiet


def test_a_read_as_of_an_instant_it_cannot_answer_is_refused_naming_the_accepted_forms(revised, monkeypatch, capsys):
    url, _, _ = revised
    with open_engine(url).connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM ohlcv_revisions")).scalar()
    cases = {
        "2025-06-13T00:00:00Z": "in the future",
        "2024-12-31": "before the warehouse existed",
        "last tuesday": "is not an instant",
        "2025-13-01": "is not an instant",
    }
    with clock_at(AFTER):
        for value, reason in cases.items():
            with pytest.raises(ReadError, match=reason) as caught:
                read_bars(["MSFT"], url=url, as_of=value)
            assert "ISO 8601" in str(caught.value) and "timezone-aware datetime" in str(caught.value)
        with pytest.raises(ReadError, match="has no time zone"):
            read_bars(["MSFT"], url=url, as_of=dt.datetime(2025, 6, 8, 12))
        with pytest.raises(ReadError, match="a date, not an instant"):
            read_bars(["MSFT"], url=url, as_of=dt.date(2025, 6, 8))
        monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
        for value, reason in cases.items():
            assert main(["bars", "MSFT", "--as-of", value]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and reason in err and err.startswith("market-pipeline: error: --as-of ")
        assert main(["revisions", "MSFT", "--since", "whenever"]) == 2
        assert "ISO 8601" in capsys.readouterr().err
        assert main(["revisions", "NOPE"]) == 2
        assert "NOPE has no stored bars" in capsys.readouterr().err
        assert main(["bars", "MSFT", "--as-of", BETWEEN, "--start", "2025-06-05", "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
    assert printed["as_of"] == BETWEEN and [b["date"] for b in printed["bars"]] == ["2025-06-05", "2025-06-06"]
    with open_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ohlcv_revisions")).scalar() == before  # reads write nothing


def test_the_factors_rebuilt_from_the_events_known_then_equal_the_write_paths_bit_for_bit():
    """A factor change recorded without the ranges it replaced is rebuilt from the events and bars
    known then; each symbol's ranges equal, bit for bit, what `factor_ranges` (the write path) makes
    of the same splits, dividends and bars: splits and dividends on one date, dividends before the
    first bar or above the close, symbols with no bars, no event or only splits."""
    import numpy as np

    from market_pipeline.corporate_actions import Dividend, Split, factor_ranges
    from market_pipeline.warehouse import columns
    from market_pipeline.warehouse.point_in_time import _rebuilt

    rng = np.random.default_rng(5)
    ratios = {0.5: (1, 2), 2.0: (2, 1), 1 / 3: (1, 3), 0.1: (1, 10)}
    symbols = [f"S{k}" for k in range(40)]
    held_symbols, counts, days, closes = [], [], [], []
    split_rows, dividend_rows = [], []
    for k, symbol in enumerate(symbols):
        n = 0 if k % 13 == 5 else int(rng.integers(1, 400))  # a symbol with no bars held
        first = 18_000 + int(rng.integers(0, 50))
        span = np.sort(rng.choice(np.arange(first, first + 600), size=n, replace=False)).astype("int32")
        if k % 17 != 3:  # a symbol whose bars are not read (absent from `held`)
            held_symbols.append(symbol)
            counts.append(n)
            days.append(span)
            closes.append(rng.uniform(1, 200, n))
        if k % 7 == 2:
            continue  # no event at all
        for _ in range(int(rng.integers(0, 4))):
            split_rows.append((symbol, first + int(rng.integers(-20, 620)), float(rng.choice(list(ratios)))))
        if k % 5 != 1:  # some symbols with splits only
            for d in sorted(rng.integers(-30, 640, int(rng.integers(0, 12)))):
                dividend_rows.append((symbol, first + int(d), float(rng.choice([0.01, 0.37, 1.5, 250.0]))))
        if split_rows and dividend_rows and k % 3 == 0:  # a split and a dividend on one date
            dividend_rows.append((symbol, split_rows[-1][1], 0.2))

    def flat(rows):  # as _events_as_of gives them: by symbol, then date
        rows = sorted(rows, key=lambda r: (r[0], r[1]))
        return (np.array([r[0] for r in rows], dtype=object), np.array([r[1] for r in rows], dtype="int64").astype("datetime64[D]"),
                np.array([r[2] for r in rows], dtype="float64"))

    events = {"split": flat(split_rows), "dividend": flat(dividend_rows)}
    held = columns.Columns(
        columns.OHLCV, held_symbols, np.array(counts, dtype="int64"), np.concatenate(days).astype("int32"),
        {c: (np.concatenate(closes) if c == "close" else np.zeros(sum(counts))) for c in columns.OHLCV.columns if c not in ("volume", "transactions")}
        | {c: np.zeros(sum(counts), dtype="int64") for c in ("volume", "transactions")},
        {c: np.zeros(sum(counts), dtype=bool) for c in ("volume", "transactions")},
    )
    where = {s: k for k, s in enumerate(held_symbols)}
    rebuilt = _rebuilt(events, held, where, symbols)

    day = lambda d: dt.date(1970, 1, 1) + dt.timedelta(days=int(d))  # noqa: E731
    offsets = np.concatenate(([0], np.cumsum(counts)))
    for symbol in symbols:
        splits = [Split(symbol, f"s{i}", day(d), *ratios[f], None) for i, (s, d, f) in enumerate(sorted(split_rows, key=lambda r: (r[0], r[1]))) if s == symbol]
        dividends = [Dividend(symbol, f"d{i}", day(d), cash, "USD", "recurring") for i, (s, d, cash) in enumerate(sorted(dividend_rows, key=lambda r: (r[0], r[1]))) if s == symbol]
        k = where.get(symbol)
        part = slice(int(offsets[k]), int(offsets[k + 1])) if k is not None else slice(0, 0)
        bars = pd.DataFrame({"date": pd.to_datetime(held.days[part].astype("int64"), unit="D"), "close": held.values["close"][part]})
        expected = factor_ranges(splits, dividends, bars).frame
        if expected.empty:
            assert rebuilt[symbol] is None, symbol
            continue
        got = rebuilt[symbol]
        assert got is not None, symbol
        assert got[0].tolist() == expected["valid_to"].tolist(), symbol
        for mine, theirs in zip(got[1:], (expected["split_factor"], expected["total_return_factor"])):
            assert np.ascontiguousarray(mine).tobytes() == theirs.to_numpy(dtype="float64").tobytes(), symbol
    assert sum(r is not None for r in rebuilt.values()) > 20  # the cases above were met
