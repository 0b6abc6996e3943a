"""tracked_symbols_sensor: the registry drives the `symbols` partitions and the first backfills.
symbols_run_failure_sensor / symbols_run_canceled_sensor: a run that fails, is cancelled or dies
leaves no symbol `in_progress`."""


import json

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from market_pipeline.defs.bars.jobs import ohlcv_job
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.reconcile import backfill_requests, contiguous_runs, plan_partitions
from market_pipeline.defs.bars.released import release_run
from market_pipeline.defs.resources import WarehouseResource


# Backfill runs of new symbols the sensor lets wait in the run queue at once. More would not finish
# sooner (the `polygon_api` pool runs one fetching step at a time) and each costs the daemon about
# 2 s to submit; the rest of the new symbols wait in the sensor's cursor for later ticks.
MAX_WAITING_BACKFILL_RUNS = 2
NEW_SYMBOLS_TRIGGER = "new_symbols"


def waiting_backfill_runs(instance) -> int:
    """This sensor's backfill runs not started yet (queued or about to be)."""
    return instance.get_runs_count(
        RunsFilter(
            statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED],
            tags={"market_pipeline/trigger": NEW_SYMBOLS_TRIGGER},
        )
    )


def _queue(cursor: str | None) -> list[str]:
    try:
        queue = json.loads(cursor) if cursor else []
    except ValueError:
        return []
    return [s for s in queue if isinstance(s, str)] if isinstance(queue, list) else []


@sensor(
    name="tracked_symbols_sensor",
    job=ohlcv_job,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Adds a partition of ohlcv_daily for each new active symbol in tracked_symbols and requests its "
        "backfill (batched, at most two runs waiting in the queue; the rest follow on later ticks), and "
        "deletes the partition of a deactivated symbol (its bars stay)."
    ),
)
def tracked_symbols_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource):
    rows = warehouse.registry().list()
    instance, name = context.instance, symbols_partitions.name
    existing = instance.get_dynamic_partitions(name)
    plan = plan_partitions([r.symbol for r in rows], existing)
    # Partitions are changed here, in one call, rather than returned as a dynamic-partitions request:
    # the daemon applies such a request key by key (about 30 s for 10,000 new symbols on SQLite).
    if plan.to_add:
        instance.add_dynamic_partitions(name, plan.to_add)
    for key in plan.to_delete:
        instance.delete_dynamic_partition(name, key)
    if plan.to_add or plan.to_delete:
        context.log.info(f"added {len(plan.to_add)} partition(s), deleted {len(plan.to_delete)}")

    updated = {r.symbol: r.updated_at.isoformat() for r in rows}
    previous = _queue(context.cursor)
    queued = set(previous)
    waiting = [s for s in previous if s in updated] + [s for s in plan.to_add if s not in queued]
    if not waiting:
        if plan.to_add or plan.to_delete or previous:
            return SensorResult(cursor="[]", skip_reason=f"partitions match the {len(rows)} active symbols, no backfill waits")
        return SkipReason(f"{len(existing)} partitions match the {len(rows)} active symbols")

    free = MAX_WAITING_BACKFILL_RUNS - waiting_backfill_runs(instance)
    deleted = set(plan.to_delete)
    ordered = [k for k in existing if k not in deleted] + plan.to_add
    batches = contiguous_runs(waiting, ordered)[: max(free, 0)]
    requests = [
        request
        for batch in batches
        for request in backfill_requests([batch], "|".join(updated[s] for s in batch), NEW_SYMBOLS_TRIGGER)
    ]
    requested = {s for batch in batches for s in batch}
    rest = [s for s in waiting if s not in requested]
    cursor = json.dumps(rest)
    if not requests:
        return SensorResult(
            cursor=cursor,
            skip_reason=f"{len(waiting)} new symbol(s) wait for the {MAX_WAITING_BACKFILL_RUNS} queued backfill runs to start",
        )
    if rest:
        context.log.info(f"{len(rest)} new symbol(s) left for later ticks")
    return SensorResult(run_requests=requests, cursor=cursor)


def release_symbols(context: RunStatusSensorContext, warehouse: WarehouseResource, reason: str) -> list[str]:
    """Mark `failed` every symbol the run left `in_progress`: with the reason the run recorded for it
    (a run stopped by a full disk could not write it), else the run id and `reason`.

    Returns nothing to Dagster on purpose: a run status sensor that returns a value handles one run
    per tick, one that returns None handles every run that ended since the last tick (and records
    on each run that the sensor acted on it)."""
    run_id = context.dagster_run.run_id
    marked = release_run(context.instance, warehouse.registry(), run_id, reason)
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
