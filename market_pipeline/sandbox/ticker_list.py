"""The sandbox's list of tickers, `GET /v3/reference/tickers`, and the knobs that break it.

Answers like Polygon's All Tickers endpoint: one row per security that traded under a ticker (the
active list by default, `active=false` for the delisted and renamed ones, with `delisted_utc`), no
`list_date` in any row. Filters: `ticker`, `ticker.gte`/`.gt`/`.lte`/`.lt`, `market`, `type`,
`exchange`, `active`; `sort` (a row field, default `ticker`) and `order` (`asc`/`desc`); `limit`
(default 100, at most 1000). When more rows match, `next_url` carries a `cursor` (every filter of the
query and the last row's position), never the key.

Knob (`SandboxServer.ticker_list_fault(kind, times=None, status=503)`), for the next `times` list
answers (None: until `clear_ticker_list_faults()`):

- `error`: HTTP `status` (429 with Polygon's rate-limit body, 5xx with an HTML page);
- `loop`: the answer's `next_url` points back at the query's first page (a cursor loop);
- `ignore_bounds`: `ticker.gte`/`.gt`/`.lte`/`.lt` are ignored (a reader moving its bound sees the same page);
- `truncated`: half of the body (invalid JSON);
- `malformed`: valid JSON whose `results` is not a list of rows.
"""

from __future__ import annotations

import json
import threading

from market_pipeline import calendars
from market_pipeline.sandbox import reference as lifecycle
from market_pipeline.sandbox.protocol import (
    DEFAULT_FAILURE_BODY,
    MSG_RATE_LIMIT,
    REFERENCE_DEFAULT_LIMIT,
    REFERENCE_MAX_LIMIT,
    Response,
    _BadRequest,
    _error,
    _json_response,
    _parse_limit,
    _Request,
    decode_cursor,
    encode_cursor,
)

LIST_FAULTS = ("error", "loop", "ignore_bounds", "truncated", "malformed")
LIST_SORTS = (
    "ticker", "name", "market", "locale", "primary_exchange", "type", "currency_name", "cik", "composite_figi",
    "share_class_figi", "last_updated_utc", "delisted_utc",
)
BOUNDS = {"ticker.gte": str.__ge__, "ticker.gt": str.__gt__, "ticker.lte": str.__le__, "ticker.lt": str.__lt__}
FILTERS = ("ticker", "ticker.gte", "ticker.gt", "ticker.lte", "ticker.lt", "market", "type", "exchange", "active", "sort", "order", "limit")


class TickerListMixin:
    """The list endpoint and its knobs (mixed into `SandboxServer`)."""

    def _init_ticker_list(self) -> None:
        self._list_lock = threading.Lock()
        self._list_faults: dict[str, list] = {}  # kind -> [remaining answers or None, status]
        self._list_cache: tuple | None = None  # (universe, lifecycle, day, rows sorted by ticker)

    # ---- knobs ---------------------------------------------------------------------------------

    def ticker_list_fault(self, kind: str, times: int | None = None, status: int = 503) -> None:
        """Break the next `times` list answers (None: every one until cleared) the way `kind` says."""
        if kind not in LIST_FAULTS:
            raise ValueError(f"unknown ticker list fault {kind!r}: use one of {', '.join(LIST_FAULTS)}")
        if kind == "error" and status != 429 and not 500 <= status <= 599:
            raise ValueError(f"a ticker list error is 429 or 5xx, not {status}")
        if times is not None and times < 1:
            raise ValueError("times must be 1 or more (None: until cleared)")
        with self._list_lock:
            self._list_faults[kind] = [times, status]

    def clear_ticker_list_faults(self) -> None:
        with self._list_lock:
            self._list_faults.clear()

    def _list_fault(self, kind: str) -> int | None:
        """The fault's status when `kind` applies to this answer (counting it), else None."""
        with self._list_lock:
            fault = self._list_faults.get(kind)
            if fault is None:
                return None
            if fault[0] is not None:
                fault[0] -= 1
                if fault[0] <= 0:
                    del self._list_faults[kind]
            return fault[1]

    # ---- the endpoint --------------------------------------------------------------------------

    def _tickers(self, request: _Request) -> Response:
        status = self._list_fault("error")
        if status is not None:
            if status == 429:
                return _error(429, request.request_id, "ERROR", MSG_RATE_LIMIT)
            return Response(status, DEFAULT_FAILURE_BODY.encode(), request.request_id, content_type="text/html")
        query = request.query
        if "cursor" in query:
            params = decode_cursor(query["cursor"])
            marker = params.pop("page_marker", None)
            first = dict(params)
        else:
            params, marker = {k: v for k, v in query.items() if k in FILTERS}, None
            first = params
        limit = _parse_limit(params.get("limit"), REFERENCE_DEFAULT_LIMIT, REFERENCE_MAX_LIMIT)
        sort, order = params.get("sort", "ticker"), params.get("order", "asc")
        if sort not in LIST_SORTS:
            raise _BadRequest(f"Could not parse the query parameter: 'sort'. Use one of {', '.join(LIST_SORTS)}")
        if order not in ("asc", "desc"):
            raise _BadRequest("Could not parse the query parameter: 'order'. Use asc or desc")
        active = params.get("active", "true").lower() != "false"
        rows = [row for row in self._list_rows() if row["active"] is active]
        rows = _filtered(rows, params, bounds=self._list_fault("ignore_bounds") is None)

        def position(row) -> list:
            return [str(row.get(sort) or ""), row["ticker"], row.get("composite_figi") or ""]

        rows.sort(key=position, reverse=order == "desc")
        if marker is not None:
            after = json.loads(marker)
            rows = [row for row in rows if (position(row) < after if order == "desc" else position(row) > after)]
        page = rows[:limit]
        body = {"results": page, "status": "OK", "request_id": request.request_id, "count": len(page)}
        base = f"http://{request.host}/v3/reference/tickers"
        if len(rows) > limit:
            cursor = encode_cursor({**params, "limit": str(limit), "sort": sort, "order": order,
                                    "page_marker": json.dumps(position(page[-1]))})
            body["next_url"] = f"{base}?cursor={cursor}"
        if self._list_fault("loop") is not None:
            body["next_url"] = f"{base}?cursor={encode_cursor({**first, 'limit': str(limit), 'sort': sort, 'order': order})}"
        if self._list_fault("malformed") is not None:
            body["results"] = {"rows": len(page), "note": "not a list"}
        response = _json_response(200, body, request.request_id)
        if self._list_fault("truncated") is not None:
            response.body = response.body[: len(response.body) // 2]
        return response

    def _list_rows(self) -> list[dict]:
        """Every row of the list as of today, sorted by ticker (cached until the universe, the
        lifecycle or the day changes)."""
        today = self.now().astimezone(calendars.UTC).date()
        universe, book = self._universe, self._lifecycle  # both replaced as a whole on every change
        cached = self._list_cache
        if cached is not None and cached[0] is universe and cached[1] is book and cached[2] == today:
            return list(cached[3])
        rows = [row for info in sorted(universe.values(), key=lambda i: i.ticker)
                for row in lifecycle.list_rows(info, book, today)]
        self._list_cache = (universe, book, today, rows)
        return list(rows)


def _filtered(rows: list[dict], params: dict[str, str], *, bounds: bool) -> list[dict]:
    if params.get("ticker"):
        rows = [r for r in rows if r["ticker"] == params["ticker"]]
    if bounds:
        for name, keep in BOUNDS.items():
            if params.get(name):
                rows = [r for r in rows if keep(r["ticker"], params[name])]
    for name, field in (("market", "market"), ("type", "type"), ("exchange", "primary_exchange")):
        if params.get(name):
            rows = [r for r in rows if r.get(field) == params[name]]
    return rows
