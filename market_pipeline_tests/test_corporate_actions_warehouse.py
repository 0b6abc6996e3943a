"""Corporate actions in the warehouse (SQLite and PostgreSQL): tables, factors, views, read_bars, upgrade."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.corporate_actions import parse_dividend, parse_split
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.engine import current_revision, dispose_engine, get_engine, normalize_url, upgrade
from market_pipeline.warehouse.reader import ReadError, read_bars

D = dt.date.fromisoformat


def traded_bars(start: str, end: str, splits: dict[str, float], price: float = 100.0) -> pd.DataFrame:
    """Bars whose today's-basis close is `price` (+ a small ramp), shown as traded."""
    dates = pd.bdate_range(start, end)
    factor = np.ones(len(dates))
    for day, price_factor in splits.items():
        factor[dates < pd.Timestamp(day)] /= price_factor
    close = (price + np.arange(len(dates)) * 0.01) * factor
    return pd.DataFrame(
        {
            "date": dates, "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
            "volume": 1000.0 / factor, "vwap": close, "transactions": pd.array([7] * len(dates), dtype="Int64"),
        }
    )[list(BAR_COLUMNS)]


def split(symbol, day, split_from, split_to, provider_id):
    return parse_split({"id": provider_id, "ticker": symbol, "execution_date": day,
                        "split_from": split_from, "split_to": split_to})


def dividend(symbol, day, cash, provider_id):
    return parse_dividend({"id": provider_id, "ticker": symbol, "ex_dividend_date": day, "cash_amount": cash,
                           "currency": "USD", "distribution_type": "recurring"})


def view(url: str, name: str, symbol: str) -> pd.DataFrame:
    with get_engine(url).connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT date, open, high, low, close, volume, vwap, transactions FROM {name} "
                    "WHERE symbol = :s ORDER BY date"), {"s": symbol}
        ).all()
    frame = pd.DataFrame(rows, columns=["date", "open", "high", "low", "close", "volume", "vwap", "transactions"])
    frame["date"] = pd.to_datetime(frame["date"].astype(str))
    return frame


@pytest.fixture
def loaded(any_warehouse_url):
    """XYZ: a 4-for-1 on 2024-03-11 and a 1-for-2 reverse on 2024-05-06, a dividend of 1.00 ex
    2024-04-15; QQQ (no events)."""
    SymbolRegistry(any_warehouse_url).add(["XYZ"], "stock")
    SymbolRegistry(any_warehouse_url).add(["QQQ"], "etf")
    store = BarStore(any_warehouse_url)
    store.upsert_bars("XYZ", traded_bars("2024-01-02", "2024-06-28", {"2024-03-11": 0.25, "2024-05-06": 2.0}))
    store.upsert_bars("QQQ", traded_bars("2024-01-02", "2024-06-28", {}))
    actions = CorporateActionStore(any_warehouse_url)
    outcome = actions.record(
        [split("XYZ", "2024-03-11", 1, 4, "S1"), split("XYZ", "2024-05-06", 2, 1, "S2"),
         split("ZZZZ", "2024-05-06", 1, 2, "U1")],  # not tracked: ignored
        [dividend("XYZ", "2024-04-15", 1.0, "D1")],
        complete_symbols=["XYZ", "QQQ"], read_symbols=["XYZ", "QQQ"],
    )
    return any_warehouse_url, outcome


def test_views_equal_the_factors_by_hand_on_both_engines(loaded):
    url, outcome = loaded
    assert outcome.ignored_untracked == 1 and outcome.recomputed == ["XYZ"]
    assert sorted(outcome.metadata()["new"]) == ["XYZ dividend D1", "XYZ split S1", "XYZ split S2"]
    adjusted = view(url, "ohlcv_daily_adjusted", "XYZ")
    # today's basis: every close is 100 + ramp, whatever the splits
    ramp = 100 + np.arange(len(adjusted)) * 0.01
    assert np.allclose(adjusted["close"], ramp) and np.allclose(adjusted["volume"], 1000.0)
    assert adjusted["transactions"].tolist() == [7] * len(adjusted)
    raw = view(url, "ohlcv_daily", "XYZ")
    before = raw["date"] < "2024-03-11"
    assert np.allclose(raw.loc[before, "close"] / adjusted.loc[before, "close"], 4 * 0.5)  # traded at 2x today's
    # total return: before the ex-date also x (1 - 1.00 / C), C the as-traded close on 2024-04-12
    c = raw.loc[raw["date"] == "2024-04-12", "close"].item()
    total = view(url, "ohlcv_daily_total_return", "XYZ")
    ratio = total["close"] / adjusted["close"]
    assert np.allclose(ratio[total["date"] < "2024-04-15"], 1 - 1.0 / c)
    assert np.allclose(ratio[total["date"] >= "2024-04-15"], 1.0)
    assert np.allclose(total["volume"], adjusted["volume"])
    # a symbol without events reads the same in every view
    pd.testing.assert_frame_equal(view(url, "ohlcv_daily_adjusted", "QQQ"), view(url, "ohlcv_daily", "QQQ"))
    # read_bars gives the views' numbers
    for adjustment, name in (("splits", "ohlcv_daily_adjusted"), ("total_return", "ohlcv_daily_total_return")):
        frame = read_bars(["XYZ", "QQQ"], adjustment=adjustment, url=url)
        expected = view(url, name, "XYZ")
        assert np.allclose(frame.loc["XYZ"]["close"].to_numpy(), expected["close"].to_numpy())
        assert np.allclose(frame.loc["XYZ"]["volume"].to_numpy(), expected["volume"].to_numpy())
    window = read_bars("xyz", start="2024-03-01", end="2024-03-29", url=url)
    assert window.index.names == ["symbol", "date"]
    assert window.index.get_level_values("date").min() == pd.Timestamp("2024-03-01")
    with pytest.raises(ReadError, match="unknown adjustment"):
        read_bars("XYZ", adjustment="dividends", url=url)


def test_late_split_and_withdrawal_change_the_views_without_touching_bars(loaded):
    url, _ = loaded
    actions = CorporateActionStore(url)
    fetched_before = view(url, "ohlcv_daily", "XYZ")
    # the provider withdraws the reverse split: absent from a complete re-read
    outcome = actions.record(
        [split("XYZ", "2024-03-11", 1, 4, "S1")], [dividend("XYZ", "2024-04-15", 1.0, "D1")],
        complete_symbols=["XYZ"],
    )
    assert outcome.metadata()["withdrawn"] == ["XYZ split S2"]
    statuses = {s.provider_id: s.status for s in actions.splits("XYZ")}
    assert statuses == {"S1": "active", "S2": "withdrawn"}
    adjusted = view(url, "ohlcv_daily_adjusted", "XYZ")
    march = adjusted["date"] == "2024-03-01"
    assert np.isclose(adjusted.loc[march, "close"].item(), view(url, "ohlcv_daily", "XYZ").loc[march, "close"].item() / 4)
    # a read of one window (not complete) withdraws nothing
    assert not actions.record([], [], complete_symbols=[]).metadata()["withdrawn"]
    pd.testing.assert_frame_equal(view(url, "ohlcv_daily", "XYZ"), fetched_before)


def test_duplicate_listing_is_applied_once_and_bad_rows_are_flagged(any_warehouse_url):
    SymbolRegistry(any_warehouse_url).add(["SHOP"], "stock")
    BarStore(any_warehouse_url).upsert_bars("SHOP", traded_bars("2022-06-01", "2022-07-29", {"2022-06-29": 0.1}))
    actions = CorporateActionStore(any_warehouse_url)
    bad = parse_split({"id": "BAD", "ticker": "SHOP", "execution_date": "2022-07-05", "split_from": 0, "split_to": 3})
    actions.record(
        [split("SHOP", "2022-06-22", 1, 10, "A"), split("SHOP", "2022-06-29", 1, 10, "B"), bad], [],
        complete_symbols=["SHOP"],
    )
    stored = {s.provider_id: s for s in actions.splits("SHOP")}
    assert {k: s.status for k, s in stored.items()} == {"A": "duplicate", "B": "active", "BAD": "invalid"}
    assert "split_from must be positive" in stored["BAD"].reason
    ranges = actions.factor_ranges("SHOP")
    assert ranges["split_factor"].tolist() == [pytest.approx(0.1)]  # 10, not 100
    adjusted = view(any_warehouse_url, "ohlcv_daily_adjusted", "SHOP")
    assert np.allclose(adjusted["close"], 100 + np.arange(len(adjusted)) * 0.01)


def test_dividend_waits_for_its_close_and_failure_keeps_the_views(any_warehouse_url):
    SymbolRegistry(any_warehouse_url).add(["KO"], "stock")
    actions = CorporateActionStore(any_warehouse_url)
    actions.record([], [dividend("KO", "2024-03-14", 0.5, "D")], complete_symbols=["KO"], read_symbols=["KO"])
    assert actions.dividends("KO")[0].reason.startswith("not applied: no stored close")
    BarStore(any_warehouse_url).upsert_bars("KO", traded_bars("2024-03-01", "2024-03-29", {}, price=50.0))
    actions.recompute(["KO"])
    assert actions.dividends("KO")[0].reason is None
    assert actions.factor_ranges("KO")["total_return_factor"].tolist() == [pytest.approx(1 - 0.5 / 50.08)]
    actions.mark_failed(["KO"], "dividends KO: HTTP 503 (gave up after 6 attempts)")
    row = SymbolRegistry(any_warehouse_url).get("KO")
    assert (row.corporate_actions_status, row.corporate_actions_error) == ("failed", "dividends KO: HTTP 503 (gave up after 6 attempts)")
    assert actions.factor_ranges("KO")["total_return_factor"].tolist() == [pytest.approx(1 - 0.5 / 50.08)]


def test_upgrade_from_0001_marks_adjusted_bars(any_warehouse_url):
    """A warehouse written by the previous version (revision 0001, bars fetched adjusted)."""
    url = normalize_url(any_warehouse_url)
    engine = sa.create_engine(url)
    upgrade(engine, "0001")
    now = dt.datetime(2026, 11, 1)
    with engine.begin() as conn:
        for symbol, asset_class in (("AAPL", "stock"), ("SPY", "etf"), ("BTCUSD", "crypto"), ("NEW", "stock")):
            conn.execute(sa.text(
                "INSERT INTO tracked_symbols (symbol, asset_class, active, backfill_status, created_at, updated_at) "
                "VALUES (:s, :a, :t, 'completed', :n, :n)"), {"s": symbol, "a": asset_class, "t": True, "n": now})
        for symbol in ("AAPL", "SPY", "BTCUSD"):
            conn.execute(sa.text(
                "INSERT INTO ohlcv_daily (symbol, date, open, high, low, close, volume, fetched_at) "
                "VALUES (:s, :d, 1, 1, 1, 1, 1, :n)"), {"s": symbol, "d": dt.date(2026, 10, 30), "n": now})
    assert current_revision(engine) == "0001"
    engine.dispose()
    dispose_engine(url)
    get_engine(url)  # first use upgrades to head
    basis = {r.symbol: r.bars_basis for r in SymbolRegistry(url).list()}
    assert basis == {"AAPL": "adjusted", "SPY": "adjusted", "BTCUSD": "as_traded", "NEW": "as_traded"}
    with get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ohlcv_daily_adjusted")).scalar() == 3


def test_bars_command_prints_and_exports(loaded, monkeypatch, capsys, tmp_path):
    import json

    from market_pipeline.cli.main import main

    url, _ = loaded
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
    assert main(["bars", "XYZ", "--start", "2024-03-07", "--end", "2024-03-12", "--adjustment", "splits", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["adjustment"] == "splits" and [b["date"] for b in body["bars"]] == [
        "2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12"]
    expected = read_bars("XYZ", "2024-03-07", "2024-03-12", "splits", url=url)["close"].tolist()
    assert [b["close"] for b in body["bars"]] == pytest.approx(expected)
    target = tmp_path / "bars.csv"
    assert main(["bars", "xyz", "qqq", "--adjustment", "total_return", "--csv", str(target)]) == 0
    exported = pd.read_csv(target)
    assert list(exported.columns[:3]) == ["symbol", "date", "open"] and set(exported["symbol"]) == {"XYZ", "QQQ"}
    assert main(["bars", "XYZ", "--end", "2024-03-08"]) == 0
    assert "adjustment: none" in capsys.readouterr().out
    assert main(["bars", "NOPE"]) == 2
    assert "no stored bars for NOPE" in capsys.readouterr().err
    assert main(["bars", "XYZ", "--start", "March"]) == 2
    assert main(["bars", "XYZ", "--adjustment", "dividends"]) == 2
