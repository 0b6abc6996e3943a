from market_pipeline.assets.ohlcv import ohlcv_daily
from market_pipeline.assets.stats import symbol_stats
from market_pipeline.assets.tracked_symbols import tracked_symbols

__all__ = ["ohlcv_daily", "symbol_stats", "tracked_symbols"]
