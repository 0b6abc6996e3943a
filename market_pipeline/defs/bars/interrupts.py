"""A run of `ohlcv_daily` that is told to stop (SIGTERM, SIGINT, *Terminate* in the UI) stops.

Dagster turns SIGTERM/SIGINT into `DagsterExecutionInterruptedError` inside the op and, when the
op has a retry policy, into a retry request: the run would go on. The op catches the interrupt
here instead, marks every symbol of the run it has not stored yet `failed` ("interrupted"), and
raises a `Failure` that forbids retries, so the step and the run end at once. Nothing is half
written: each symbol's bars are one transaction, rolled back when the interrupt cuts it.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import DagsterEventType, Failure, MetadataValue

INTERRUPTED_METADATA = "interrupted"
REASON = "run {run_id} was interrupted (SIGTERM/SIGINT, or terminated and cancelled from the UI) before this symbol was stored"


def stored_in_run(context) -> set[str]:
    records = context.instance.get_records_for_run(
        context.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return {r.event_log_entry.dagster_event.partition for r in records if r.event_log_entry.dagster_event}


def interrupted_failure(context, registry, keys: Sequence[str]) -> Failure:
    """Mark the run's symbols not stored yet as failed ("interrupted"); the Failure to raise."""
    try:
        done = stored_in_run(context)
    except Exception:
        done = set()
    pending = [symbol for symbol in keys if symbol not in done]
    marked = []
    for symbol in pending:
        try:
            registry.mark_failed(symbol, REASON.format(run_id=context.run_id), context.run_id)
            marked.append(symbol)
        except Exception:  # the warehouse is gone too: the run-status sensors mark them later
            break
    return Failure(
        description=f"interrupted: the run was stopped; {len(marked)} symbol(s) not stored were marked failed",
        metadata={
            INTERRUPTED_METADATA: True,
            "failed_symbols": MetadataValue.json(marked),
        },
        allow_retries=False,
    )


def was_interrupted(result) -> bool:
    """Whether an `execute_in_process` result ended because its ohlcv_daily step was interrupted."""
    for event in result.all_events:
        if event.event_type != DagsterEventType.STEP_FAILURE:
            continue
        data = event.step_failure_data.user_failure_data
        if data is not None and INTERRUPTED_METADATA in (data.metadata or {}):
            return True
    return False
