"""Asset jobs: the bars (with their checks) per symbol partition, and the statistics table."""

from dagster import AssetSelection, define_asset_job

from market_pipeline.partitions import symbols_partitions

ohlcv_job = define_asset_job(
    "ohlcv_daily_job",
    selection=AssetSelection.assets("ohlcv_daily"),  # the asset's checks come with it
    partitions_def=symbols_partitions,
    description="Fetch and store the daily bars of the selected symbol partitions, then check them.",
)

stats_job = define_asset_job(
    "symbol_stats_job",
    selection=AssetSelection.assets("symbol_stats"),
    description="Recompute the symbol_stats table from the stored bars.",
)
