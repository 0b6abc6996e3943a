"""The symbol lifecycle inside the ohlcv_daily op: reference data fetched on a symbol's first run,
shown on its partition, and the table-wide freshness policy."""

import datetime as dt

from dagster import FreshnessPolicy

from market_pipeline.polygon.reference import refresh_references

# The table as a whole: some symbol's partition materializes at least daily (crypto every day, stocks
# every weekday); three days without any covers a long weekend of a stocks-only warehouse.
TABLE_FRESHNESS = FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=74), warn_window=dt.timedelta(hours=26))
REFERENCE_METADATA = ("name", "type", "primary_exchange", "composite_figi", "list_date", "status", "status_text")


def reference_metadata(stored) -> dict:
    """The symbol's reference data on its partition (what Polygon says it is, and any mismatch)."""
    if stored is None:
        return {"reference_status": "not fetched"}
    record = stored.record.as_dict()
    out = {f"reference_{k}" if k in ("status", "status_text") else k: record[k] for k in REFERENCE_METADATA if record.get(k)}
    if record.get("delisted_on"):
        out["delisted_on"] = record["delisted_on"]
    if record.get("renamed_to"):
        out["renamed_to"] = record["renamed_to"]
    return out


def first_run_references(context, client, registry, refs_store, rows):
    """Fetch the reference data of symbols on their first run (never fully fetched, no reference yet):
    one request each, paced with the bars. Returns the rows re-read (a delisting now shows)."""
    firsts = [row for row in rows if row.history_from is None]
    try:
        missing = set(refs_store.missing([row.symbol for row in firsts])) if firsts else set()
        if not missing:
            return rows
        refresh_references(client, refs_store, [row for row in firsts if row.symbol in missing], log=context.log)
        fresh = {row.symbol: row for row in registry.get_many([row.symbol for row in rows])}
        return [fresh.get(row.symbol, row) for row in rows]
    except Exception as exc:  # reference data never stops the bars; the weekly refresh tries again
        context.log.warning(f"reference data not fetched for this run's new symbols: {type(exc).__name__}: {exc}")
        return rows
