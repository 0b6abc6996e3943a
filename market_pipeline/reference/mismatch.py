"""Mismatches between the registry and Polygon's reference data: reported, never guessed. Pure."""

from __future__ import annotations

import datetime as dt

from market_pipeline.reference.records import ReferenceRecord

ADD_HINT = {"etf": "--asset-class etf", "stock": "--asset-class stock", "crypto": "--asset-class crypto"}


def classify(record: ReferenceRecord) -> ReferenceRecord:
    """The record with status `mismatch` (and a one-line text naming what Polygon says) when the
    registry's asset class disagrees with Polygon's type, or a crypto pair is inactive; else unchanged.

    A stock or ETF Polygon lists as inactive is a delisting, not a mismatch (see `delisted_on`).
    """
    if record.status not in ("ok", "incomplete"):
        return record
    registered, polygon = record.asset_class, record.polygon_class
    symbol = record.symbol
    if registered == "crypto":
        if record.market is not None and record.market != "crypto":
            return record.with_status("mismatch", f"Polygon lists {record.ticker or symbol} in the {record.market} market, not crypto")
        if record.active is False:
            return record.with_status("mismatch", f"Polygon lists the crypto pair {record.ticker or symbol} as inactive")
        return record
    if record.market == "crypto":
        return record.with_status("mismatch", f"Polygon lists {symbol} as a crypto pair, not {registered}: use --asset-class crypto")
    if polygon is not None and polygon != registered:
        return record.with_status(
            "mismatch",
            f"Polygon types {symbol} as {record.type_name} (type {record.type}), not {'an ETF' if registered == 'etf' else 'a stock'}: "
            f"track it with {ADD_HINT[polygon]}",
        )
    return record


def verify_message(record: ReferenceRecord) -> str | None:
    """Why `symbols add --verify` refuses this symbol (one line), or None when it may be added."""
    record = classify(record)
    if record.status in ("not_found", "mismatch", "invalid", "unknown_type"):
        return record.status_text
    return None


def compare_identity(stored: ReferenceRecord | None, fresh: ReferenceRecord) -> ReferenceRecord:
    """A fresh answer checked against the identity stored before: when the composite FIGI changed,
    the ticker now names another security (reused): reported as a mismatch and the stored identity
    kept, so the symbol's history is never silently re-assigned."""
    if stored is None or not stored.composite_figi or not fresh.composite_figi or stored.composite_figi == fresh.composite_figi:
        return fresh
    # the stored security stopped trading under this ticker at the latest the day before the new one listed:
    # treated as delisted then, so the new security's bars never join the stored history
    ended = stored.delisted_on
    if fresh.list_date is not None:
        ended = min(ended, fresh.list_date - dt.timedelta(days=1)) if ended else fresh.list_date - dt.timedelta(days=1)
    text = (
        f"Polygon's {fresh.symbol} is now a different security ({fresh.name or 'unnamed'}, composite FIGI "
        f"{fresh.composite_figi}, not {stored.composite_figi}): the ticker was reused; the stored history "
        "stays with the old security and is not merged"
        + (f"; no bars after {ended} are fetched" if ended else "")
    )
    fields = {**stored.__dict__, "status": "mismatch", "status_text": text}
    if ended is not None:
        fields.update(active=False, delisted_on=ended)
    return stored.__class__(**fields)
