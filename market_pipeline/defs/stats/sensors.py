"""symbol_stats_automation_sensor: recompute symbol_stats after the bars update."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

# Dagster's implicit default_automation_condition_sensor starts STOPPED; this one is on by default
# so symbol_stats follows the bars in `make dev` without anyone switching a sensor on.
symbol_stats_automation_sensor = AutomationConditionSensorDefinition(
    "symbol_stats_automation_sensor",
    target=AssetSelection.assets("symbol_stats"),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates symbol_stats' automation condition: recompute after ohlcv_daily partitions update.",
)
