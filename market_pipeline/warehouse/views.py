"""The adjusted views over `ohlcv_daily` (created by migration 0003), identical on SQLite and PostgreSQL.

Both are set-based: `ohlcv_daily` LEFT JOIN the maintained `adjustment_factors` ranges of the bar's
symbol (no per-row Python, no correlated subquery); a bar after the symbol's last event (or of a
symbol without events, such as crypto) has no range and takes factor 1.

- `ohlcv_daily_adjusted`: open, high, low, close, vwap x split_factor; volume / split_factor;
  transactions and fetched_at unchanged.
- `ohlcv_daily_total_return`: prices and vwap x total_return_factor (split- then
  dividend-adjusted); volume and transactions as in `ohlcv_daily_adjusted`.
"""

from __future__ import annotations

VIEWS = ("ohlcv_daily_adjusted", "ohlcv_daily_total_return")
ADJUSTMENTS = {"none": "ohlcv_daily", "splits": "ohlcv_daily_adjusted", "total_return": "ohlcv_daily_total_return"}


def view_sql(name: str) -> str:
    """The CREATE VIEW statement of one view (portable SQL)."""
    price_factor = {"ohlcv_daily_adjusted": "split_factor", "ohlcv_daily_total_return": "total_return_factor"}[name]
    price = f"COALESCE(f.{price_factor}, 1.0)"
    volume = "COALESCE(f.split_factor, 1.0)"
    return f"""
CREATE VIEW {name} AS
SELECT b.symbol AS symbol,
       b.date AS date,
       b.open * {price} AS open,
       b.high * {price} AS high,
       b.low * {price} AS low,
       b.close * {price} AS close,
       b.volume / {volume} AS volume,
       b.vwap * {price} AS vwap,
       b.transactions AS transactions,
       b.fetched_at AS fetched_at
FROM ohlcv_daily b
LEFT JOIN adjustment_factors f
  ON f.symbol = b.symbol AND b.date >= f.valid_from AND b.date < f.valid_to
"""


def create_views(execute) -> None:
    """Create both views with `execute(sql)` (an Alembic `op.execute` or a connection's)."""
    for name in VIEWS:
        execute(view_sql(name))


def drop_views(execute) -> None:
    for name in VIEWS:
        execute(f"DROP VIEW IF EXISTS {name}")
