"""The symbol lifecycle inside the ohlcv_daily op: reference data fetched on a symbol's first run,
shown on its partition, and the table-wide freshness policy."""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from dagster import FreshnessPolicy

from market_pipeline.polygon.reference import lookup

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
    """The reference lookups of a run's new symbols (never fully fetched, no reference yet), each
    running just ahead of its symbol's bars instead of all of them before any bar.

    The lookups run in their own threads (HTTP only), at most `lead` (2 x max_in_flight) ahead of
    the symbol being prepared; the client's in-flight slots are shared with the bar fetches, so the
    run never has more than `max_in_flight` requests out, and the plan's rate covers both. Their
    records are saved on the calling thread, in order, when a symbol is `resolve`d, which the bars
    path does just before it prepares the symbol's fetch: a delisting is in the registry before its
    bars are planned. A failed lookup is logged once and ends the lookups of the run (reference data
    never stops the bars; the weekly refresh tries again).
    """

    def __init__(self, context, client, registry, refs_store, rows):
        self.context, self.registry, self.refs_store = context, registry, refs_store
        self._pool = None
        self._queue: list = []  # rows whose reference is still to be saved, in order
        self._pending: set[str] = set()
        self._futures: dict = {}  # symbol -> lookup submitted
        self._submitted = 0  # rows of _queue[0:_submitted] are submitted
        self.resolved: set[str] = set()  # the symbols whose reference this run saved
        firsts = [row for row in rows if row.history_from is None]
        try:
            missing = set(refs_store.missing([row.symbol for row in firsts])) if firsts else set()
            if not missing:
                return
            self._queue = [row for row in firsts if row.symbol in missing]
            self._stored = refs_store.get_many([row.symbol for row in self._queue])
        except Exception as exc:  # a database fault here: the bars go on, the weekly refresh retries
            self._give_up(exc)
            return
        self._pending = {row.symbol for row in self._queue}
        self._client = client
        self._lead = 2 * max(1, client.max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max(1, client.max_in_flight), thread_name_prefix="polygon-reference")
        self._top_up()

    @property
    def pending(self) -> set[str]:
        """The symbols whose reference is still to be resolved."""
        return self._pending

    def _look(self, row):  # any thread: HTTP only
        previous = self._stored.get(row.symbol)
        try:
            return lookup(self._client, row.symbol, row.asset_class, previous.record if previous else None)
        except Exception as exc:  # a missing key (or a bug): raised again on the calling thread
            return exc

    def _top_up(self) -> None:
        while self._pool is not None and self._submitted < min(len(self._queue), self._lead):
            row = self._queue[self._submitted]
            self._futures[row.symbol] = self._pool.submit(self._look, row)
            self._submitted += 1

    def resolve(self, symbols) -> None:
        """Save the lookups of `symbols` (and of every pending symbol before them), waiting for them."""
        wanted = {s for s in symbols if s in self._pending}
        while wanted and self._queue:
            row = self._queue.pop(0)
            self._submitted -= 1
            self._top_up()
            symbol = row.symbol
            self._pending.discard(symbol)
            wanted.discard(symbol)
            try:
                record = self._futures.pop(symbol).result()
                if isinstance(record, Exception):
                    raise record
                self.refs_store.save(record)
                self.resolved.add(symbol)
            except Exception as exc:
                self._give_up(exc)
                return
            if record.status != "ok":
                self.context.log.warning(f"{symbol}: reference {record.status}: {record.status_text}")

    def fresh(self, row):
        """The row as the registry has it now (after its reference was saved: a delisting shows)."""
        found = self.registry.get_many([row.symbol])
        return found[0] if found else row

    def _give_up(self, exc: Exception) -> None:
        self.context.log.warning(f"reference data not fetched for this run's new symbols: {type(exc).__name__}: {exc}")
        self.close()

    def close(self) -> None:
        """Cancel the lookups not started; those on the wire finish in their threads."""
        for future in self._futures.values():
            future.cancel()
        self._futures, self._queue, self._pending, self._submitted = {}, [], set(), 0
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
