"""Data quality for stored bars: validation (hard rules, soft signals), gap detection and per-symbol stats."""

from market_pipeline.quality.gaps import GapReport, detect_gaps
from market_pipeline.quality.stats import SymbolStats, compute_symbol_stats
from market_pipeline.quality.validation import (
    HARD_RULES,
    SOFT_SIGNALS,
    ValidationReport,
    ValidationThresholds,
    validate_bars,
)

__all__ = [
    "HARD_RULES",
    "SOFT_SIGNALS",
    "GapReport",
    "SymbolStats",
    "ValidationReport",
    "ValidationThresholds",
    "compute_symbol_stats",
    "detect_gaps",
    "validate_bars",
]
