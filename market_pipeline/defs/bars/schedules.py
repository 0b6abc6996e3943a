"""The daily refresh schedules: one run per asset class per tick, every active symbol of the class.

- `stocks_daily_refresh`: weekdays at 18:30 America/New_York (after the 16:00 close and the first late
  prints), stocks and ETFs; they share Polygon's `stocks` grouped-daily market.
- `crypto_daily_refresh`: every day at 00:15 UTC (the UTC day that just ended), crypto.

A tick requests ONE run of ohlcv_daily_job: a partition range from the class's first to its last
partition (partition keys keep insertion order, so classes may interleave) with op config
`asset_classes` restricting the run to the class (symbols of other classes inside the range are
skipped, not touched) and `target_date` fixed from the tick time, so a queued or retried run refreshes
the same sessions. Inside the run, `market_pipeline.refresh.planning` picks the grouped-daily or the range path
per symbol, whichever needs fewer requests: one grouped request per date serves every symbol of the
class at once. The run key names the schedule and the tick, so evaluating a tick twice launches one run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from market_pipeline.defs.bars.jobs import ohlcv_job
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.reconcile import range_tags
from market_pipeline.refresh.planning import market_of, target_session
from market_pipeline.defs.resources import WarehouseResource
from market_pipeline.warehouse.registry import SymbolRegistry

OHLCV_OP = "ohlcv_daily"
TRIGGER_TAG = "market_pipeline/trigger"
CLASSES_TAG = "market_pipeline/asset_classes"
TARGET_TAG = "market_pipeline/target_date"

STOCK_CLASSES = ("stock", "etf")
CRYPTO_CLASSES = ("crypto",)


def refresh_request(
    instance: DagsterInstance,
    registry: SymbolRegistry,
    schedule_name: str,
    asset_classes: Sequence[str],
    tick: dt.datetime,
) -> RunRequest | SkipReason:
    """The run that refreshes every active, partitioned symbol of `asset_classes` as of `tick`."""
    classes = list(asset_classes)
    active = {symbol for symbol, _ in registry.active_symbols(classes)}
    keys = [k for k in instance.get_dynamic_partitions(symbols_partitions.name) if k in active]
    if not keys:
        return SkipReason(f"no active {'/'.join(classes)} symbol has a partition yet")
    target = target_session(market_of(classes[0]), tick)
    tags = {TRIGGER_TAG: schedule_name, CLASSES_TAG: ",".join(classes), TARGET_TAG: target.isoformat()}
    # corporate actions: every ticker's recent events (a constant number of requests), before the bars
    op_config = {"asset_classes": classes, "target_date": target.isoformat(), "corporate_actions": "recent"}
    config = {"ops": {OHLCV_OP: {"config": op_config}}}
    run_key = f"{schedule_name}:{tick.astimezone(dt.timezone.utc):%Y-%m-%dT%H:%MZ}"
    if len(keys) == 1:
        return RunRequest(run_key=run_key, partition_key=keys[0], run_config=config, tags=tags)
    # one contiguous range first..last; other classes' partitions inside it are skipped by the op
    return RunRequest(run_key=run_key, run_config=config, tags={**tags, **range_tags([keys[0], keys[-1]])})


def _tick(context: ScheduleEvaluationContext) -> dt.datetime:
    return context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)


def _refresh_schedule(name: str, cron: str, timezone: str, classes: Sequence[str], description: str):
    @schedule(
        name=name,
        cron_schedule=cron,
        execution_timezone=timezone,
        job=ohlcv_job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def _refresh(context: ScheduleEvaluationContext, warehouse: WarehouseResource):
        return refresh_request(context.instance, warehouse.registry(), name, classes, _tick(context))

    return _refresh


stocks_daily_refresh = _refresh_schedule(
    "stocks_daily_refresh",
    "30 18 * * 1-5",
    "America/New_York",
    STOCK_CLASSES,
    "Weekdays 18:30 New York: refresh every active stock and ETF in one run (grouped-daily bars "
    "when fewer requests than one range request per symbol), re-fetching the last stored sessions.",
)

crypto_daily_refresh = _refresh_schedule(
    "crypto_daily_refresh",
    "15 0 * * *",
    "UTC",
    CRYPTO_CLASSES,
    "Daily 00:15 UTC: refresh every active crypto pair in one run up to the UTC day that just "
    "ended (grouped-daily bars when fewer requests than one range request per symbol).",
)


refresh_schedules = [stocks_daily_refresh, crypto_daily_refresh]
