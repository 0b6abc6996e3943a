"""A deterministic synthetic market: daily bars for any ticker, pre-rendered as Polygon JSON.

Pure functions and immutable data; the HTTP server (`server.py`) only slices what is here.

- A ticker's history is a random walk seeded by the ticker's SHA-256, simulated once over a
  fixed grid of calendar days (1995-01-03 to 2049-12-31). A bar's values therefore depend only
  on (ticker, date), never on the range a client asks for.
- Stocks and ETFs (any ticker without the `X:` prefix) have a bar on every XNYS session;
  crypto (`X:BTCUSD`) on every UTC calendar day. History ends at the calendar's last session.
- Prices are fixed-point with 4 decimals, volumes with 3: each value printed in the JSON parses
  back to exactly the float `synthetic_bars` returns.
- `ticker_series` renders a ticker's whole history to JSON once (vectorised, LRU-cached), so a
  range response is a slice of one byte string.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import threading
import hashlib
import json
from typing import Iterable

import numpy as np
import pandas as pd

from market_pipeline import calendars
from market_pipeline.polygon import tickers as symbols

EPOCH = dt.date(1995, 1, 3)
GRID_END = dt.date(2049, 12, 31)
SYNTHETIC_SUFFIX = " (synthetic sandbox data)"
SERIES_CACHE_SIZE = 1024  # about 1 MB a ticker: at most ~1 GB

PRICE_SCALE = 10_000  # prices carry 4 decimals
VOLUME_SCALE = 1_000  # volumes carry 3 decimals
PRICE_KEYS = ("vw", "o", "c", "h", "l")
CORRUPTIONS = ("high_below_low", "negative_volume", "zero_price", "vw_outside_range")
# unusable on the wire (issue 15): non-finite or missing values, a `t` off the session boundary
WIRE_CORRUPTIONS = (
    "infinite_high", "negative_infinite_low", "infinite_volume", "nan_in_close", "missing_close", "utc_midnight_t",
)
REFERENCE_UPDATED = "2024-01-02T00:00:00Z"
CURRENCY_NAMES = {"USD": "United States dollar", "EUR": "Euro", "GBP": "British pound", "JPY": "Japanese yen"}
_FOLD_BOUND = float(np.log(20.0))  # the log price stays within a factor 20 of its start


def is_crypto_ticker(ticker: str) -> bool:
    """Polygon crypto tickers carry the `X:` prefix; everything else trades like a stock."""
    return ticker.startswith("X:")


def asset_class_of(ticker: str) -> str:
    """The calendars module's asset class for a Polygon ticker ("crypto" or "stock")."""
    return "crypto" if is_crypto_ticker(ticker) else "stock"


# --------------------------------------------------------------------------------------------
# Calendar grids


@dataclasses.dataclass(frozen=True)
class Grid:
    """The bar dates of one market, shared by all its tickers."""

    dates: np.ndarray  # datetime64[D], ascending
    positions: np.ndarray  # index of each date in the calendar-day grid starting at EPOCH
    t_range: np.ndarray  # int64 Unix ms, the range endpoint's `t` (00:00 local)
    t_grouped: np.ndarray  # int64 Unix ms, the grouped endpoint's `t`
    t_ascii: np.ndarray  # rendered `t` values (see `_ascii_int`)


def _grid_days() -> int:
    return (GRID_END - EPOCH).days + 1


def last_bar_date() -> dt.date:
    """The last date any series covers: the XNYS calendar's last session."""
    return min(calendars.xnys().last_session.date(), GRID_END)


@functools.lru_cache(maxsize=2)
def market_grid(crypto: bool) -> Grid:
    """Bar dates and their `t` conventions: XNYS sessions for stocks, every UTC day for crypto."""
    asset_class = "crypto" if crypto else "stock"
    index = calendars.expected_sessions(asset_class, EPOCH, last_bar_date())
    dates = index.values.astype("datetime64[D]")
    positions = (dates - np.datetime64(EPOCH, "D")).astype(np.int64)
    zone = calendars.UTC if crypto else calendars.NEW_YORK
    midnight = _unix_ms(index.tz_localize(zone))
    if crypto:
        grouped = midnight + 86_399_999  # 23:59:59.999 UTC
    else:
        grouped = _unix_ms((index + pd.Timedelta(hours=16)).tz_localize(zone))  # the close
    return Grid(dates, positions, midnight, grouped, _ascii_int(midnight))


def _unix_ms(index: pd.DatetimeIndex) -> np.ndarray:
    return index.as_unit("ms").asi8.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Simulation


def _seed(ticker: str) -> int:
    return int.from_bytes(hashlib.sha256(ticker.encode("utf-8")).digest()[:8], "little")


def _fold(x: np.ndarray, bound: float) -> np.ndarray:
    """Reflect a path into [-bound, bound] (a triangle wave): increments survive, drift cannot."""
    return bound - np.abs(np.mod(x + bound, 4 * bound) - 2 * bound)


def _simulate(ticker: str) -> dict[str, np.ndarray]:
    """Fixed-point integer columns (prices x1e4, volume x1e3) for every date of the ticker's grid."""
    crypto = is_crypto_ticker(ticker)
    rng = np.random.default_rng(_seed(ticker))
    if crypto:
        start, sigma = np.exp(rng.uniform(np.log(50), np.log(50_000))), rng.uniform(0.03, 0.05)
        base_volume, trade_size = np.exp(rng.uniform(np.log(1e3), np.log(1e5))), rng.uniform(0.1, 2.0)
    else:
        start, sigma = np.exp(rng.uniform(np.log(20), np.log(500))), rng.uniform(0.012, 0.03)
        base_volume, trade_size = np.exp(rng.uniform(np.log(2e5), np.log(5e7))), rng.uniform(50, 300)
    shocks = rng.standard_normal((5, _grid_days()))
    vwap_mix = rng.uniform(0.2, 0.8, _grid_days())

    pos = market_grid(crypto).positions
    log_path = np.concatenate(([0.0], _fold(np.cumsum(sigma * shocks[0]), _FOLD_BOUND)))
    close = start * np.exp(log_path[pos + 1])
    open_ = start * np.exp(log_path[pos] + 0.3 * sigma * shocks[1, pos])  # gap from the day before
    high = np.maximum(open_, close) * np.exp(0.6 * sigma * np.abs(shocks[2, pos]))
    low = np.minimum(open_, close) * np.exp(-0.6 * sigma * np.abs(shocks[3, pos]))
    volume = base_volume * np.exp(0.35 * shocks[4, pos])

    o = _fixed(open_, PRICE_SCALE, minimum=1)
    c = _fixed(close, PRICE_SCALE, minimum=1)
    h = np.maximum(_fixed(high, PRICE_SCALE), np.maximum(o, c))
    l = np.clip(_fixed(low, PRICE_SCALE), 1, np.minimum(o, c))
    vw = l + np.rint(vwap_mix[pos] * (h - l)).astype(np.int64)
    v = _fixed(volume, VOLUME_SCALE, minimum=VOLUME_SCALE)
    n = np.maximum(1, np.rint(v / VOLUME_SCALE / trade_size)).astype(np.int64)
    return {"v": v, "vw": vw, "o": o, "c": c, "h": h, "l": l, "n": n}


def _fixed(values: np.ndarray, scale: int, minimum: int = 0) -> np.ndarray:
    return np.maximum(np.rint(values * scale).astype(np.int64), minimum)


def synthetic_bars(ticker: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """The ticker's synthetic daily bars dated in [start, end] (inclusive), as the range endpoint serves them.

    Columns: date (datetime64 at midnight), t (int64 Unix ms, 00:00 New York for stocks and
    00:00 UTC for crypto), o, h, l, c, v, vw (float) and n (int). Pure: no "today" cut-off and
    no server knobs; dates outside the series' span (1995-01-03 to the calendar's end) are absent.
    """
    grid = market_grid(is_crypto_ticker(ticker))
    lo = np.searchsorted(grid.dates, np.datetime64(start, "D"), side="left")
    hi = np.searchsorted(grid.dates, np.datetime64(end, "D"), side="right")
    columns = _simulate(ticker)
    frame = pd.DataFrame({"date": grid.dates[lo:hi].astype("datetime64[ns]"), "t": grid.t_range[lo:hi]})
    for key in ("o", "h", "l", "c", "v", "vw"):
        frame[key] = columns[key][lo:hi] / (VOLUME_SCALE if key == "v" else PRICE_SCALE)
    frame["n"] = columns["n"][lo:hi]
    return frame


# --------------------------------------------------------------------------------------------
# Rendering: fixed-point integers to JSON text without a Python loop over bars


def _table(strings: Iterable[str]) -> np.ndarray:
    """Strings of at most 4 ASCII characters packed into uint32, NUL-padded on the right."""
    return np.frombuffer(b"".join(s.encode("ascii").ljust(4, b"\0") for s in strings), dtype="<u4")


_CHUNK_FULL = _table(f"{i:04d}" for i in range(10_000))  # inner chunk: zero-padded
_CHUNK_LEAD = _table(str(i) if i else "" for i in range(10_000))  # before the first digit
_CHUNK_LAST = _table(str(i) for i in range(10_000))  # the units chunk: "0" stays
_FRACTIONS = {
    d: _table(f"{i:0{d}d}".rstrip("0") or "0" for i in range(10**d)) for d in (3, 4)
}  # trailing zeros dropped, at least one digit kept


def _ascii_int(values: np.ndarray) -> np.ndarray:
    """Non-negative ints as (n, width) ASCII bytes, NUL where leading zeros were."""
    chunks = max(1, -(-len(str(int(values.max(initial=0)))) // 4))
    started = np.zeros(len(values), dtype=bool)
    columns = []
    for k in range(chunks - 1, -1, -1):
        chunk = values // 10 ** (4 * k) % 10_000
        first_choice = _CHUNK_LAST if k == 0 else _CHUNK_LEAD
        columns.append(np.where(started, _CHUNK_FULL[chunk], first_choice[chunk]))
        started |= chunk != 0
    return np.column_stack(columns).view(np.uint8)


def _ascii_fixed(values: np.ndarray, decimals: int) -> list[np.ndarray]:
    """Non-negative fixed-point ints (value x 10**decimals) as ASCII pieces: whole part, '.', fraction."""
    scale = 10**decimals
    whole = values // scale
    fraction = _FRACTIONS[decimals][values - whole * scale].view(np.uint8).reshape(len(values), 4)
    return [_ascii_int(whole), _literal(".", len(values)), fraction]


def _literal(text: str, rows: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode("ascii"), dtype=np.uint8), (rows, len(text)))


def _render(columns: dict[str, np.ndarray], t_ascii: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Every bar as `{"v":…,"n":…},` in one byte string, and the offset where each bar starts."""
    rows = len(columns["v"])
    pieces = [_literal('{"v":', rows), *_ascii_fixed(columns["v"], 3)]
    for key in PRICE_KEYS:
        pieces += [_literal(f',"{key}":', rows), *_ascii_fixed(columns[key], 4)]
    pieces += [_literal(',"t":', rows), t_ascii, _literal(',"n":', rows), _ascii_int(columns["n"])]
    pieces.append(_literal("},", rows))
    matrix = np.concatenate(pieces, axis=1)
    data = matrix.tobytes().translate(None, b"\0")
    offsets = np.concatenate(([0], np.cumsum(np.count_nonzero(matrix, axis=1)))).astype(np.int32)
    return data, offsets


@dataclasses.dataclass(frozen=True)
class Series:
    """A ticker's whole history rendered once: bar i is `data[offsets[i]:offsets[i+1]-1]` (ASCII JSON)."""

    ticker: str
    crypto: bool
    grid: Grid
    data: bytes
    offsets: np.ndarray

    def fragment(self, i: int) -> bytes:
        """The JSON object of bar i."""
        return self.data[self.offsets[i] : self.offsets[i + 1] - 1]

    def joined(self, lo: int, hi: int) -> memoryview:
        """Bars lo..hi-1 as comma-separated JSON objects: a view into `data`, nothing copied."""
        if hi <= lo:
            return memoryview(b"")
        return memoryview(self.data)[self.offsets[lo] : self.offsets[hi] - 1]


@functools.lru_cache(maxsize=SERIES_CACHE_SIZE)
def ticker_series(ticker: str) -> Series:
    """The rendered series of a ticker (about 1 MB each; the cache keeps the most recent 2,048)."""
    crypto = is_crypto_ticker(ticker)
    grid = market_grid(crypto)
    data, offsets = _render(_simulate(ticker), grid.t_ascii)
    return Series(ticker, crypto, grid, data, offsets)


BLOCK_SESSIONS = 64  # bars rendered together for the grouped endpoint (a few KB a ticker)
_blocks_lock = threading.Lock()


@functools.lru_cache(maxsize=50_000)
def _block(ticker: str, block: int) -> tuple[bytes, ...]:
    """Bars block*BLOCK_SESSIONS .. of a ticker, rendered alone (a bar renders the same whatever its
    neighbours): the simulation runs in full, only these bars are formatted."""
    columns = _simulate(ticker)
    first = block * BLOCK_SESSIONS
    last = min(len(columns["v"]), first + BLOCK_SESSIONS)
    if first >= last:
        return ()
    grid = market_grid(is_crypto_ticker(ticker))
    data, offsets = _render({k: v[first:last] for k, v in columns.items()}, grid.t_ascii[first:last])
    return tuple(data[offsets[j] : offsets[j + 1] - 1] for j in range(last - first))


def bar_fragment(ticker: str, i: int) -> bytes | None:
    """Bar i of a ticker's series (None past its end), for the grouped-daily endpoint: its block of
    bars is kept small and cached apart from `ticker_series` (which keeps only SERIES_CACHE_SIZE whole
    histories), so grouped requests over a universe of 10,000 tickers render each ticker once, not once
    per request, and concurrent requests do not render the same ticker twice."""
    with _blocks_lock:
        fragments = _block(ticker, i // BLOCK_SESSIONS)
    j = i % BLOCK_SESSIONS
    return fragments[j] if j < len(fragments) else None


# --------------------------------------------------------------------------------------------
# Edited bars (drops, corruptions, revisions are applied by the server when serving)


def edit_bar(fragment: bytes, factor: float | None = None, corruption: str | None = None) -> bytes:
    """A bar's JSON after a revision (prices x factor) and then a corruption (still valid JSON)."""
    bar = json.loads(fragment)
    if factor is not None:
        for key in PRICE_KEYS:
            bar[key] = round(bar[key] * factor, 4)
    if corruption == "high_below_low":
        bar["h"] = bar["l"] * 0.9
    elif corruption == "negative_volume":
        bar["v"] = -100.0
    elif corruption == "zero_price":
        bar["o"] = bar["l"] = 0.0
    elif corruption == "vw_outside_range":
        bar["vw"] = bar["h"] * 1.5
    elif corruption == "infinite_high":
        bar["h"] = float("inf")  # json writes Infinity, as a broken server would
    elif corruption == "negative_infinite_low":
        bar["l"] = float("-inf")
    elif corruption == "infinite_volume":
        bar["v"] = float("inf")
    elif corruption == "nan_in_close":
        bar["c"] = float("nan")
    elif corruption == "missing_close":
        del bar["c"]
    elif corruption == "utc_midnight_t":  # 00:00 UTC of the bar's date (a stock's bar must be 00:00 New York)
        day = dt.datetime.fromtimestamp(bar["t"] / 1000, calendars.NEW_YORK).date()
        bar["t"] = calendars.ms_at_local_midnight(day, "crypto")
    elif corruption is not None:
        raise ValueError(f"unknown corruption {corruption!r}: use one of {', '.join(CORRUPTIONS + WIRE_CORRUPTIONS)}")
    return json.dumps(bar, separators=(",", ":")).encode()


def grouped_row(ticker: str, fragment: bytes, t_range: int, t_grouped: int) -> bytes:
    """A grouped-daily row from a range bar: `T` first, same values, the grouped `t`."""
    body = fragment[1:].replace(b'"t":%d,' % t_range, b'"t":%d,' % t_grouped, 1)
    return b'{"T":' + json.dumps(ticker).encode() + b"," + body


# --------------------------------------------------------------------------------------------
# Reference data


@dataclasses.dataclass(frozen=True)
class TickerInfo:
    """One row of the reference universe."""

    ticker: str
    name: str
    market: str  # "stocks" or "crypto"
    type: str | None = None  # "CS" or "ETF" for stocks
    primary_exchange: str | None = None

    def reference_row(self) -> dict:
        """The `/v3/reference/tickers` row, with the real field names and order."""
        if self.market == "crypto":
            return self._crypto_row()
        return {
            "ticker": self.ticker,
            "name": self.name + SYNTHETIC_SUFFIX,
            "market": "stocks",
            "locale": "us",
            "primary_exchange": self.primary_exchange,
            "type": self.type,
            "active": True,
            "currency_name": "usd",
            "last_updated_utc": REFERENCE_UPDATED,
        }

    def detail_row(self) -> dict:
        """The `/v3/reference/tickers/{ticker}` result: the list row without `last_updated_utc`."""
        row = self.reference_row()
        del row["last_updated_utc"]
        return row

    def _crypto_row(self) -> dict:
        pair = symbols.symbol_from_polygon_ticker(self.ticker)
        quote = next((q for q in symbols.CRYPTO_QUOTES if pair.endswith(q)), pair[-3:])
        return {
            "ticker": self.ticker,
            "name": self.name + SYNTHETIC_SUFFIX,
            "market": "crypto",
            "locale": "global",
            "active": True,
            "currency_symbol": quote,
            "currency_name": CURRENCY_NAMES.get(quote, quote),
            "base_currency_symbol": pair[: -len(quote)],
            "base_currency_name": pair[: -len(quote)],
            "last_updated_utc": REFERENCE_UPDATED,
        }


def _stock(ticker: str, name: str, exchange: str, type_: str = "CS") -> TickerInfo:
    return TickerInfo(ticker, name, "stocks", type_, exchange)


DEFAULT_UNIVERSE: tuple[TickerInfo, ...] = (
    _stock("AAPL", "Apple Inc.", "XNAS"),
    _stock("MSFT", "Microsoft Corp", "XNAS"),
    _stock("GOOGL", "Alphabet Inc. Class A", "XNAS"),
    _stock("AMZN", "Amazon.com Inc.", "XNAS"),
    _stock("NVDA", "Nvidia Corp", "XNAS"),
    _stock("META", "Meta Platforms Inc.", "XNAS"),
    _stock("TSLA", "Tesla Inc.", "XNAS"),
    _stock("NFLX", "Netflix Inc.", "XNAS"),
    _stock("INTC", "Intel Corp", "XNAS"),
    _stock("PEP", "PepsiCo Inc.", "XNAS"),
    _stock("BRK.B", "Berkshire Hathaway Inc. Class B", "XNYS"),
    _stock("JPM", "JPMorgan Chase & Co.", "XNYS"),
    _stock("V", "Visa Inc.", "XNYS"),
    _stock("JNJ", "Johnson & Johnson", "XNYS"),
    _stock("PG", "Procter & Gamble Co.", "XNYS"),
    _stock("XOM", "Exxon Mobil Corp", "XNYS"),
    _stock("UNH", "UnitedHealth Group Inc.", "XNYS"),
    _stock("HD", "Home Depot Inc.", "XNYS"),
    _stock("KO", "Coca-Cola Co.", "XNYS"),
    _stock("DIS", "Walt Disney Co.", "XNYS"),
    _stock("SPY", "SPDR S&P 500 ETF Trust", "ARCX", "ETF"),
    _stock("QQQ", "Invesco QQQ Trust, Series 1", "XNAS", "ETF"),
    _stock("IWM", "iShares Russell 2000 ETF", "ARCX", "ETF"),
    TickerInfo("X:BTCUSD", "Bitcoin - United States dollar", "crypto"),
    TickerInfo("X:ETHUSD", "Ethereum - United States dollar", "crypto"),
    TickerInfo("X:SOLUSD", "Solana - United States dollar", "crypto"),
)
