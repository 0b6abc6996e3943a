"""The sandbox's endpoints: aggregates (range, grouped daily) and reference tickers."""

from __future__ import annotations

import datetime as dt

import numpy as np

from market_pipeline.sandbox.faults import _NO_EDITS, _index_of
from market_pipeline.sandbox.protocol import (
    _DATE_RE,
    _MS_RE,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MSG_BAD_TIME,
    MSG_TIMEFRAME,
    MSG_TO_BEFORE_FROM,
    Response,
    _BadRequest,
    _error,
    _json_response,
    _Request,
    decode_cursor,
    encode_cursor,
    _parse_limit,
)

import json
from urllib.parse import unquote

from market_pipeline import calendars
from market_pipeline.sandbox import market as synthetic
from market_pipeline.sandbox import reference as lifecycle

class Endpoints:
    """The endpoint handlers of `SandboxServer` (mixed into the server)."""

    def _endpoint(self, request: _Request) -> Response:
        handlers = {
            "aggs_range": self._aggs_range,
            "grouped_stocks": self._grouped,
            "grouped_crypto": self._grouped,
            "tickers": self._tickers,
            "ticker_detail": self._ticker_detail,
            "ticker_events": self._ticker_events,
            "splits": self._corporate_actions,
            "dividends": self._corporate_actions,
            "splits_v3": self._corporate_actions,
            "dividends_v3": self._corporate_actions,
        }
        return handlers[request.endpoint](request)

    # ---- dates -----------------------------------------------------------------------------

    def _last_served(self, crypto: bool) -> dt.date:
        """The latest completed session at `now()`: bars after it are in the future."""
        return calendars.latest_completed_session("crypto" if crypto else "stock", self.now())

    def _plan_start(self) -> dt.date | None:
        """The oldest date the plan serves: `history_limit_days` before today (None: no limit)."""
        if self.history_limit_days is None:
            return None
        return self.now().astimezone(calendars.UTC).date() - dt.timedelta(days=self.history_limit_days)

    # ---- aggregates ------------------------------------------------------------------------

    def _aggs_range(self, request: _Request) -> Response:
        raw_ticker, multiplier, timespan, raw_from, raw_to = request.args
        ticker = unquote(raw_ticker)
        if multiplier != "1" or timespan != "day":
            raise _BadRequest(
                f"The sandbox serves multiplier 1 and timespan 'day' only, not {multiplier}/{timespan}"
            )
        limit, sort = _range_params(request.query)
        adjusted = request.query.get("adjusted", "true").lower() != "false"
        asset_class = synthetic.asset_class_of(ticker)
        from_ms = _time_bound(raw_from, "from", asset_class, end=False)
        to_ms = _time_bound(raw_to, "to", asset_class, end=True)
        if to_ms < from_ms:
            raise _BadRequest(MSG_TO_BEFORE_FROM)
        plan_start = self._plan_start()
        if plan_start is not None and from_ms < calendars.ms_at_local_midnight(plan_start, asset_class):
            return _error(403, request.request_id, "NOT_AUTHORIZED", MSG_TIMEFRAME)

        series = self._series(ticker, adjusted)
        indices, edited = self._selection(series, ticker, from_ms, to_ms)
        last_hi = int(np.searchsorted(series.grid.dates, np.datetime64(self._last_served(series.crypto), "D"), side="right"))
        indices = self._wire_indices(ticker, indices, len(series.grid.dates), last_hi)
        if sort == "desc":
            indices = indices[::-1]
        page = min(limit, self.page_size or limit)
        next_url = None
        if len(indices) > page:
            next_url = _next_range_url(request, int(series.grid.t_range[indices[page]]), limit, sort)
        indices = indices[:page]
        last_t = int(series.grid.t_range[indices[-1]]) if len(indices) else None
        next_url = self._wire_next_url(ticker, request.host, request.path, request.query, next_url, from_ms, to_ms, last_t)
        head = {
            "ticker": ticker,
            "queryCount": len(indices),
            "resultsCount": len(indices),
            "adjusted": adjusted,
        }
        results, count = self._wire_results(ticker, series, indices, _joined(series, indices, edited), "cursor" not in request.query)
        head["queryCount"] = head["resultsCount"] = count
        return self._aggregate_body(request, head, results, count, next_url)

    def _selection(
        self, series: synthetic.Series, ticker: str, from_ms: int, to_ms: int
    ) -> tuple[np.ndarray, dict[int, bytes]]:
        """Ascending indices of the bars to serve, and the edited JSON of some of them."""
        grid = series.grid
        edits = self._edits.get(ticker, _NO_EDITS)
        lo = int(np.searchsorted(grid.t_range, from_ms, side="left"))
        if edits.listing_date is not None:
            lo = max(lo, int(np.searchsorted(grid.dates, np.datetime64(edits.listing_date, "D"))))
        hi = int(np.searchsorted(grid.t_range, to_ms, side="right"))
        last = np.datetime64(self._last_served(series.crypto), "D")
        hi = max(lo, min(hi, int(np.searchsorted(grid.dates, last, side="right"))))
        indices = lifecycle.traded(self._lifecycle, ticker, grid.dates, np.arange(lo, hi))
        overrides = edits.overrides(series, lo, hi)
        dropped = [i for i, fragment in overrides.items() if fragment is None]
        if dropped:
            indices = indices[~np.isin(indices, dropped)]
        return indices, {i: fragment for i, fragment in overrides.items() if fragment is not None}

    def _grouped(self, request: _Request) -> Response:
        crypto = request.endpoint == "grouped_crypto"
        day = _iso_date(request.args[0])
        if day is None:
            raise _BadRequest(MSG_BAD_TIME.format("date"))
        plan_start = self._plan_start()
        if plan_start is not None and day < plan_start:
            return _error(403, request.request_id, "NOT_AUTHORIZED", MSG_TIMEFRAME)
        adjusted = request.query.get("adjusted", "true").lower() != "false"
        rows = [] if day > self._last_served(crypto) else self._grouped_rows(day, crypto, adjusted)
        rows += self._wire_grouped_rows(crypto) if rows else []
        head = {"queryCount": len(rows), "resultsCount": len(rows), "adjusted": adjusted}
        return self._aggregate_body(request, head, b",".join(rows), len(rows), None)

    def _grouped_rows(self, day: dt.date, crypto: bool, adjusted: bool = True) -> list[bytes]:
        """One row per universe ticker of the market with a bar on `day`, edits applied."""
        market_name = "crypto" if crypto else "stocks"
        tickers = sorted(t for t, info in self._universe.items() if info.market == market_name)
        rows = []
        grid = synthetic.market_grid(crypto)
        day_index = _index_in(grid, day)
        for ticker in tickers:
            edits = self._edits.get(ticker, _NO_EDITS)
            if (edits is _NO_EDITS and day_index is not None and synthetic.is_crypto_ticker(ticker) == crypto
                    and not self._split_steps(ticker, adjusted)):
                fragment = synthetic.bar_fragment(self._lifecycle.series_ticker(ticker), day_index)  # the usual case, from a small cache
                if fragment is not None and self._lifecycle.trades_on(ticker, day):
                    rows.append(synthetic.grouped_row(ticker, fragment, int(grid.t_range[day_index]), int(grid.t_grouped[day_index])))
                if fragment is not None:
                    continue
            series = self._series(ticker, adjusted)
            i = _index_of(series, day)
            if i is None or (edits.listing_date is not None and day < edits.listing_date):
                continue
            if not self._lifecycle.trades_on(ticker, day):
                continue
            fragment = edits.overrides(series, i, i + 1).get(i, series.fragment(i))
            if fragment is not None:
                grid = series.grid
                rows.append(
                    synthetic.grouped_row(ticker, fragment, int(grid.t_range[i]), int(grid.t_grouped[i]))
                )
        return rows

    def _aggregate_body(self, request: _Request, head: dict, results, count: int, next_url) -> Response:
        """An aggregates body in Polygon's key order; no `results`/`count` keys when there are no bars.

        `results` is the bars' JSON (bytes-like); it is copied once, into the body.
        """
        status = "DELAYED" if self.delayed else "OK"
        parts = [json.dumps(head, separators=(",", ":"))[:-1].encode()]
        if count:
            parts += [b',"results":[', results, b"]"]
        parts.append(f',"status":"{status}","request_id":"{request.request_id}"'.encode())
        if count:
            parts.append(b',"count":%d' % count)
        if next_url:
            parts.append(b',"next_url":' + json.dumps(next_url).encode())
        parts.append(b"}")
        return Response(200, b"".join(parts), request.request_id)

    # ---- reference -------------------------------------------------------------------------

    def _ticker_detail(self, request: _Request) -> Response:
        """The ticker as of today, or as of `?date=` (see reference.py)."""
        ticker = unquote(request.args[0])
        day = self.now().astimezone(calendars.UTC).date()
        if request.query.get("date"):
            day = _iso_date(request.query["date"])
            if day is None:
                raise _BadRequest(MSG_BAD_TIME.format("date"))
        listing_date = self._edits.get(ticker, _NO_EDITS).listing_date
        row = lifecycle.detail_row(self._universe.get(ticker), ticker, self._lifecycle, day, listing_date)
        if row is None:
            return _error(404, request.request_id, "NOT_FOUND", "Ticker not found.")
        return _json_response(
            200, {"results": row, "status": "OK", "request_id": request.request_id}, request.request_id
        )

    def _ticker_events(self, request: _Request) -> Response:
        """`/vX/reference/tickers/{ticker or FIGI}/events?types=ticker_change`."""
        ident = unquote(request.args[0])
        if request.query.get("types", "ticker_change") != "ticker_change":
            raise _BadRequest("The sandbox serves types=ticker_change only")
        day = self.now().astimezone(calendars.UTC).date()
        result = lifecycle.events_result(ident, self._lifecycle, day, ident in self._universe)
        if result is None:
            return _error(404, request.request_id, "NOT_FOUND", "Ticker not found.")
        return _json_response(
            200, {"results": result, "status": "OK", "request_id": request.request_id}, request.request_id
        )


def _range_params(query: dict[str, str]) -> tuple[int, str]:
    """`limit` and `sort` from the query, or from the cursor when there is one."""
    params = decode_cursor(query["cursor"]) if "cursor" in query else query
    sort = params.get("sort", "asc")
    if sort not in ("asc", "desc"):
        raise _BadRequest("Could not parse the query parameter: 'sort'. Use asc or desc")
    if "cursor" in query and sort == "desc":
        raise _BadRequest("A cursor cannot page through sort=desc results: request sort=asc")
    return _parse_limit(params.get("limit"), DEFAULT_LIMIT, MAX_LIMIT), sort


def _iso_date(raw: str) -> dt.date | None:
    """A strict `YYYY-MM-DD` date, or None."""
    try:
        return dt.date.fromisoformat(raw) if _DATE_RE.match(raw) else None
    except ValueError:
        return None


def _time_bound(raw: str, name: str, asset_class: str, *, end: bool) -> int:
    """Unix ms of a `from` (start of its day) or `to` (end of its day) given as a date or Unix ms."""
    if _MS_RE.match(raw):
        return int(raw)
    day = _iso_date(raw)
    if day is None:
        raise _BadRequest(MSG_BAD_TIME.format(name))
    if not end:
        return calendars.ms_at_local_midnight(day, asset_class)
    if day == dt.date.max:  # no next day to start
        return calendars.ms_at_local_midnight(day, asset_class) + 86_399_999
    return calendars.ms_at_local_midnight(day + dt.timedelta(days=1), asset_class) - 1


def _next_range_url(request: _Request, next_from_ms: int, limit: int, sort: str) -> str:
    """The request's URL with `from` set to the next bar's window and only a cursor as query."""
    segments = request.path.split("/")
    segments[-2] = str(next_from_ms)
    cursor = encode_cursor({"limit": str(limit), "sort": sort})
    return f"http://{request.host}{'/'.join(segments)}?cursor={cursor}"


def _joined(series: synthetic.Series, indices: np.ndarray, edited: dict[int, bytes]):
    """The JSON objects of the bars at `indices`, comma-separated; a view of the series when contiguous."""
    if len(indices) == 0:
        return b""
    first, last = int(indices[0]), int(indices[-1])
    if not edited and last - first == len(indices) - 1:
        return series.joined(first, last + 1)
    return b",".join(edited.get(i) or series.fragment(i) for i in indices.tolist())


def _index_in(grid: synthetic.Grid, day: dt.date) -> int | None:
    """The index of `day` in a market's bar dates, or None if it has no bar."""
    target = np.datetime64(day, "D")
    i = int(np.searchsorted(grid.dates, target))
    return i if i < len(grid.dates) and grid.dates[i] == target else None
