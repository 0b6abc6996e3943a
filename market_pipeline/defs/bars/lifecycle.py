"""The symbol lifecycle inside the ohlcv_daily op: reference data fetched on a symbol's first run,
shown on its partition, and the table-wide freshness policy."""

import datetime as dt

from dagster import FreshnessPolicy

from market_pipeline.polygon.reference_list import SAVE_BATCH, ReferenceReads
from market_pipeline.warehouse.reference import StoredReference, registry_delisting
from market_pipeline.warehouse.timestamps import utcnow

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


class FirstRunReferences:
    """The reference data of a run's new symbols (never fully fetched, no reference yet), and of any
    symbol of the run whose reference could never be read (it is tried again), read in bulk
    (`ReferenceReads`: pages of Polygon's list of tickers where they cost fewer requests than one
    lookup per symbol, single-ticker lookups for the rest and for what the list does not return).

    The reads start at once in their own threads (HTTP only), side by side with the bars: the client's
    in-flight slots are shared, so the run never has more than `max_in_flight` requests out, and the
    plan's rate covers both. Their records are saved on the calling thread, in order, when a symbol
    is `resolve`d, which the bars path does just before it prepares the symbol's fetch: a delisting is
    in the registry before its bars are planned. A list page that fails gives its symbols an `error`
    record (the next run or the weekly refresh tries again); any other failure (a database fault) is
    logged once and ends the reference reads of the run: reference data never stops the bars.
    """

    def __init__(self, context, client, registry, refs_store, rows):
        self.context, self.registry, self.refs_store = context, registry, refs_store
        self._reads = None
        self._queue: list = []  # rows whose reference is still to be saved, in order
        self._pending: set[str] = set()
        self.resolved: set[str] = set()  # the symbols whose reference this run saved
        self.stored: dict = {}  # symbol -> StoredReference, as this run saved it
        self._client = client
        self._requests_before = dict(client.stats.by_endpoint)
        try:
            firsts = [row.symbol for row in rows if row.history_from is None]
            missing = set(refs_store.missing(firsts)) if firsts else set()
            missing |= refs_store.unfetched() & {row.symbol for row in rows}
            if not missing:
                return
            self._queue = [row for row in rows if row.symbol in missing]
            stored = refs_store.get_many([row.symbol for row in self._queue])
        except Exception as exc:  # a database fault here: the bars go on, the weekly refresh retries
            self._give_up(exc)
            return
        self._pending = {row.symbol for row in self._queue}
        self._reads = ReferenceReads(client, self._queue, {s: v.record for s, v in stored.items()}, log=context.log)

    @property
    def pending(self) -> set[str]:
        """The symbols whose reference is still to be resolved."""
        return self._pending

    def resolve(self, symbols) -> None:
        """Save the records of `symbols` (and of every pending symbol before them), waiting for them;
        the records already read after them are saved in the same transaction (at most SAVE_BATCH)."""
        wanted = {s for s in symbols if s in self._pending}
        if not wanted:
            return
        batch = []
        try:
            while self._queue and (wanted or (len(batch) < SAVE_BATCH and self._reads.ready(self._queue[0].symbol))):
                symbol = self._queue.pop(0).symbol
                self._pending.discard(symbol)
                wanted.discard(symbol)
                batch.append(self._reads.get(symbol))
            saved_at = utcnow()
            self.refs_store.save_many(batch, saved_at)
        except Exception as exc:
            self._give_up(exc)
            return
        for record in batch:
            self.resolved.add(record.symbol)
            self.stored[record.symbol] = StoredReference(record, saved_at)
            if record.status != "ok":
                self.context.log.warning(f"{record.symbol}: reference {record.status}: {record.status_text}")

    def fresh(self, row):
        """The row as the registry has it now (after its reference was saved: a delisting shows); read
        again only when the saved record changed its delisting."""
        saved = self.stored.get(row.symbol)
        if saved is None:
            return row
        applies, delisted = registry_delisting(saved.record)
        if not applies or delisted == row.delisted_on:
            return row
        found = self.registry.get_many([row.symbol])
        return found[0] if found else row

    def _give_up(self, exc: Exception) -> None:
        self.context.log.warning(f"reference data not fetched for this run's new symbols: {type(exc).__name__}: {exc}")
        self._close_reads()

    def _close_reads(self) -> None:
        if self._reads is not None:
            self._reads.close()
            self._reads = None
        self._queue, self._pending = [], set()

    def close(self) -> None:
        """Stop the reads not started (those on the wire finish in their threads); log what they cost."""
        if self._reads is not None and self.resolved:
            now = self._client.stats.by_endpoint
            pages = now.get("reference_list", 0) - self._requests_before.get("reference_list", 0)
            lookups = now.get("reference", 0) - self._requests_before.get("reference", 0)
            self.context.log.info(
                f"reference data of {len(self.resolved)} symbol(s): {pages} list page(s), {lookups} single-ticker "
                "lookup(s); a symbol read from the list gets its list date from the weekly symbol_reference refresh"
            )
        self._close_reads()
