"""The asset job of the bars and their daily returns (with their checks) per symbol partition."""

from dagster import AssetSelection, define_asset_job

from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.run_start import BARS_RUN_TAGS

ohlcv_job = define_asset_job(
    "ohlcv_daily_job",
    # the assets' checks come with them; daily_returns is computed in the same step, after each batch of bars
    selection=AssetSelection.assets("ohlcv_daily", "daily_returns"),
    partitions_def=symbols_partitions,
    run_tags=BARS_RUN_TAGS,  # on every run of the job; the UI's __ASSET_JOB runs get it as they start
    description="Fetch and store the daily bars of the selected symbol partitions, update their daily returns, then check both.",
)
