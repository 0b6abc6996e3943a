"""What every run of the bars does first, whoever launched it.

**One tag finds them all.** Dagster names a run launched from an asset's page or a backfill in the UI
`__ASSET_JOB` (its implicit job for any selection of assets), while `market-pipeline run`, the
schedules and the sensor run `ohlcv_daily_job`. Every run that materializes or checks `ohlcv_daily`
carries `market_pipeline/asset=ohlcv_daily`: `ohlcv_daily_job` puts it on its runs when they are
created; Dagster's implicit job has no tags of ours, so the op adds it to its run as it starts.

**A slow instance says so.** A Dagster home whose dagster.yaml is not the project's (an empty
DAGSTER_HOME gets Dagster's defaults) writes the event log with Dagster's own SQLite storage, a new
file and engine per statement: the main job takes about 4 times as long, a daily refresh about 20
times (BENCHMARKS.md). The run's log says so once.
"""

from __future__ import annotations

from dagster import AssetExecutionContext

ASSET_TAG = "market_pipeline/asset"
BARS_RUN_TAGS = {ASSET_TAG: "ohlcv_daily"}


def tag_run(context: AssetExecutionContext) -> None:
    if context.run.tags.get(ASSET_TAG) != BARS_RUN_TAGS[ASSET_TAG]:
        context.instance.add_run_tags(context.run_id, BARS_RUN_TAGS)


def note_slow_event_log(context: AssetExecutionContext) -> None:
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from market_pipeline.storage import PooledSqliteEventLogStorage

    storage = context.instance.event_log_storage
    if isinstance(storage, SqliteEventLogStorage) and not isinstance(storage, PooledSqliteEventLogStorage):
        context.log.warning(
            "this Dagster instance writes its event log with Dagster's own SQLite storage (a file opened per "
            "statement): runs take several times as long. Copy the project's dagster.yaml into DAGSTER_HOME "
            f"({context.instance.root_directory}) and restart"
        )


def start_run(context: AssetExecutionContext) -> None:
    tag_run(context)
    if context.retry_number == 0:
        note_slow_event_log(context)
