"""Releasing the symbols a run left `in_progress` once it has ended: each is marked `failed` with the
reason the run recorded for it (its step failure's `errors` metadata: e.g. the full disk that stopped
it, when the run could not write that itself), else "run X ended before this symbol finished: ...".
The run-status sensors, `market-pipeline run` and the commands that show symbols do this."""

from __future__ import annotations

from dagster import DagsterEventType


def run_errors(instance, run_id: str) -> dict[str, str]:
    """symbol -> the reason the run's step failures recorded for it (the last failure's, on retries)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE).records
    errors: dict[str, str] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data.user_failure_data if event is not None and event.step_failure_data else None
        value = (data.metadata or {}).get("errors") if data is not None else None
        if value is not None and isinstance(value.value, dict):
            errors.update({str(symbol): str(error) for symbol, error in value.value.items()})
    return errors


def release_run(instance, registry, run_id: str, reason: str) -> list[str]:
    """Mark `failed` every symbol the ended run `run_id` left `in_progress` (see the module docstring)."""
    return registry.fail_in_progress_for_run(run_id, reason, run_errors(instance, run_id))
