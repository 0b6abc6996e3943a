"""Symbol lifecycle, pure: reference records, mismatches, renames and freshness. No Dagster, no I/O.

- `records`: a `/v3/reference/tickers/{ticker}` answer as a `ReferenceRecord` with a clear status.
- `mismatch`: what Polygon says against what the registry says (asset class, unknown, inactive pair).
- `events`: `ticker_change` events, and whether a rename keeps the same security (composite FIGI).
- `freshness`: is a symbol's last stored bar the latest completed session of its market.
"""

from market_pipeline.reference.events import RenameRefused, TickerChange, parse_ticker_events, plan_rename, rename_detected
from market_pipeline.reference.freshness import Freshness, evaluate_freshness, last_trading_session
from market_pipeline.reference.mismatch import classify, verify_message
from market_pipeline.reference.records import ReferenceRecord, not_found_record, parse_ticker_details

__all__ = [
    "Freshness",
    "ReferenceRecord",
    "RenameRefused",
    "TickerChange",
    "classify",
    "evaluate_freshness",
    "last_trading_session",
    "not_found_record",
    "parse_ticker_details",
    "parse_ticker_events",
    "plan_rename",
    "rename_detected",
    "verify_message",
]
