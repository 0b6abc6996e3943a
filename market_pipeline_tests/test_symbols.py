"""Normalising and validating what users type."""

import datetime as dt

import pytest

from market_pipeline.polygon.tickers import SymbolError, normalize_symbol, parse_start_date, polygon_ticker


@pytest.mark.parametrize(
    "raw, asset_class, expected",
    [("aapl", "stock", "AAPL"), (" brk.b ", "stock", "BRK.B"), ("SPY", "etf", "SPY"), ("btcusd", "crypto", "BTCUSD"),
     ("BTC-USD", "crypto", "BTCUSD"), ("X:BTCUSD", "crypto", "BTCUSD"), ("x:ethusd", "crypto", "ETHUSD"),
     ("eth/usdt", "crypto", "ETHUSDT")],
)
def test_normalize(raw, asset_class, expected):
    assert normalize_symbol(raw, asset_class) == expected


@pytest.mark.parametrize(
    "raw, asset_class",
    [("", "stock"), ("AAPL; DROP TABLE tracked_symbols", "stock"), ("AAPL'--", "stock"), ("A A", "stock"),
     ("X:BTCUSD", "stock"), ("TOOLONGTICKER", "stock"), ("BTC", "crypto"), ("BTC-XYZ", "crypto"),
     ("ÄPPLE", "stock"), ("AA\nPL", "stock"), ("1234", "etf")],
)
def test_rejects(raw, asset_class):
    with pytest.raises(SymbolError):
        normalize_symbol(raw, asset_class)


def test_unknown_asset_class():
    with pytest.raises(SymbolError, match="stock, etf, crypto"):
        normalize_symbol("AAPL", "bond")


def test_polygon_ticker_by_class():
    assert polygon_ticker("BTCUSD", "crypto") == "X:BTCUSD"
    assert polygon_ticker("BRK.B", "stock") == "BRK.B"


def test_start_dates():
    today = dt.date(2026, 1, 10)
    assert parse_start_date("2020-01-02", today=today) == dt.date(2020, 1, 2)
    assert parse_start_date(None, today=today) is None
    with pytest.raises(SymbolError, match="future"):
        parse_start_date("2026-01-11", today=today)
    with pytest.raises(SymbolError, match="YYYY-MM-DD"):
        parse_start_date("01/02/2020", today=today)
