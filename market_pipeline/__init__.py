"""market_pipeline: a warehouse of daily OHLCV bars from Polygon (Massive), kept by Dagster.

`market_pipeline.read_bars(symbols, start=None, end=None, adjustment="none" | "splits" | "total_return")`
reads stored bars as a pandas DataFrame indexed by (symbol, date);
`market_pipeline.read_returns(symbols, start=None, end=None)` their daily returns (total, log and
split-adjusted close). Both are imported on first use, so `import market_pipeline` stays light.
"""

__all__ = ["read_bars", "read_returns"]


def __getattr__(name: str):
    if name == "read_bars":
        from market_pipeline.warehouse.reader import read_bars

        return read_bars
    if name == "read_returns":
        from market_pipeline.returns.read import read_returns

        return read_returns
    raise AttributeError(f"module 'market_pipeline' has no attribute {name!r}")
