"""Polygon's reference data for the symbol lifecycle: ticker details and ticker-change events.

Uses the client's `_get_json` transport (pacing, retries, the key only in the header). Every
function here turns Polygon's answers into `market_pipeline.reference` records: a 404 or a failed
request gives a record with a clear status, never an exception (a missing API key still raises).
Many symbols at once (a first run, the weekly refresh): `market_pipeline.polygon.reference_list`.
"""

from __future__ import annotations

import datetime as dt

from market_pipeline.polygon.client import MissingApiKey, PolygonClient, PolygonError
from market_pipeline.reference.events import TickerEvents, parse_ticker_events, rename_detected
from market_pipeline.reference.mismatch import classify, compare_identity
from market_pipeline.reference.records import ReferenceRecord, error_record, not_found_record, parse_ticker_details
from market_pipeline.polygon.tickers import polygon_ticker


def ticker_details(client: PolygonClient, symbol: str, asset_class: str, date: dt.date | None = None) -> ReferenceRecord:
    """`/v3/reference/tickers/{ticker}` (as of `date` when given) as a record; 404 -> `not_found`.
    Raises `PolygonError` for other failures (the caller decides)."""
    ticker = polygon_ticker(symbol, asset_class)
    params = {"date": date.isoformat()} if date else None
    try:
        body = client._get_json(f"{client.base_url}/v3/reference/tickers/{ticker}", params, what=f"{symbol} reference", endpoint="reference")
    except PolygonError as exc:
        if exc.status == 404:
            return not_found_record(symbol, asset_class)
        raise
    return parse_ticker_details(body, symbol, asset_class)


def ticker_events(client: PolygonClient, ticker_or_figi: str) -> TickerEvents | None:
    """`/vX/reference/tickers/{id}/events?types=ticker_change`; None when Polygon does not know the id."""
    try:
        body = client._get_json(
            f"{client.base_url}/vX/reference/tickers/{ticker_or_figi}/events", {"types": "ticker_change"},
            what=f"{ticker_or_figi} ticker events", endpoint="reference_events",
        )
    except PolygonError as exc:
        if exc.status == 404:
            return None
        raise
    return parse_ticker_events(body)


def lookup(client: PolygonClient, symbol: str, asset_class: str, stored: ReferenceRecord | None = None) -> ReferenceRecord:
    """Everything the pipeline needs to know about one tracked symbol, with its status; never raises
    for a Polygon failure. One request; a second (the ticker-change events) only when Polygon lists
    the stock or ETF as inactive, to tell a rename from a delisting."""
    try:
        record = ticker_details(client, symbol, asset_class)
    except MissingApiKey:
        raise
    except PolygonError as exc:
        return error_record(symbol, asset_class, str(exc))
    record = compare_identity(stored, classify(record))
    if (
        stored is not None and stored.active is False and record.active is False
        and stored.delisted_on == record.delisted_on and stored.status in ("ok", "renamed") and record.status == "ok"
    ):  # the same delisting as last time: what the ticker-change probe found then still holds
        return record.__class__(**{**record.__dict__, "status": stored.status, "status_text": stored.status_text,
                                   "renamed_to": stored.renamed_to})
    if record.status in ("ok", "incomplete") and record.active is False and asset_class != "crypto":
        figi = record.composite_figi
        try:
            events = ticker_events(client, figi or polygon_ticker(symbol, asset_class))
        except PolygonError as exc:
            return record.with_status(record.status, f"inactive; ticker changes could not be read: {exc}"[:500])
        change = rename_detected(symbol, events) if events is not None else None
        if change is not None:
            record = record.__class__(**{**record.__dict__, "renamed_to": change.ticker})
            return record.with_status(
                "renamed",
                f"{symbol} trades as {change.ticker} since {change.date} (same security, FIGI {events.figi or figi}): "
                f"move its history with `market-pipeline symbols rename {symbol} {change.ticker}`",
            )
    return record
