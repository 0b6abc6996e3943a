"""Reading Polygon's corporate-action lists: `/stocks/v1/splits` and `/stocks/v1/dividends`.

Reuses the client's transport (`PolygonClient._get_json`: pacing, retries, the key in the header
only). Tickers are batched with `ticker.any_of` and every page is followed through `next_url`
(`PageGuard`: a repeated `next_url`, one leaving the API's origin or an endless chain is an error,
never a shortened list). The deprecated `/v3/reference/splits` and `/v3/reference/dividends`
are used only when the v1 endpoint answers 404 (then for the rest of the client's life); any other
error is raised as the client's `PolygonError`.

The batches of a read are sent `max_in_flight` at a time (the client's setting; its pacer holds the
plan's rate), their rows kept in batch order.

Two kinds of reads:
- `read(kind, tickers)`: the whole lists of these tickers (a complete re-read: an event absent from
  it has been withdrawn); ceil(len(tickers) / batch_size) requests plus extra pages.
- `read(kind, None, since=day)`: every ticker's events dated on or after `day`, in a constant
  number of requests however many symbols are tracked (one page holds up to 5000 rows).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Sequence
from contextlib import closing
from urllib.parse import urlencode

from market_pipeline.corporate_actions import parse_dividend, parse_split
from market_pipeline.polygon.client import PolygonClient, PolygonError
from market_pipeline.polygon.inflight import in_flight
from market_pipeline.polygon.pagination import PageGuard, PaginationError

BATCH_SIZE = 100  # tickers per `ticker.any_of` (keeps the URL short)
V1 = {"splits": "/stocks/v1/splits", "dividends": "/stocks/v1/dividends"}
V3 = {"splits": "/v3/reference/splits", "dividends": "/v3/reference/dividends"}
DATE_FIELD = {"splits": "execution_date", "dividends": "ex_dividend_date"}
LIMIT = {"v1": 5000, "v3": 1000}


@dataclasses.dataclass
class ListRead:
    """The parsed rows of one read and what it covered."""

    kind: str
    events: list  # Split or Dividend
    tickers: list[str] | None  # None: every ticker (a date window)
    since: dt.date | None
    requests: int = 0
    version: str = "v1"

    @property
    def complete_symbols(self) -> list[str]:
        """Symbols whose whole list was read (withdrawals can be decided for them)."""
        return list(self.tickers or []) if self.since is None else []


class CorporateActionsClient:
    def __init__(self, client: PolygonClient, batch_size: int = BATCH_SIZE):
        self.client = client
        self.batch_size = batch_size
        self.version = "v1"
        self._lock = threading.Lock()

    def read(self, kind: str, tickers: Sequence[str] | None, *, since: dt.date | None = None) -> ListRead:
        if kind not in V1:
            raise ValueError(f"unknown corporate-action list {kind!r}: use splits or dividends")
        tickers = None if tickers is None else sorted(set(tickers))
        result = ListRead(kind, [], tickers, since)
        batches = [None] if tickers is None else [
            tickers[i : i + self.batch_size] for i in range(0, len(tickers), self.batch_size)
        ]
        parse = parse_split if kind == "splits" else parse_dividend
        # the batches' requests in flight at once (the client's max_in_flight; its pacer keeps the plan's rate)
        read = in_flight(batches, lambda batch: self._rows(kind, batch, since), max_in_flight=getattr(self.client, "max_in_flight", 1))
        with closing(read):
            for _, (rows, requests) in read:
                result.requests += requests
                result.events.extend(parse(row) for row in rows)
        result.version = self.version
        return result

    def splits(self, tickers, *, since=None) -> ListRead:
        return self.read("splits", tickers, since=since)

    def dividends(self, tickers, *, since=None) -> ListRead:
        return self.read("dividends", tickers, since=since)

    def _params(self, kind: str, batch, since, version: str) -> dict:
        params = {"limit": LIMIT[version]}
        if batch is not None:
            params["ticker.any_of"] = ",".join(batch)
        if since is not None:
            params[f"{DATE_FIELD[kind]}.gte"] = since.isoformat()
        return params

    def _rows(self, kind: str, batch, since) -> tuple[list[dict], int]:
        """One batch's rows, every page followed, and the requests it took (any thread)."""
        what = f"{kind} of {len(batch)} ticker(s)" if batch is not None else f"{kind} since {since}"
        base = self.client.base_url
        requests = [0]
        while True:
            version = self.version
            url, params = f"{base}{(V1 if version == 'v1' else V3)[kind]}", self._params(kind, batch, since, version)
            try:
                return self._pages(url, params, what, kind, requests), requests[0]
            except PolygonError as exc:
                if exc.status == 404 and version == "v1":
                    with self._lock:
                        first, self.version = self.version == "v1", "v3"
                    if first:  # the first batch to learn it says so
                        self.client.log.warning("%s: %s answered 404; falling back to the deprecated v3 endpoint", what, V1[kind])
                    continue
                raise

    def _pages(self, url: str, params: dict | None, what: str, kind: str, requests: list[int]) -> list[dict]:
        rows: list[dict] = []
        first = f"{url}?{urlencode(params)}" if params else url  # the whole first URL, so a repeat of it is seen
        guard = PageGuard(first, self.client.base_url, what=what, max_pages=self.client.max_pages)
        url = first
        while True:
            body = self.client._get_json(url, None, what=what, endpoint=kind)
            requests[0] += 1
            rows.extend(r for r in body.get("results") or [] if isinstance(r, dict))
            next_url = body.get("next_url")
            if not next_url:
                return rows
            try:
                url = guard.follow(next_url)
            except PaginationError as exc:
                raise PolygonError(str(exc)) from None
