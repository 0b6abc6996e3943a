"""Many symbols' reference data at once: pages of Polygon's list of tickers where they pay, one
`/v3/reference/tickers/{ticker}` lookup elsewhere (`market_pipeline.reference.listing` plans the pages).

`ReferenceReads(client, rows, stored)` starts at once, in its own threads (HTTP only; the client's
in-flight slots and pacing hold for them like for every request):

- one walk of list pages per market (stocks and ETFs: `market=stocks`; crypto pairs: `market=crypto`)
  with at least two symbols to read, the others (and those in `singles`) looked up one by one;
- a listed symbol's record comes from its row (no `list_date`: its status text says the weekly
  refresh fills it in); a symbol the active list does not return (delisted, renamed, unknown) gets
  its own lookup, which tells a delisting from a rename and a 404 from a typo, unless its stored
  record already says it stopped trading (nothing to learn); a reused ticker (another composite
  FIGI) gets its lookup once, for the new security's list date that ends the stored history;
- a list page that fails (after the client's retries), loops or is malformed costs the reference of
  the symbols it did not answer, nothing else: each gets an `error` record saying why (the next run
  or the weekly refresh tries again). A missing API key is raised to whoever `get`s a record.

`get(symbol)` waits for one symbol's record, in any order; `close()` stops what has not started.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from contextlib import closing

from market_pipeline.polygon.client import MissingApiKey, PolygonClient, PolygonError
from market_pipeline.polygon.reference import lookup
from market_pipeline.polygon.tickers import polygon_ticker
from market_pipeline.reference.listing import (
    ListPageError,
    ListWalk,
    known_inactive,
    list_market,
    listed_record,
    parse_list_page,
)
from market_pipeline.reference.records import ReferenceRecord, error_record

RETRY_TEXT = "the next run or the weekly symbol_reference refresh tries again"
SAVE_BATCH = 500  # records saved in one transaction at most


class ReferenceReads:
    """The reference records of `rows` (tracked rows: `symbol`, `asset_class`), read as the module
    doc says. `stored`: symbol -> the record stored before (identity checks, list dates kept)."""

    def __init__(self, client: PolygonClient, rows, stored: dict[str, ReferenceRecord] | None = None, *,
                 singles=(), log=None):
        self._client, self._log = client, log or client.log
        self._stored = stored or {}
        self._cond = threading.Condition()
        self._results: dict[str, ReferenceRecord | BaseException] = {}
        self._closed = False
        singles = set(singles)
        markets: dict[str, list] = {}
        lookups = []
        for row in rows:
            if row.symbol in singles:
                lookups.append(row)
            else:
                markets.setdefault(list_market(row.asset_class), []).append(row)
        walks = []
        for market, members in markets.items():
            (walks.append((market, members)) if len(members) > 1 else lookups.extend(members))
        self._pool = ThreadPoolExecutor(client.max_in_flight + len(walks), thread_name_prefix="polygon-reference")
        for market, members in walks:
            self._pool.submit(self._walk, market, members)
        for row in lookups:
            self._lookup(row)

    def get(self, symbol: str) -> ReferenceRecord:
        """The symbol's record, waiting for it; raises what its read raised (a missing API key)."""
        with self._cond:
            self._cond.wait_for(lambda: symbol in self._results or self._closed)
            value = self._results.get(symbol)
        if value is None:
            raise CancelledError(f"{symbol}: reference reads closed")
        if isinstance(value, BaseException):
            raise value
        return value

    def ready(self, symbol: str) -> bool:
        """Whether `get(symbol)` would answer at once."""
        with self._cond:
            return symbol in self._results

    def close(self) -> None:
        """Cancel the lookups not started and stop the walks after their current page."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- threads -------------------------------------------------------------------------------

    def _put(self, symbol: str, value) -> None:
        with self._cond:
            self._results.setdefault(symbol, value)
            self._cond.notify_all()

    def _lookup(self, row) -> None:
        def look():  # a pool thread: HTTP only
            stored = self._stored.get(row.symbol)
            try:
                return lookup(self._client, row.symbol, row.asset_class, stored)
            except Exception as exc:  # a missing key (or a bug): raised again by get
                return exc

        try:
            future = self._pool.submit(look)
        except RuntimeError:  # closed meanwhile
            return
        future.add_done_callback(lambda f: None if f.cancelled() else self._put(row.symbol, f.result()))

    def _walk(self, market: str, rows) -> None:
        by_ticker = {polygon_ticker(row.symbol, row.asset_class): row for row in rows}
        walk = ListWalk(market, list(by_ticker), type="ETF" if all(r.asset_class == "etf" for r in rows) else None)
        try:
            while not self._closed and (params := walk.next_query()) is not None:
                what = f"list of {market} tickers from {params['ticker.gte']}"
                body = self._client._get_json(f"{self._client.base_url}/v3/reference/tickers", params, what=what,
                                              endpoint="reference_list")
                page = parse_list_page(body)
                if page.problems:
                    self._log.warning(f"{what}: {len(page.problems)} row(s) set aside: {'; '.join(page.problems[:5])}")
                found, absent = walk.take(page)
                for ticker in sorted(set(found) | set(absent)):
                    self._answered(by_ticker[ticker], found.get(ticker))
            if not self._closed:
                for ticker in walk.leftover():
                    self._lookup(by_ticker[ticker])
        except MissingApiKey as exc:
            for ticker in walk.remaining:
                self._put(by_ticker[ticker].symbol, exc)
        except (PolygonError, ListPageError) as exc:
            self._log.warning(f"reference of {len(walk.remaining)} {market} symbol(s) not read: {exc}; {RETRY_TEXT}")
            for ticker in walk.remaining:
                row = by_ticker[ticker]
                self._put(row.symbol, error_record(
                    row.symbol, row.asset_class, f"the list of {market} tickers could not be read, {RETRY_TEXT}: {exc}"))
        except Exception as exc:  # a bug: raised again by get
            for ticker in walk.remaining:
                self._put(by_ticker[ticker].symbol, exc)

    def _answered(self, row, listed: dict | None) -> None:
        """A symbol a page answered: its row (`listed`), or None when the active list does not have it."""
        stored = self._stored.get(row.symbol)
        try:
            if listed is None:
                self._put(row.symbol, stored) if known_inactive(stored) else self._lookup(row)
                return
            record, needs_lookup = listed_record(listed, row.symbol, row.asset_class, stored)
            self._lookup(row) if needs_lookup else self._put(row.symbol, record)
        except Exception as exc:  # a bug: raised again by get
            self._put(row.symbol, exc)


def refresh_references(client: PolygonClient, store, rows: Iterable, *, list_date_lookups: int | None = None,
                       log=None) -> list[ReferenceRecord]:
    """The weekly refresh: read and store the reference of each tracked row (`store`: a warehouse
    ReferenceStore), in pages of the list where they pay (`ReferenceReads`). Stocks and ETFs whose
    list date is still unknown (never looked up, or read from the list) get their own lookup, at most
    `list_date_lookups` a run (None: all), those fetched longest ago first: on a small plan the
    list dates fill in over several weeks. Records are saved on the calling thread, in the order of
    `rows`, up to SAVE_BATCH in a transaction; a record unchanged from the stored one (a delisting
    seen before) is not written again."""
    rows = list(rows)
    stored_rows = store.get_many([r.symbol for r in rows])
    stored = {symbol: s.record for symbol, s in stored_rows.items()}
    wanting = [r for r in rows if r.asset_class != "crypto" and needs_list_date(stored.get(r.symbol))]
    wanting.sort(key=lambda r: (r.symbol in stored_rows, stored_rows[r.symbol].fetched_at if r.symbol in stored_rows else None))
    if list_date_lookups is not None:
        wanting = wanting[: max(0, list_date_lookups)]
    records, unsaved = [], []
    with closing(ReferenceReads(client, rows, stored, singles={r.symbol for r in wanting}, log=log)) as reads:
        for i, row in enumerate(rows):
            record = reads.get(row.symbol)
            if record is not stored.get(row.symbol):
                unsaved.append(record)
            following = rows[i + 1].symbol if i + 1 < len(rows) else None
            if unsaved and (len(unsaved) >= SAVE_BATCH or following is None or not reads.ready(following)):
                store.save_many(unsaved)  # before waiting for the next one
                unsaved = []
            if log is not None and record.status != "ok":
                log.warning(f"{row.symbol}: reference {record.status}: {record.status_text}")
            records.append(record)
    return records


def needs_list_date(stored: ReferenceRecord | None) -> bool:
    """Whether a stock's or ETF's own lookup would still tell something the list does not: its list
    date (never looked up, or read from the list only)."""
    if stored is None:
        return True
    return stored.list_date is None and stored.active is not False and stored.status != "not_found"
