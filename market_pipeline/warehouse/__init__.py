"""The SQL warehouse: schema (Alembic-managed), bar store and symbol registry."""

from market_pipeline.warehouse.engine import get_engine, upgrade
from market_pipeline.warehouse.registry import SymbolRegistry, TrackedSymbol
from market_pipeline.warehouse.store import BarStore, UpsertResult

__all__ = ["BarStore", "SymbolRegistry", "TrackedSymbol", "UpsertResult", "get_engine", "upgrade"]
