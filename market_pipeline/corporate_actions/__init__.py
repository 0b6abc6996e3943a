"""Corporate actions (splits and cash dividends): parsing, duplicates, withdrawals, adjustment
factors and the split-consistency evaluation. Pure: no Dagster, no database, no HTTP."""

from market_pipeline.corporate_actions.changes import EventChanges, StoredEvent, diff_events
from market_pipeline.corporate_actions.consistency import ConsistencyReport, evaluate as evaluate_consistency
from market_pipeline.corporate_actions.events import Dividend, Split, parse_dividend, parse_split
from market_pipeline.corporate_actions.factors import FactorRanges, factor_ranges, factors_on, resolve_duplicates

__all__ = [
    "ConsistencyReport",
    "Dividend",
    "EventChanges",
    "FactorRanges",
    "Split",
    "StoredEvent",
    "diff_events",
    "evaluate_consistency",
    "factor_ranges",
    "factors_on",
    "parse_dividend",
    "parse_split",
    "resolve_duplicates",
]
