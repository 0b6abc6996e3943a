"""The asset job of the bars and their daily returns (with their checks) per symbol partition."""

from dagster import AssetSelection, define_asset_job

from market_pipeline.defs.bars.partitions import symbols_partitions

ohlcv_job = define_asset_job(
    "ohlcv_daily_job",
    # the assets' checks come with them; daily_returns is computed in the same step, after each batch of bars
    selection=AssetSelection.assets("ohlcv_daily", "daily_returns"),
    partitions_def=symbols_partitions,
    description="Fetch and store the daily bars of the selected symbol partitions, update their daily returns, then check both.",
)
