"""Dagster's own storage for this deployment, as configured in dagster.yaml (not the warehouse)."""

from market_pipeline.storage.sqlite_event_log import PooledSqliteEventLogStorage

__all__ = ["PooledSqliteEventLogStorage"]
