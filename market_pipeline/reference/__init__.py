"""Symbol lifecycle, pure: reference records, mismatches, renames and freshness. No Dagster, no I/O.

- `records`: a `/v3/reference/tickers/{ticker}` answer as a `ReferenceRecord` with a clear status.
- `mismatch`: what Polygon says against what the registry says (asset class, unknown, inactive pair).
- `events`: `ticker_change` events, and whether a rename keeps the same security (composite FIGI).
- `freshness`: is a symbol's last stored bar the latest completed session of its market.
"""

from importlib import import_module

_EXPORTS = {
    "RenameRefused": "events", "TickerChange": "events", "parse_ticker_events": "events", "plan_rename": "events",
    "rename_detected": "events",
    "Freshness": "freshness", "evaluate_freshness": "freshness", "last_trading_session": "freshness",
    "classify": "mismatch", "verify_message": "mismatch",
    "ReferenceRecord": "records", "not_found_record": "records", "parse_ticker_details": "records",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """The names above, imported on first use: `freshness` loads the trading calendars (pandas),
    which the command line's `symbols list` does not need."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
