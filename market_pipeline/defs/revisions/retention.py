"""`revisions_retention_job` and its weekly schedule: drop the revisions older than
MARKET_PIPELINE_REVISIONS_RETENTION_DAYS (unset: every revision is kept, and the job says so).

The revisions (superseded bar values, when bars were first stored, corporate-action states, factor
changes: market_pipeline.warehouse.revisions) are what `read_bars(..., as_of=...)` and
`market-pipeline revisions` read; once they are dropped, reads as of an instant before the cut-off
are refused with the reason.
"""

import datetime as dt

from dagster import Config, DefaultScheduleStatus, MetadataValue, Output, RunRequest, job, op, schedule
from pydantic import Field

from market_pipeline import settings
from market_pipeline.defs.resources import WarehouseResource
from market_pipeline.warehouse.revisions import RevisionStore


class RetentionConfig(Config):
    as_of: str | None = Field(
        default=None, description="apply the retention as of this instant, ISO 8601 UTC (default: now)"
    )


@op(description="Drop the revisions older than MARKET_PIPELINE_REVISIONS_RETENTION_DAYS (unset: keep every one).")
def prune_revisions(context, config: RetentionConfig, warehouse: WarehouseResource):
    store = RevisionStore(warehouse.resolved_url())
    days = settings.revisions_retention_days()
    if days is None:
        context.log.info("MARKET_PIPELINE_REVISIONS_RETENTION_DAYS is not set: every revision is kept")
        yield Output(None, metadata={"retention": "every revision kept", **_sizes(store)})
        return
    now = None
    if config.as_of:
        moment = dt.datetime.fromisoformat(config.as_of)
        now = moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
    dropped = store.prune(days, now)
    context.log.info(
        f"revisions older than {days} day(s) dropped: "
        + ", ".join(f"{n} from {table}" for table, n in dropped.items())
    )
    yield Output(
        None,
        metadata={
            "retention": f"{days} day(s)",
            "dropped": MetadataValue.json(dropped),
            **_sizes(store),
        },
    )


def _sizes(store: RevisionStore) -> dict:
    return {"kept": MetadataValue.json(store.sizes())}


@job(description="Drop the revisions older than MARKET_PIPELINE_REVISIONS_RETENTION_DAYS (weekly).")
def revisions_retention_job():
    prune_revisions()


@schedule(
    name="revisions_retention_weekly",
    cron_schedule="0 7 * * 6",
    execution_timezone="UTC",
    job=revisions_retention_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Saturdays 07:00 UTC: drop revisions older than MARKET_PIPELINE_REVISIONS_RETENTION_DAYS (unset: none).",
)
def revisions_retention_weekly(context):
    tick = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
    return RunRequest(
        run_key=f"revisions_retention_weekly:{tick.astimezone(dt.timezone.utc):%Y-%m-%dT%H:%MZ}",
        run_config={"ops": {"prune_revisions": {"config": {"as_of": tick.astimezone(dt.timezone.utc).isoformat()}}}},
        tags={"market_pipeline/trigger": "revisions_retention_weekly"},
    )
