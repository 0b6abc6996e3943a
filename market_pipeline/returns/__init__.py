"""Daily returns from the stored bars, and the large ones no recorded event explains. Pure functions;
`market_pipeline.returns.update` keeps the `daily_returns` table current with them."""

from market_pipeline.returns.compute import RETURN_COLUMNS, daily_returns, unexplained_returns

__all__ = ["RETURN_COLUMNS", "daily_returns", "unexplained_returns"]
