"""The asset job that recomputes the statistics table."""

from dagster import AssetSelection, define_asset_job

stats_job = define_asset_job(
    "symbol_stats_job",
    selection=AssetSelection.assets("symbol_stats"),
    description="Recompute the symbol_stats table from the stored bars.",
)
