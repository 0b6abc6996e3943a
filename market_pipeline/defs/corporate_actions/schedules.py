"""`corporate_actions_weekly_sweep`: every Sunday 06:00 New York, re-read the whole corporate-action
lists of every tracked stock and ETF (batched, ceil(symbols / 100) requests per list), so an event
withdrawn or corrected by the provider is caught even when it is older than the daily look-back.

The daily look-back read (every ticker's events of the last 60 days, a constant number of requests)
runs inside `stocks_daily_refresh`'s ohlcv_daily run, before its bars are fetched.
"""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from market_pipeline.defs.corporate_actions.jobs import corporate_actions_job


@schedule(
    name="corporate_actions_weekly_sweep",
    cron_schedule="0 6 * * 0",
    execution_timezone="America/New_York",
    job=corporate_actions_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Sundays 06:00 New York: re-read every tracked stock's and ETF's splits and dividends.",
)
def corporate_actions_weekly_sweep(context: ScheduleEvaluationContext):
    tick = context.scheduled_execution_time
    key = f"corporate_actions_weekly_sweep:{tick:%Y-%m-%d}" if tick else None
    return RunRequest(run_key=key)
