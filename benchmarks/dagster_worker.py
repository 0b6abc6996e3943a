"""The benchmark's Dagster child process: sensor and schedule ticks, schedule runs, partitions, over
the home named by MARKET_PIPELINE_HOME (its Dagster home and warehouse). Prints one JSON line.

    MARKET_PIPELINE_HOME=... python -m benchmarks.dagster_worker sensor [--ticks 3]
    MARKET_PIPELINE_HOME=... python -m benchmarks.dagster_worker schedules [--ticks 3]
    MARKET_PIPELINE_HOME=... python -m benchmarks.dagster_worker schedule-runs
    MARKET_PIPELINE_HOME=... python -m benchmarks.dagster_worker partitions

`sensor`: the first tick (every symbol new: the sensor adds their partitions in one call and requests
the first backfill runs) is evaluated, then the following ticks with its cursor (each requests the
next batches, since no run is submitted here to wait in the queue).
`schedules`: every schedule of the code location is evaluated at the current time.
`schedule-runs`: every schedule is ticked now and the run it requests executed in-process.
`partitions`: the `symbols` partitions made equal to the active symbols (as `market-pipeline run` does).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import warnings


def _sensor(steady_ticks: int) -> dict:
    from dagster import DagsterInstance, build_sensor_context

    from market_pipeline import settings
    from market_pipeline.definitions import defs
    from market_pipeline.defs.bars.partitions import symbols_partitions
    from market_pipeline.defs.resources import WarehouseResource

    settings.ensure_dagster_home()
    instance = DagsterInstance.get()
    sensor = defs.get_sensor_def("tracked_symbols_sensor")
    resources = {"warehouse": WarehouseResource()}
    WarehouseResource().registry().list()  # the warehouse engine and its migrations, outside the clock
    cursor = None

    def evaluate():
        nonlocal cursor
        with build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs) as context:
            data = sensor.evaluate_tick(context)
        cursor = data.cursor if data.cursor is not None else cursor
        return data

    started = time.perf_counter()
    first = evaluate()  # adds every new partition itself, in one call
    first_eval = time.perf_counter() - started
    partitions = len(instance.get_dynamic_partitions(symbols_partitions.name))

    # the following ticks, keeping the cursor (no run is submitted here, so each requests the next batches)
    steady, requests, skip = [], [], None
    for _ in range(steady_ticks):
        started = time.perf_counter()
        data = evaluate()
        steady.append(time.perf_counter() - started)
        requests.append(len(data.run_requests or []))
        skip = data.skip_message
    return {
        "first_eval_seconds": first_eval,
        "first_run_requests": len(first.run_requests or []),
        "first_partition_requests": len(first.dynamic_partitions_requests or []),
        "partitions": partitions,
        "waiting_after_first": len(json.loads(first.cursor or "[]")),
        "steady_seconds": steady,
        "steady_run_requests": requests,
        "steady_skip_message": skip,
    }


def _evaluate_schedule(instance, schedule, defs, when: dt.datetime):
    from dagster import build_schedule_context

    from market_pipeline.defs.resources import WarehouseResource

    with build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources={"warehouse": WarehouseResource()}
    ) as context:
        return schedule.evaluate_tick(context)


def _schedules(ticks: int) -> dict:
    """Evaluate every schedule `ticks` times at the current time (what the daemon does on a tick)."""
    from dagster import DagsterInstance

    from market_pipeline import settings
    from market_pipeline.definitions import defs
    from market_pipeline.defs.resources import WarehouseResource

    settings.ensure_dagster_home()
    instance = DagsterInstance.get()
    WarehouseResource().registry().list()  # the warehouse engine and its migrations, outside the clock
    out = {}
    for schedule in list(defs.schedules or []):
        seconds, requests, skip = [], None, None
        for _ in range(ticks):
            started = time.perf_counter()
            data = _evaluate_schedule(instance, schedule, defs, dt.datetime.now(dt.timezone.utc))
            seconds.append(time.perf_counter() - started)
            requests = len(data.run_requests or [])
            skip = data.skip_message
        out[schedule.name] = {"seconds": seconds, "run_requests": requests, "skip_message": skip}
    return {"schedules": out}


def _schedule_runs() -> dict:
    """Tick every schedule now and execute the run each one requests, in this process, as the run
    launcher would: same job, run config and tags (its partition range)."""
    from dagster import DagsterInstance

    from market_pipeline import settings
    from market_pipeline.definitions import defs
    from market_pipeline.devtools.runner import QUIET

    settings.ensure_dagster_home()
    instance = DagsterInstance.get()
    out = {}
    for schedule in list(defs.schedules or []):
        data = _evaluate_schedule(instance, schedule, defs, dt.datetime.now(dt.timezone.utc))
        runs = []
        for request in data.run_requests or []:
            job = defs.resolve_job_def(request.job_name or schedule.job_name)
            kwargs = {"partition_key": request.partition_key} if request.partition_key else {}
            started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance, run_config={**(request.run_config or {}), **QUIET}, tags=dict(request.tags),
                raise_on_error=False, **kwargs,
            )
            runs.append({"seconds": time.perf_counter() - started, "success": result.success})
        out[schedule.name] = {"runs": runs, "skip_message": data.skip_message}
    return {"schedules": out}


def _partitions() -> dict:
    """Make the `symbols` partitions equal the registry's active symbols (as `market-pipeline run` does)."""
    from dagster import DagsterInstance

    from market_pipeline import settings
    from market_pipeline.devtools.runner import reconcile_partitions
    from market_pipeline.warehouse.registry import SymbolRegistry

    settings.ensure_dagster_home()
    started = time.perf_counter()
    added, deleted = reconcile_partitions(DagsterInstance.get(), SymbolRegistry())
    return {"added": len(added), "deleted": len(deleted), "seconds": time.perf_counter() - started}


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("sensor", "schedules", "schedule-runs", "partitions"))
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args()
    result = {
        "sensor": lambda: _sensor(args.ticks),
        "schedules": lambda: _schedules(args.ticks),
        "schedule-runs": _schedule_runs,
        "partitions": _partitions,
    }[args.what]()
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
