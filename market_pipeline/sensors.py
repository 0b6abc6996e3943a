"""tracked_symbols_sensor: the registry drives the `symbols` partitions and the first backfills.
symbols_run_failure_sensor / symbols_run_canceled_sensor: a run that fails, is cancelled or dies
leaves no symbol `in_progress`."""


from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from market_pipeline.jobs import ohlcv_job
from market_pipeline.partitions import symbols_partitions
from market_pipeline.reconcile import backfill_requests, chunks, plan_partitions
from market_pipeline.resources import WarehouseResource


@sensor(
    name="tracked_symbols_sensor",
    job=ohlcv_job,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Adds a partition of ohlcv_daily for each new active symbol in tracked_symbols and requests its "
        "backfill (batched), and deletes the partition of a deactivated symbol (its bars stay)."
    ),
)
def tracked_symbols_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource):
    rows = warehouse.registry().list()
    existing = context.instance.get_dynamic_partitions(symbols_partitions.name)
    plan = plan_partitions([r.symbol for r in rows], existing)
    if not plan.to_add and not plan.to_delete:
        return SkipReason(f"{len(existing)} partitions match the {len(rows)} active symbols")
    updated = {r.symbol: r.updated_at.isoformat() for r in rows}
    requests = []
    for batch in chunks(plan.to_add):
        requests.extend(backfill_requests([batch], "|".join(updated[s] for s in batch), "new_symbols"))
    partition_requests = []
    if plan.to_add:
        partition_requests.append(symbols_partitions.build_add_request(plan.to_add))
    if plan.to_delete:
        partition_requests.append(symbols_partitions.build_delete_request(plan.to_delete))
    context.log.info(f"adding {len(plan.to_add)} partition(s), deleting {len(plan.to_delete)}")
    return SensorResult(run_requests=requests, dynamic_partitions_requests=partition_requests)


def release_symbols(context: RunStatusSensorContext, warehouse: WarehouseResource, reason: str) -> list[str]:
    """Mark `failed` (with the run id and `reason`) every symbol the run left `in_progress`.

    Returns nothing to Dagster on purpose: a run status sensor that returns a value handles one run
    per tick, one that returns None handles every run that ended since the last tick (and records
    on each run that the sensor acted on it)."""
    run_id = context.dagster_run.run_id
    marked = warehouse.registry().fail_in_progress_for_run(run_id, reason)
    if marked:
        context.log.warning(f"run {run_id} left {len(marked)} symbol(s) in progress, marked failed: {', '.join(marked)}")
    if free_pool_slots(context.instance, run_id):
        context.log.warning(f"run {run_id} ended holding a `polygon_api` pool slot: freed")
    return marked


def free_pool_slots(instance, run_id: str) -> bool:
    """Free the pool slots a run that ended still holds (a killed process never releases its own):
    otherwise every later ohlcv_daily step waits for the `polygon_api` slot forever. The daemon frees
    them too, but only after run_monitoring.free_slots_after_run_end_seconds on its slower loop."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or run_id not in storage.get_concurrency_run_ids():
        return False
    storage.free_concurrency_slots_for_run(run_id)
    return True


def _failure_reason(context: RunFailureSensorContext) -> str:
    event = context.failure_event
    message = (event.message or "").strip() if event else ""
    return message or "the run failed (its process may have been killed)"


# Runs launched by the UI, the daemon and the CLI (`market-pipeline run` executes in-process, with no
# code location origin) all count, hence monitor_all_code_locations; only registry rows whose
# last_run_id is the run are touched.
@run_failure_sensor(
    name="symbols_run_failure_sensor",
    monitor_all_code_locations=True,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "When a run fails or its process dies, marks the symbols it left in_progress as failed, with "
        "the run id and the reason (see `market-pipeline symbols list`); the next refresh retries them."
    ),
)
def symbols_run_failure_sensor(context: RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    release_symbols(context, warehouse, _failure_reason(context))


@run_status_sensor(
    name="symbols_run_canceled_sensor",
    run_status=DagsterRunStatus.CANCELED,
    monitor_all_code_locations=True,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description="When a run is cancelled, marks the symbols it left in_progress as failed, with the run id.",
)
def symbols_run_canceled_sensor(context: RunStatusSensorContext, warehouse: WarehouseResource) -> None:
    release_symbols(context, warehouse, "the run was cancelled")


# Dagster's implicit default_automation_condition_sensor starts STOPPED; this one is on by default
# so symbol_stats follows the bars in `make dev` without anyone switching a sensor on.
symbol_stats_automation_sensor = AutomationConditionSensorDefinition(
    "symbol_stats_automation_sensor",
    target=AssetSelection.assets("symbol_stats"),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates symbol_stats' automation condition: recompute after ohlcv_daily partitions update.",
)
