"""The job that re-reads the corporate-action lists (the weekly sweep runs it)."""

from dagster import AssetSelection, define_asset_job

corporate_actions_job = define_asset_job(
    "corporate_actions_job",
    selection=AssetSelection.assets("corporate_actions"),
    description="Re-read the splits and dividends of the tracked stocks and ETFs and update the adjusted views.",
)
