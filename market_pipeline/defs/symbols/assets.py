"""The registry table as an external (source) asset, so lineage reads registry -> bars -> stats."""

from dagster import AssetSpec

from market_pipeline.defs.schemas import TRACKED_SYMBOLS, table_metadata

tracked_symbols = AssetSpec(
    "tracked_symbols",
    group_name="market_data",
    kinds={"sql"},
    metadata=table_metadata("tracked_symbols", TRACKED_SYMBOLS),
    description=(
        "The `tracked_symbols` table in the warehouse: symbol, asset class, active flag, backfill status. "
        "Edited with `market-pipeline symbols add|activate|deactivate`; tracked_symbols_sensor turns its "
        "active rows into partitions of ohlcv_daily."
    ),
)
