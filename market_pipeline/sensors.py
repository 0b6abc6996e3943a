"""tracked_symbols_sensor: the registry drives the `symbols` partitions and the first backfills."""


from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from market_pipeline.jobs import ohlcv_job
from market_pipeline.partitions import symbols_partitions
from market_pipeline.reconcile import backfill_requests, chunks, plan_partitions
from market_pipeline.resources import WarehouseResource


@sensor(
    name="tracked_symbols_sensor",
    job=ohlcv_job,
    minimum_interval_seconds=15,
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
