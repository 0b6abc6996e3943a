"""WarehouseResource: the Dagster face of the warehouse (bar store and symbol registry)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from market_pipeline import settings
from market_pipeline.warehouse.registry import SymbolRegistry
from market_pipeline.warehouse.store import BarStore


class WarehouseResource(ConfigurableResource):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default MARKET_PIPELINE_DB_URL or the SQLite file in the project home",
    )

    def resolved_url(self) -> str:
        return self.url or settings.db_url()

    def bars(self) -> BarStore:
        return BarStore(self.resolved_url())

    def registry(self) -> SymbolRegistry:
        return SymbolRegistry(self.resolved_url())
