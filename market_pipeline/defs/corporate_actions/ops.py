"""What the ohlcv_daily op does about corporate actions: read them before the bars.

`read_corporate_actions` runs first in every ohlcv_daily run that holds stocks or ETFs
(`market-pipeline run`, UI backfills, the sensor's backfills, the schedules): by default it re-reads
the whole lists of the run's stock and ETF symbols (batched, `ticker.any_of`), or with
`corporate_actions: recent` (the daily schedule) every ticker's events of the look-back window in a
constant number of requests. It records a `corporate_actions` materialization listing what changed.
A failed read is logged, the symbols' status says why, the views stay as they were, and the bars
are still fetched (they are stored as traded and never depend on the events).
"""

import datetime as dt

from dagster import AssetMaterialization

from market_pipeline.defs.corporate_actions.assets import CORPORATE_ACTIONS, result_metadata
from market_pipeline.refresh.corporate_actions import refresh_corporate_actions
from market_pipeline.warehouse.corporate_actions import CorporateActionStore


def read_corporate_actions(context, config, client, url: str, rows, now: dt.datetime):
    """Yields the corporate_actions materialization; returns the CorporateActionsResult (None: not read)."""
    mode = config.corporate_actions
    # a delisted symbol is no longer read here (its run makes no request once its history is complete);
    # the weekly sweep still re-reads its lists
    equities = [row.symbol for row in rows if row.asset_class != "crypto" and getattr(row, "delisted_on", None) is None]
    if mode == "none" or not equities:
        return
    if mode not in ("symbols", "recent"):
        context.log.warning(f"unknown corporate_actions mode {mode!r}: reading the run's symbols' lists")
        mode = "symbols"
    store = CorporateActionStore(url)
    since = None
    if mode == "recent":
        today = dt.date.fromisoformat(config.target_date) if config.target_date else now.date()
        since = today - dt.timedelta(days=config.corporate_actions_lookback_days)
    result = refresh_corporate_actions(client, store, equities, since=since, log=context.log)
    changes = result.outcome.metadata() if result.outcome else {}
    context.log.info(
        f"corporate actions ({'since ' + str(since) if since else 'whole lists'}) of {len(result.symbols)} "
        f"symbol(s) in {result.requests} request(s): "
        + (result.error or f"{len(changes.get('new', []))} new, {len(changes.get('changed', []))} changed, "
           f"{len(changes.get('withdrawn', []))} withdrawn")
    )
    if result.ok:
        yield AssetMaterialization(asset_key=CORPORATE_ACTIONS, metadata=result_metadata(result))
    return result

