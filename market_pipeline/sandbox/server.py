"""A Polygon-compatible HTTP server on loopback, serving the synthetic market of `market.py`.

Stdlib only: `http.server.ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive. Every response
carries `Content-Length`, `X-Request-Id` and `X-Sandbox: synthetic`. The wire format (bodies, key
order, errors, pagination, auth) follows /work/shared/POLYGON_API.md.

Knobs and fault injection live on the `SandboxServer` instance and may change while it serves:

- plain attributes: `page_size`, `rate_limit_per_minute`, `retry_after_seconds`, `error_rate`,
  `latency_ms`, `delayed`, `history_limit_days`, `now`, `api_keys`;
- schedules: `fail_next(n, status, body)`, `truncate_next(n)`;
- bar edits: `drop_bars`, `corrupt_bars`, `revise_bars`, `set_listing_date`, `clear_knobs`;
- universe: `add_to_universe`;
- observation: `request_counts()`, `reset_counts()`, `request_log()`.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import json
import logging
import random
import re
import signal
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import numpy as np

from market_pipeline import calendars
from market_pipeline.sandbox import market as synthetic

logger = logging.getLogger(__name__)

SANDBOX_API_KEY = "sandbox-key"
DEFAULT_LIMIT = 5000
MAX_LIMIT = 50_000
REFERENCE_DEFAULT_LIMIT = 100
REFERENCE_MAX_LIMIT = 1000
RATE_WINDOW_SECONDS = 60.0
REQUEST_LOG_SIZE = 10_000
SHUTDOWN_POLL_SECONDS = 0.02  # how long stop() may wait for the serving loop to notice
ENDPOINTS = ("aggs_range", "grouped_stocks", "grouped_crypto", "tickers", "ticker_detail", "other")

MSG_RATE_LIMIT = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription "
    "to continue. https://massive.com/pricing"
)
MSG_TIMEFRAME = (
    "Your plan doesn't include this data timeframe. Please upgrade your plan at https://massive.com/pricing"
)
MSG_BAD_TIME = "Could not parse the time parameter: '{}'. Use YYYY-MM-DD or Unix MS Timestamps"
MSG_TO_BEFORE_FROM = "The parameter 'to' cannot be a time that occurs before 'from'"
DEFAULT_FAILURE_BODY = "<html><head><title>503 Service Temporarily Unavailable</title></head></html>"

_ROUTES = (
    ("aggs_range", re.compile(r"^/v2/aggs/ticker/([^/]+)/range/([^/]+)/([^/]+)/([^/]+)/([^/]+)$")),
    ("grouped_stocks", re.compile(r"^/v2/aggs/grouped/locale/us/market/stocks/([^/]+)$")),
    ("grouped_crypto", re.compile(r"^/v2/aggs/grouped/locale/global/market/crypto/([^/]+)$")),
    ("tickers", re.compile(r"^/v3/reference/tickers$")),
    ("ticker_detail", re.compile(r"^/v3/reference/tickers/([^/]+)$")),
)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MS_RE = re.compile(r"^\d{1,14}$")  # up to year 5138


# --------------------------------------------------------------------------------------------
# Requests, responses and small helpers


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One logged request. `path` has any `apiKey` value redacted; the key itself is never kept."""

    method: str
    path: str
    key_source: str | None  # "header", "query" or None (no key)
    endpoint: str
    status: int


@dataclasses.dataclass
class Response:
    """What the handler writes: status, body bytes and extra headers."""

    status: int
    body: bytes
    request_id: str
    content_type: str = "application/json"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Request:
    endpoint: str
    args: tuple[str, ...]
    path: str
    query: dict[str, str]
    host: str
    request_id: str


class _BadRequest(Exception):
    """A 400 with Polygon's `error` text."""


def _json_response(status: int, payload: dict, request_id: str) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode(), request_id)


def _error(status: int, request_id: str, status_word: str, text: str) -> Response:
    """Polygon's error body: `ERROR` carries `error`, `NOT_AUTHORIZED`/`NOT_FOUND` carry `message`."""
    key = "error" if status_word == "ERROR" else "message"
    return _json_response(status, {"status": status_word, "request_id": request_id, key: text}, request_id)


def encode_cursor(params: dict[str, str]) -> str:
    """Unpadded base64url of a query string, the form of Polygon's `cursor`."""
    return base64.urlsafe_b64encode(urlencode(params).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, str]:
    """The query parameters inside a cursor; `_BadRequest` when it is not one."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        return dict(parse_qsl(raw, strict_parsing=True))
    except ValueError:
        raise _BadRequest("Invalid cursor") from None


def _parse_limit(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    try:
        limit = int(value)
    except ValueError:
        raise _BadRequest("Could not parse the query parameter: 'limit'") from None
    return min(max(limit, 1), maximum)


def _as_dates(dates: dt.date | str | Iterable[dt.date | str]) -> list[dt.date]:
    if isinstance(dates, (str, dt.date)):
        dates = [dates]
    return [dt.date.fromisoformat(d) if isinstance(d, str) else _plain_date(d) for d in dates]


def _plain_date(value) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


@dataclasses.dataclass(frozen=True)
class _TickerEdits:
    """The edits of one ticker, replaced as a whole on change (readers need no lock)."""

    dropped: frozenset[dt.date] = frozenset()
    corrupted: dict[dt.date, str] = dataclasses.field(default_factory=dict)  # never mutated
    revised: dict[dt.date, float] = dataclasses.field(default_factory=dict)  # never mutated
    listing_date: dt.date | None = None

    def overrides(self, series: synthetic.Series, lo: int, hi: int) -> dict[int, bytes | None]:
        """Bar index -> edited JSON (None: dropped) for the bars in [lo, hi)."""
        result: dict[int, bytes | None] = {}
        for day in self.dropped | self.corrupted.keys() | self.revised.keys():
            i = _index_of(series, day)
            if i is None or not lo <= i < hi:
                continue
            if day in self.dropped:
                result[i] = None
            else:
                result[i] = synthetic.edit_bar(
                    series.fragment(i), self.revised.get(day), self.corrupted.get(day)
                )
        return result


_NO_EDITS = _TickerEdits()


def _index_of(series: synthetic.Series, day: dt.date) -> int | None:
    target = np.datetime64(day, "D")
    i = int(np.searchsorted(series.grid.dates, target))
    return i if i < len(series.grid.dates) and series.grid.dates[i] == target else None


# --------------------------------------------------------------------------------------------
# The server


class SandboxServer:
    """A Polygon-compatible sandbox on loopback. Use as a context manager or `start()`/`stop()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        page_size: int | None = None,
        api_keys: Iterable[str] = (SANDBOX_API_KEY,),
        rate_limit_per_minute: int | None = None,
        retry_after_seconds: int | None = None,
        error_rate: float = 0.0,
        latency_ms: float = 0.0,
        delayed: bool = False,
        history_limit_days: int | None = None,
        now: Callable[[], dt.datetime] | None = None,
        seed: int = 0,
    ):
        self.host, self._requested_port = host, port
        self.page_size = page_size
        self.api_keys = frozenset(api_keys)
        self.rate_limit_per_minute = rate_limit_per_minute
        self.retry_after_seconds = retry_after_seconds
        self.error_rate = error_rate
        self.latency_ms = latency_ms
        self.delayed = delayed
        self.history_limit_days = history_limit_days
        self.now = now or (lambda: dt.datetime.now(calendars.UTC))
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._failures: collections.deque[tuple[int, str]] = collections.deque()
        self._truncations = 0
        self._admitted: collections.deque[float] = collections.deque()
        self._counts = collections.Counter()
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self._edits: dict[str, _TickerEdits] = {}
        self._universe = {info.ticker: info for info in synthetic.DEFAULT_UNIVERSE}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> "SandboxServer":
        """Bind, then serve in a daemon thread; returns once the socket is listening."""
        if self._httpd is not None:
            raise RuntimeError("the sandbox server is already running")
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket and every open connection."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not running: call start() first")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL, e.g. `http://127.0.0.1:54321`."""
        return f"http://{self.host}:{self.port}"

    # ---- fault schedules -------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 503, body: str = DEFAULT_FAILURE_BODY) -> None:
        """The next n requests fail with `status` and `body` (HTML when it starts with '<')."""
        with self._lock:
            self._failures.extend([(status, body)] * n)

    def truncate_next(self, n: int = 1) -> None:
        """The next n responses send only the first half of their body (invalid JSON)."""
        with self._lock:
            self._truncations += n

    # ---- bar edits -------------------------------------------------------------------------

    def drop_bars(self, ticker: str, dates) -> None:
        """Never serve these bars (holes), from range and grouped alike."""
        self._edit(ticker, lambda e: dataclasses.replace(e, dropped=e.dropped | frozenset(_as_dates(dates))))

    def corrupt_bars(self, ticker: str, dates, kind: str) -> None:
        """Serve these bars corrupted; `kind` is one of `synthetic.CORRUPTIONS` (always valid JSON)."""
        if kind not in synthetic.CORRUPTIONS:
            raise ValueError(f"unknown corruption {kind!r}: use one of {', '.join(synthetic.CORRUPTIONS)}")
        changes = {day: kind for day in _as_dates(dates)}
        self._edit(ticker, lambda e: dataclasses.replace(e, corrupted={**e.corrupted, **changes}))

    def revise_bars(self, ticker: str, dates, factor: float) -> None:
        """A late correction: serve these bars with o, h, l, c, vw multiplied by `factor` (last call wins)."""
        if not factor > 0:
            raise ValueError(f"a revision factor must be positive, got {factor!r}")
        changes = {day: float(factor) for day in _as_dates(dates)}
        self._edit(ticker, lambda e: dataclasses.replace(e, revised={**e.revised, **changes}))

    def set_listing_date(self, ticker: str, date: dt.date | str | None) -> None:
        """No bars before `date` (None: no listing date)."""
        day = None if date is None else _as_dates(date)[0]
        self._edit(ticker, lambda e: dataclasses.replace(e, listing_date=day))

    def clear_knobs(self) -> None:
        """Forget every drop, corruption, revision and listing date."""
        with self._lock:
            self._edits = {}

    def _edit(self, ticker: str, change: Callable[[_TickerEdits], _TickerEdits]) -> None:
        with self._lock:
            self._edits = {**self._edits, ticker: change(self._edits.get(ticker, _TickerEdits()))}

    # ---- universe --------------------------------------------------------------------------

    def add_to_universe(self, tickers: Iterable[str], market: str = "stocks", type: str = "CS") -> None:
        """Add tickers to the reference and grouped endpoints (crypto as `X:BTCUSD` or `BTCUSD`)."""
        if market not in ("stocks", "crypto"):
            raise ValueError(f"unknown market {market!r}: use 'stocks' or 'crypto'")
        if type not in ("CS", "ETF"):
            raise ValueError(f"unknown type {type!r}: use 'CS' or 'ETF'")
        added = {}
        for ticker in [tickers] if isinstance(tickers, str) else tickers:
            if market == "crypto":
                ticker = ticker if ticker.startswith("X:") else f"X:{ticker}"
                added[ticker] = synthetic.TickerInfo(ticker, ticker[2:], "crypto")
            else:
                exchange = "ARCX" if type == "ETF" else "XNYS"
                added[ticker] = synthetic.TickerInfo(ticker, ticker, "stocks", type, exchange)
        with self._lock:
            self._universe = {**self._universe, **added}

    # ---- observation -----------------------------------------------------------------------

    def request_counts(self) -> dict[str, int]:
        """Requests received per endpoint (failed ones included) and their `total`."""
        with self._lock:
            counts = {name: self._counts[name] for name in ENDPOINTS}
        counts["total"] = sum(counts.values())
        return counts

    def reset_counts(self) -> None:
        """Zero the counters and empty the request log."""
        with self._lock:
            self._counts.clear()
            self._log.clear()

    def request_log(self) -> list[RequestRecord]:
        """The most recent requests (at most 10,000), oldest first."""
        with self._lock:
            return list(self._log)

    # ---- request pipeline ------------------------------------------------------------------

    def dispatch(self, method: str, target: str, headers) -> Response:
        """Answer one HTTP request: faults, auth, rate limit, then the endpoint."""
        url = urlsplit(target)
        endpoint, args = _route(method, url.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        key, key_source = _api_key(headers, query)
        host = headers.get("Host") or f"{self.host}:{self.port}"
        request = _Request(endpoint, args, url.path, query, host, uuid.uuid4().hex)
        with self._lock:
            self._counts[endpoint] += 1
        response = self._respond(request, key)
        with self._lock:
            self._log.append(RequestRecord(method, _redacted(url), key_source, endpoint, response.status))
        return response

    def _respond(self, request: _Request, key: str | None) -> Response:
        rid = request.request_id
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)
        failure = self._injected_failure(rid)
        if failure is not None:
            return failure
        if request.endpoint == "other":
            return _error(404, rid, "NOT_FOUND", f"Path not found: {request.path}")
        if key is None:
            return _error(401, rid, "ERROR", "API Key was not provided")
        if key not in self.api_keys:
            return _error(401, rid, "ERROR", "Unknown API Key")
        if not self._admit():
            response = _error(429, rid, "ERROR", MSG_RATE_LIMIT)
            if self.retry_after_seconds is not None:
                response.headers["Retry-After"] = str(self.retry_after_seconds)
            return response
        try:
            response = self._endpoint(request)
        except _BadRequest as exc:
            response = _error(400, rid, "ERROR", str(exc))
        except Exception:
            logger.exception("sandbox failed to answer %s", request.path)
            response = _error(500, rid, "ERROR", "Internal sandbox error")
        return self._maybe_truncate(response)

    def _injected_failure(self, request_id: str) -> Response | None:
        with self._lock:
            if self._failures:
                status, body = self._failures.popleft()
            elif self.error_rate and self._rng.random() < self.error_rate:
                status, body = self._rng.choice((500, 502, 503, 504)), DEFAULT_FAILURE_BODY
            else:
                return None
        kind = "text/html" if body.lstrip().startswith("<") else "application/json"
        return Response(status, body.encode(), request_id, content_type=kind)

    def _admit(self) -> bool:
        """Sliding 60 s window over admitted requests; False when the limit is reached."""
        limit = self.rate_limit_per_minute
        if limit is None:
            return True
        with self._lock:
            now = time.monotonic()
            while self._admitted and now - self._admitted[0] >= RATE_WINDOW_SECONDS:
                self._admitted.popleft()
            if len(self._admitted) >= limit:
                return False
            self._admitted.append(now)
            return True

    def _maybe_truncate(self, response: Response) -> Response:
        with self._lock:
            if not self._truncations:
                return response
            self._truncations -= 1
        response.body = response.body[: len(response.body) // 2]
        return response

    def _endpoint(self, request: _Request) -> Response:
        handlers = {
            "aggs_range": self._aggs_range,
            "grouped_stocks": self._grouped,
            "grouped_crypto": self._grouped,
            "tickers": self._tickers,
            "ticker_detail": self._ticker_detail,
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

        series = synthetic.ticker_series(ticker)
        indices, edited = self._selection(series, ticker, from_ms, to_ms)
        if sort == "desc":
            indices = indices[::-1]
        page = min(limit, self.page_size or limit)
        next_url = None
        if len(indices) > page:
            next_url = _next_range_url(request, int(series.grid.t_range[indices[page]]), limit, sort)
        indices = indices[:page]
        head = {
            "ticker": ticker,
            "queryCount": len(indices),
            "resultsCount": len(indices),
            "adjusted": adjusted,
        }
        return self._aggregate_body(request, head, _joined(series, indices, edited), len(indices), next_url)

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
        indices = np.arange(lo, hi)
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
        rows = [] if day > self._last_served(crypto) else self._grouped_rows(day, crypto)
        adjusted = request.query.get("adjusted", "true").lower() != "false"
        head = {"queryCount": len(rows), "resultsCount": len(rows), "adjusted": adjusted}
        return self._aggregate_body(request, head, b",".join(rows), len(rows), None)

    def _grouped_rows(self, day: dt.date, crypto: bool) -> list[bytes]:
        """One row per universe ticker of the market with a bar on `day`, edits applied."""
        market_name = "crypto" if crypto else "stocks"
        tickers = sorted(t for t, info in self._universe.items() if info.market == market_name)
        rows = []
        for ticker in tickers:
            series = synthetic.ticker_series(ticker)
            i = _index_of(series, day)
            edits = self._edits.get(ticker, _NO_EDITS)
            if i is None or (edits.listing_date is not None and day < edits.listing_date):
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

    def _tickers(self, request: _Request) -> Response:
        params = decode_cursor(request.query["cursor"]) if "cursor" in request.query else request.query
        limit = _parse_limit(params.get("limit"), REFERENCE_DEFAULT_LIMIT, REFERENCE_MAX_LIMIT)
        infos = sorted(self._universe.values(), key=lambda info: info.ticker)
        if params.get("ticker"):
            infos = [info for info in infos if info.ticker == params["ticker"]]
        if params.get("market"):
            infos = [info for info in infos if info.market == params["market"]]
        if params.get("active", "true").lower() == "false":
            infos = []  # every universe ticker is active
        if params.get("page_marker"):
            infos = [info for info in infos if info.ticker > params["page_marker"]]
        page = infos[:limit]
        body = {
            "results": [info.reference_row() for info in page],
            "status": "OK",
            "request_id": request.request_id,
            "count": len(page),
        }
        if len(infos) > limit:
            kept = {k: params[k] for k in ("active", "market", "ticker") if params.get(k)}
            cursor = encode_cursor({**kept, "limit": str(limit), "page_marker": page[-1].ticker})
            body["next_url"] = f"http://{request.host}/v3/reference/tickers?cursor={cursor}"
        return _json_response(200, body, request.request_id)

    def _ticker_detail(self, request: _Request) -> Response:
        ticker = unquote(request.args[0])
        info = self._universe.get(ticker)
        if info is None:
            return _error(404, request.request_id, "NOT_FOUND", "Ticker not found.")
        row = info.detail_row()
        listing_date = self._edits.get(ticker, _NO_EDITS).listing_date
        if listing_date is not None:
            row["list_date"] = listing_date.isoformat()
        return _json_response(
            200, {"results": row, "status": "OK", "request_id": request.request_id}, request.request_id
        )


# --------------------------------------------------------------------------------------------
# Request parsing


def _route(method: str, path: str) -> tuple[str, tuple[str, ...]]:
    """The endpoint name and its path arguments; ("other", ()) for anything unknown."""
    if method == "GET":
        for name, pattern in _ROUTES:
            match = pattern.match(path)
            if match:
                return name, match.groups()
    return "other", ()


def _api_key(headers, query: dict[str, str]) -> tuple[str | None, str | None]:
    """The key and where it came from: `Authorization: Bearer KEY` first, then `apiKey=`."""
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "header"
    if query.get("apiKey"):
        return query["apiKey"], "query"
    return None, None


def _redacted(url) -> str:
    """Path and query as received, with the value of any `apiKey` replaced."""
    if not url.query:
        return url.path
    return url.path + "?" + re.sub(r"(^|&)apiKey=[^&]*", r"\1apiKey=REDACTED", url.query)


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


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PolygonSandbox/1.0"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # keep the connection in step; bodies are ignored
        response = self.server.sandbox.dispatch(self.command, self.path, self.headers)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Request-Id", response.request_id)
        self.send_header("X-Sandbox", "synthetic")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args) -> None:
        """Silent: the server keeps its own request log (without keys)."""


class _HTTPServer(ThreadingHTTPServer):
    """Threads per connection (daemon); closing the server also closes idle keep-alive connections."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer):
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host."""
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        connection, address = super().get_request()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve_forever(host: str = "127.0.0.1", port: int = 8765, **knobs) -> None:
    """Run a sandbox in the foreground, print its URL and key, stop on Ctrl-C or SIGTERM."""
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    server = SandboxServer(host, port, **knobs).start()
    try:
        keys = ", ".join(sorted(server.api_keys))
        print(f"Polygon sandbox (synthetic data) listening on {server.url}  API key: {keys}", flush=True)
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
