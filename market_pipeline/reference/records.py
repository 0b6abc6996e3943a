"""A ticker detail answer (`/v3/reference/tickers/{ticker}`) as a `ReferenceRecord`. Pure.

Tolerant by design: missing fields, wrong types and unknown security types give a record with a
status saying so (`incomplete`, `unknown_type`), never an exception. Statuses:

- `ok`: every identity field is there and the type is known;
- `incomplete`: the answer lacks a field the pipeline relies on (type for stocks, composite FIGI…);
- `unknown_type`: a security type this project does not map to stock or etf (reported, not guessed);
- `not_found`: Polygon answered 404 (it does not know the ticker);
- `invalid`: the answer is not a ticker detail at all;
- `error`: the request failed (set by the caller, with the reason);
- `mismatch` / `renamed`: set by `mismatch.classify` and the rename probe.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields, replace

# Polygon security types (reference/tickers/types) and the asset class each one is
STOCK_TYPES = frozenset({"CS", "ADRC", "ADRP", "ADRR", "ADRW", "PFD", "OS", "GDR", "NYRS", "SP", "UNIT"})
ETF_TYPES = frozenset({"ETF", "ETN", "ETV", "ETS", "FUND"})
TYPE_NAMES = {"CS": "common stock", "ETF": "an ETF", "ETN": "an ETN", "ETV": "an ETV", "ETS": "an ETS",
              "FUND": "a fund", "PFD": "a preferred stock", "ADRC": "an ADR", "WARRANT": "a warrant",
              "RIGHT": "a right", "UNIT": "a unit", "INDEX": "an index"}
STATUSES = ("ok", "incomplete", "unknown_type", "not_found", "invalid", "error", "mismatch", "renamed")


@dataclass(frozen=True)
class ReferenceRecord:
    """What Polygon says about one tracked symbol, as stored in `symbol_reference`."""

    symbol: str
    asset_class: str  # what the registry says
    status: str
    status_text: str = ""
    ticker: str | None = None  # Polygon's ticker (X:BTCUSD for crypto)
    name: str | None = None
    market: str | None = None
    type: str | None = None
    primary_exchange: str | None = None
    composite_figi: str | None = None
    share_class_figi: str | None = None
    list_date: dt.date | None = None
    active: bool | None = None
    delisted_on: dt.date | None = None
    renamed_to: str | None = None

    @property
    def polygon_class(self) -> str | None:
        """The asset class Polygon's answer implies (None when it cannot tell)."""
        if self.market == "crypto":
            return "crypto"
        if self.type in ETF_TYPES:
            return "etf"
        if self.type in STOCK_TYPES:
            return "stock"
        return None

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type or "", f"type {self.type}" if self.type else "of no type")

    def with_status(self, status: str, text: str) -> "ReferenceRecord":
        return replace(self, status=status, status_text=text)

    def as_dict(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, dt.date) else value
        return out


def _text(value) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _date(value) -> tuple[dt.date | None, bool]:
    """(date, ok): an ISO date or timestamp's date; (None, True) when absent, (None, False) when unreadable."""
    if value is None or value == "":
        return None, True
    if not isinstance(value, str):
        return None, False
    try:
        return dt.date.fromisoformat(value[:10]), True
    except ValueError:
        return None, False


def parse_ticker_details(body, symbol: str, asset_class: str) -> ReferenceRecord:
    """The record of one ticker detail body (`{"results": {...}, "status": "OK"}`); never raises."""
    result = body.get("results") if isinstance(body, dict) else None
    if not isinstance(result, dict):
        return ReferenceRecord(symbol, asset_class, "invalid", "Polygon's reference answer has no ticker in `results`")
    problems = []
    list_date, ok = _date(result.get("list_date"))
    if not ok:
        problems.append(f"unreadable list_date {result.get('list_date')!r}")
    delisted_on, ok = _date(result.get("delisted_utc"))
    if not ok:
        problems.append(f"unreadable delisted_utc {result.get('delisted_utc')!r}")
    active = result.get("active")
    if not isinstance(active, bool):
        problems.append("no active flag")
        active = None
    record = ReferenceRecord(
        symbol=symbol,
        asset_class=asset_class,
        status="ok",
        ticker=_text(result.get("ticker")),
        name=_text(result.get("name")),
        market=_text(result.get("market")),
        type=_text(result.get("type")),
        primary_exchange=_text(result.get("primary_exchange")),
        composite_figi=_text(result.get("composite_figi")),
        share_class_figi=_text(result.get("share_class_figi")),
        list_date=list_date,
        active=active,
        delisted_on=delisted_on,
    )
    if record.market is None:
        problems.append("no market")
    if asset_class != "crypto":
        if record.type is None:
            problems.append("no type")
        if record.composite_figi is None:
            problems.append("no composite FIGI")
    if record.type is not None and record.market != "crypto" and record.polygon_class is None:
        return record.with_status(
            "unknown_type", f"Polygon types {symbol} as {record.type!r}, which is neither a stock nor an ETF type"
        )
    if problems:
        return record.with_status("incomplete", f"Polygon's reference answer for {symbol} is incomplete: {', '.join(problems)}")
    return record


def not_found_record(symbol: str, asset_class: str) -> ReferenceRecord:
    return ReferenceRecord(symbol, asset_class, "not_found", f"Polygon does not know {symbol} (reference answered 404)")


def error_record(symbol: str, asset_class: str, reason: str) -> ReferenceRecord:
    return ReferenceRecord(symbol, asset_class, "error", f"reference data could not be fetched: {reason}"[:500])
