"""Symbol forms: normalising and validating what a user types, and the ticker Polygon expects.

Pure functions. Every error is a `SymbolError` whose message says what was wrong and what to do.
"""

from __future__ import annotations

import datetime as dt
import re

ASSET_CLASSES = ("stock", "etf", "crypto")


class SymbolError(ValueError):
    """Bad user input about a symbol, an asset class or a date. The message is user-facing."""


# Stocks and ETFs: 1-5 letters, an optional share class after a dot (BRK.B, BF.B), at most 10 chars.
_EQUITY_RE = re.compile(r"^[A-Z]{1,6}(\.[A-Z]{1,3})?$")
# Crypto: a base of 2-10 alphanumerics and a known quote currency.
CRYPTO_QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "JPY", "BTC", "ETH", "AUD", "CAD")
_CRYPTO_RE = re.compile(r"^[A-Z0-9]{2,10}$")


def validate_asset_class(asset_class: str) -> str:
    value = (asset_class or "").strip().lower()
    if value not in ASSET_CLASSES:
        raise SymbolError(
            f"unknown asset class {asset_class!r}: use one of {', '.join(ASSET_CLASSES)}"
        )
    return value


def _split_crypto(symbol: str) -> tuple[str, str] | None:
    for quote in CRYPTO_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            base = symbol[: -len(quote)]
            if 2 <= len(base) <= 10 and base.isalnum():
                return base, quote
    return None


def normalize_symbol(raw: str, asset_class: str) -> str:
    """The stored form of a symbol: upper case; crypto `BTC-USD`, `X:BTCUSD`, `btcusd` -> `BTCUSD`."""
    asset_class = validate_asset_class(asset_class)
    if not isinstance(raw, str) or not raw.strip():
        raise SymbolError("empty symbol: give a ticker such as AAPL, BRK.B or BTCUSD")
    text = raw.strip()
    if len(text) > 24 or not text.isascii() or not text.isprintable():
        raise SymbolError(
            f"invalid {asset_class} symbol {raw!r}: a ticker is a few ASCII letters (AAPL, BRK.B, BTCUSD)"
        )
    symbol = text.upper()
    if asset_class == "crypto":
        if symbol.startswith("X:"):
            symbol = symbol[2:]
        if symbol.count("-") == 1 or symbol.count("/") == 1:
            symbol = symbol.replace("-", "").replace("/", "")
        if not _CRYPTO_RE.match(symbol) or _split_crypto(symbol) is None:
            raise SymbolError(
                f"invalid crypto symbol {raw!r}: give a base and a quote currency such as BTCUSD, "
                f"BTC-USD or X:BTCUSD (quotes: {', '.join(CRYPTO_QUOTES)})"
            )
        return symbol
    if symbol.startswith(("X:", "C:", "I:")):
        raise SymbolError(
            f"invalid {asset_class} symbol {raw!r}: prefixed tickers (X:, C:, I:) are not stocks; "
            "use --asset-class crypto for X: pairs (forex and indices are not supported)"
        )
    if not _EQUITY_RE.match(symbol):
        raise SymbolError(
            f"invalid {asset_class} symbol {raw!r}: use letters with an optional share class, "
            "such as AAPL or BRK.B"
        )
    return symbol


def polygon_ticker(symbol: str, asset_class: str) -> str:
    """The ticker the aggregates, grouped and reference endpoints expect."""
    return f"X:{symbol}" if asset_class == "crypto" else symbol


def symbol_from_polygon_ticker(ticker: str) -> str:
    return ticker[2:] if ticker.startswith("X:") else ticker


def parse_start_date(value: str | dt.date | None, *, today: dt.date | None = None) -> dt.date | None:
    """A start date from `YYYY-MM-DD`; refuses unparsable and future dates."""
    if value is None or value == "":
        return None
    today = today or dt.date.today()
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        day = value
    else:
        try:
            day = dt.date.fromisoformat(str(value).strip())
        except ValueError:
            raise SymbolError(
                f"invalid start date {value!r}: use YYYY-MM-DD, for example 2020-01-02"
            ) from None
    if day > today:
        raise SymbolError(f"start date {day.isoformat()} is in the future: give a date up to {today}")
    if day.year < 1970:
        raise SymbolError(f"start date {day.isoformat()} is before 1970: Polygon has no such history")
    return day
