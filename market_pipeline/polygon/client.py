"""A small client for the Polygon (Massive) REST API: daily bars, grouped daily bars, reference.

- The key travels only in the `Authorization: Bearer` header, and only to the configured base URL's
  exact scheme, host and port; it never appears in a URL, a log line or an error message. A
  `next_url` that leaves that origin is refused (`market_pipeline.polygon.origin`).
- Pagination that does not end (a repeated `next_url`, more than `max_pages` pages) is an error,
  never a shortened history (`market_pipeline.polygon.pagination`).
- Each request has an overall deadline (`request_deadline`): the body is streamed and a server that
  trickles it is cut off, then retried like a timeout.
- Each answer may decode to at most `max_answer_bytes` (POLYGON_MAX_ANSWER_MB): the body is read and
  decompressed a chunk at a time (urllib3 inflates at most a chunk per read), and one that grows past
  the limit fails the request at once, not retried; a gzip bomb costs a chunk of memory, not its size.
- Requests are paced before they are sent (`requests_per_minute`; 0 means no pacing), retried with
  tenacity on 429, 5xx, connection errors, timeouts and truncated bodies (exponential backoff with
  jitter, honouring `Retry-After`, bounded attempts and total wait), and final on 400/401/403/404.
- A `Retry-After` longer than the client's longest wait (`RetryPolicy.backoff_max`) fails the request
  at once, naming the wait asked for (`PolygonError.stops_run`), and the client sends nothing more
  until that wait has passed: each later request fails at once with the same reason, unsent.
- Thread-safe: several threads may fetch through one client at once (`max_in_flight` of them: the
  HTTP connection pool keeps that many keep-alive connections). `stats` is updated under a lock, and
  `requests_this_thread` counts each thread's own requests (a fetch reports what it sent itself).
  The pacer is called before every attempt by whichever thread sends it, so the plan's budget holds
  across threads. `stop()` ends the client's work: no further request starts, waits are cut short.
- Range answers (the bars' big JSON bodies) are decoded into frames by `range_pages.decode_range_page`:
  inside `decoding(n)`, in a separate process (`decode_process`) so the run's process keeps its GIL
  for Dagster and the warehouse; otherwise, or until that process is up or after it died, on the
  fetch thread under `cpu_gate`. Either way the same function, the same frames, the same set-asides.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

from market_pipeline.polygon.answers import _error_text, _retry_after, answer_body
from market_pipeline.polygon.bars import BarParseError, parse_grouped_results
from market_pipeline.polygon.decode_process import DecodeProcess
from market_pipeline.polygon.origin import describe_host, same_origin
from market_pipeline.polygon.pacing import Pacer, shared_pacer  # noqa: F401  (Pacer: re-exported)
from market_pipeline.polygon.pagination import MAX_PAGES, PageGuard, PaginationError
from market_pipeline.polygon.range_pages import RangePage, combine_pages, decode_range_page
from market_pipeline.polygon.tickers import polygon_ticker
from market_pipeline.polygon.validate_bars import SetAside, split_bars

log = logging.getLogger("market_pipeline.polygon")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_REQUEST_DEADLINE = 120.0  # seconds for one request, body included
DEFAULT_MAX_ANSWER_BYTES = 25_000_000  # settings.DEFAULT_MAX_ANSWER_MB
CHUNK_BYTES = 65536


class PolygonError(Exception):
    """A request Polygon did not answer with data. `transient` says whether a later try may work;
    `stops_run`, when set, why every later request of the run would fail the same way (Polygon asked
    for a wait longer than the client's longest: the run should stop, not go on asking)."""

    def __init__(
        self, message: str, *, status: int | None = None, transient: bool = False, retry_after: float | None = None,
        stops_run: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
        self.stops_run = stops_run


class MissingApiKey(PolygonError):
    pass


class Stopped(PolygonError):
    """The client was stopped (`PolygonClient.stop()`, the run is ending): no request was sent."""


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    max_total_wait: float = 300.0  # seconds across all retries of one request
    backoff_base: float = 1.0  # first backoff ~ base seconds, doubling, with full jitter
    backoff_max: float = 60.0


@dataclass
class FetchedBars:
    """Usable bars (a bar frame) and the wire bars set aside with a reason (to quarantine)."""

    bars: pd.DataFrame
    set_aside: list[SetAside] = field(default_factory=list)


@dataclass
class RequestStats:
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    paced_seconds: float = 0.0
    by_endpoint: dict[str, int] = field(default_factory=dict)


class PolygonClient:
    def __init__(
        self,
        api_key: str | None,
        base_url: str,
        requests_per_minute: int = 5,
        *,
        adjusted: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        logger: logging.Logger | None = None,
        limiter=None,
        request_deadline: float = DEFAULT_REQUEST_DEADLINE,
        max_pages: int = MAX_PAGES,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_in_flight: int = 1,
        decode_processes: int = 0,
        decode_from: int = 32,
    ):
        """`limiter`: anything with `wait() -> seconds waited`, called before every request (retries
        included); the deployment-wide budget `warehouse.rate_limit.SharedRateLimiter` in the pipeline.
        None: this process's own pacer at `requests_per_minute`. A limiter whose `wait` takes a `stop`
        event is handed the client's, so `stop()` cuts its waiting short.
        `max_answer_bytes`: the most one answer's body may decode to; past it the request fails at once.
        `max_in_flight`: how many requests callers may send through this client at once (threads).
        `decode_processes`: worker processes decoding range answers inside `decoding(n)` when at least
        `decode_from` range requests are coming (0: always on the fetch threads)."""
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.adjusted = adjusted
        self.timeout = (connect_timeout, read_timeout)
        self.request_deadline = request_deadline
        self.max_pages = max_pages
        self.max_answer_bytes = max(1, int(max_answer_bytes))
        self.retry = retry or RetryPolicy()
        self.pacer = limiter if limiter is not None else shared_pacer(self.base_url, requests_per_minute)
        self._pacer_takes_stop = "stop" in inspect.signature(self.pacer.wait).parameters
        self.max_in_flight = max(1, int(max_in_flight))
        self.decode_processes = max(0, int(decode_processes))
        self.decode_from = max(1, int(decode_from))
        self._decoder: DecodeProcess | None = None
        self.stats = RequestStats()
        self.log = logger or log
        self._stats_lock = threading.Lock()
        # Held while a thread decodes, validates and parses an answer (CPU under the GIL). A consumer
        # storing what the fetch threads bring (refresh_symbols, through polygon.inflight) holds it
        # while it works: the fetch threads then decode while it waits for them, not each time it
        # lets the GIL go for a database call (a json.loads never yields: each of those hand-overs
        # would wait for a whole decode). Reentrant: the consumer may itself fetch.
        self.cpu_gate = threading.RLock()
        # at most max_in_flight requests on the wire at once, whichever threads send them (the bars'
        # and the reference lookups' pools run side by side)
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._thread = threading.local()
        self._stopped = threading.Event()
        self._refused: tuple[float, str] | None = None  # (until, why): Polygon asked for a longer wait
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "market_pipeline/0.1"
        # one keep-alive connection per thread in flight (urllib3 would otherwise discard the extras)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, self.max_in_flight))
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._host = urlsplit(self.base_url).netloc

    def __repr__(self) -> str:  # never show the key
        return f"PolygonClient(base_url={self.base_url!r})"

    def close(self) -> None:
        """Stop (threads still fetching send nothing more), close the connections and any decoding process."""
        self._stopped.set()
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.close()
        self._session.close()

    @contextmanager
    def decoding(self, fetches: int):
        """Inside, range answers are decoded in a separate process (`decode_process`), when the client
        has `decode_processes` and `fetches` (the range requests coming) is at least `decode_from`:
        starting a process costs about a second of the other core, worth it only for many answers.
        Yields the DecodeProcess, or None when nothing changes."""
        if self._decoder is not None or self.decode_processes < 1 or fetches < self.decode_from:
            yield None
            return
        decoder = self._decoder = DecodeProcess(self.decode_processes, logger=self.log)
        try:
            yield decoder
        finally:
            self._decoder = None
            decoder.close()

    def stop(self) -> None:
        """No further request starts (each raises `Stopped`); pacing and retry waits end at once.
        A request already on the wire finishes. For a run that is being interrupted."""
        self._stopped.set()

    @property
    def requests_this_thread(self) -> int:
        """HTTP requests sent by the calling thread through this client, retries included."""
        return getattr(self._thread, "requests", 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- public endpoints ---------------------------------------------------------------------
    def daily_bars(self, symbol: str, asset_class: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Daily bars of one symbol from `start` to `end` inclusive, keyed by session date; any
        unusable bar is an error here (the pipeline uses `fetch_daily_bars`, which sets them aside)."""
        fetched = self.fetch_daily_bars(symbol, asset_class, start, end)
        _refuse_set_aside(symbol, fetched)
        return fetched.bars

    def fetch_daily_bars(
        self, symbol: str, asset_class: str, start: dt.date, end: dt.date, *, last_session: dt.date | None = None,
        listed_on: dt.date | None = None,
    ) -> FetchedBars:
        """Every page of one symbol's daily bars, split into usable bars and bars set aside with a
        reason (`market_pipeline.polygon.validate_bars`: bars outside `start`..`end`, or before
        `listed_on` when given, and bars after `last_session`, default `end`, are set aside too; a
        date two pages both bring is kept once, or set aside when they differ). Pagination that does
        not end is a PolygonError: nothing is returned."""
        ticker = polygon_ticker(symbol, asset_class)
        url = f"{self.base_url}/v2/aggs/ticker/{ticker}/range/1/day/{start.isoformat()}/{end.isoformat()}"
        params = {"adjusted": self._adjusted(asset_class), "sort": "asc", "limit": 50000}
        url = f"{url}?{urlencode(params)}"  # the whole first URL, so a next_url repeating it is seen
        guard = PageGuard(url, self.base_url, what=symbol, max_pages=self.max_pages)
        span = (max(start, listed_on) if listed_on else start, end)
        read = functools.partial(self._range_page, asset_class=asset_class, last_session=last_session or end, span=span)
        pages: list[RangePage] = []
        while True:
            page = self._get_json(url, None, what=symbol, endpoint="aggs_range", read=read)
            pages.append(page)
            if not page.next_url:
                break
            try:
                url = guard.follow(page.next_url)
            except PaginationError as exc:
                raise PolygonError(str(exc)) from None
        return FetchedBars(*combine_pages(pages, asset_class))

    def grouped_daily(self, asset_class: str, day: dt.date) -> pd.DataFrame:
        """Every ticker's bar of one date for the stock (stock/etf) or crypto market, with a `symbol`
        column; any unusable row is an error here (the pipeline uses `fetch_grouped_daily`)."""
        fetched = self.fetch_grouped_daily(asset_class, day)
        _refuse_set_aside(f"grouped daily {day}", fetched)
        return fetched.bars

    def fetch_grouped_daily(self, asset_class: str, day: dt.date, *, last_session: dt.date | None = None) -> FetchedBars:
        """Grouped-daily bars of one date, usable rows parsed, unusable rows set aside (with `ticker`)."""
        if asset_class == "crypto":
            url = f"{self.base_url}/v2/aggs/grouped/locale/global/market/crypto/{day.isoformat()}"
        else:
            url = f"{self.base_url}/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}"
        what = f"grouped daily {day}"
        body = self._get_json(url, {"adjusted": self._adjusted(asset_class)}, what=what, endpoint="grouped")
        results = body.get("results") or []
        if not isinstance(results, list):
            raise PolygonError(f"{what}: unexpected `results` from Polygon (not a list)")
        usable, aside = [], []
        for row in results:
            if not isinstance(row, dict) or not isinstance(row.get("T"), str):
                continue  # a row without a ticker belongs to no symbol
            usable.append(row)
        usable, aside = split_bars(usable, asset_class, last_session or day, "grouped", span=(day, day))
        try:
            return FetchedBars(parse_grouped_results(usable, asset_class), aside)
        except BarParseError as exc:
            raise PolygonError(f"{what}: unusable bars from Polygon: {exc}") from None

    def ticker_exists(self, symbol: str, asset_class: str) -> bool:
        """Whether the reference endpoint knows the ticker (404 -> False)."""
        ticker = polygon_ticker(symbol, asset_class)
        try:
            body = self._get_json(f"{self.base_url}/v3/reference/tickers/{ticker}", None, what=symbol, endpoint="reference")
        except PolygonError as exc:
            if exc.status == 404:
                return False
            raise
        result = body.get("results") or {}
        market = result.get("market")
        return market is None or (market == "crypto") == (asset_class == "crypto")

    def _adjusted(self, asset_class: str) -> str:
        """Stocks and ETFs are always fetched as traded (adjusted=false; the warehouse adjusts them with
        its own corporate actions); crypto, which never splits, keeps the client's setting."""
        return str(self.adjusted).lower() if asset_class == "crypto" else "false"

    # ---- transport ----------------------------------------------------------------------------
    def _headers(self, url: str) -> dict[str, str]:
        if not self._api_key:
            raise MissingApiKey(
                "no Polygon API key: set POLYGON_API_KEY (or MASSIVE_API_KEY), or unset it everywhere "
                "to let `market-pipeline run` / `make dev` use the built-in sandbox"
            )
        if not same_origin(url, self.base_url):  # never hand the key to another scheme, host or port
            raise PolygonError(
                f"refused to send a request to {describe_host(url)}: it is not the configured API origin "
                f"{describe_host(self.base_url)} (POLYGON_BASE_URL)"
            )
        return {"Authorization": f"Bearer {self._api_key}"}

    def _get_json(self, url: str, params: dict | None, *, what: str, endpoint: str, read=None):
        """The answer's JSON body (a dict), or what `read(content, path, what)` makes of a 200 answer's
        bytes; retried as the module docstring says."""
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, PolygonError) and e.transient),
            stop=stop_after_attempt(self.retry.max_attempts) | stop_after_delay(self.retry.max_total_wait),
            wait=self._wait,
            before_sleep=lambda rs: self._before_sleep(rs, what),
            sleep=self._stopped.wait,  # a stop ends the backoff at once (the next attempt then refuses)
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(self._attempt, url, params, what, endpoint, read)
        except PolygonError as exc:
            if exc.transient:
                attempts = retrying.statistics.get("attempt_number", 1)
                raise PolygonError(
                    f"{what}: gave up after {attempts} attempts in {time.monotonic() - started:.1f}s: {exc}",
                    status=exc.status,
                    transient=True,
                ) from None
            raise

    def _wait(self, retry_state) -> float:
        exc = retry_state.outcome.exception()
        backoff = wait_random_exponential(multiplier=self.retry.backoff_base, max=self.retry.backoff_max)(retry_state)
        if isinstance(exc, PolygonError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.retry.backoff_max)
        return backoff

    def _before_sleep(self, retry_state, what: str) -> None:
        with self._stats_lock:
            self.stats.retries += 1
        exc = retry_state.outcome.exception()
        self.log.warning(
            "%s: transient Polygon error (%s), retry %d in %.1fs",
            what, exc, retry_state.attempt_number, retry_state.next_action.sleep if retry_state.next_action else 0.0,
        )

    def _attempt(self, url: str, params: dict | None, what: str, endpoint: str, read=None):
        headers = self._headers(url)
        self._refuse_when_stopped(what)
        self._refuse_when_asked_to_wait(what)
        with self._slots:  # taken before pacing: the budget counts a request when it is really sent
            content, status, response, path = self._send(url, params, headers, what, endpoint)
        if read is not None and status == 200:
            return read(content, path, what)
        return self._decode(content, status, response, path, what, endpoint)

    def _range_page(self, content: bytes, path: str, what: str, *, asset_class: str, last_session, span=None) -> RangePage:
        """A range answer's page: decoded by the decoding process when one is attached and ready
        (`decoding`), else on this thread under `cpu_gate`; its problem raised as a PolygonError."""
        decoder = self._decoder
        page = decoder.decode(content, asset_class, last_session, path, span) if decoder is not None else None
        if page is None:
            with self.cpu_gate:  # the decoding of the bars' big answers (see cpu_gate)
                page = decode_range_page(content, asset_class, last_session, path, span)
        if page.problem is not None:
            raise PolygonError(f"{what}: {page.problem}", status=200, transient=page.transient)
        return page

    def _send(self, url: str, params: dict | None, headers: dict, what: str, endpoint: str):
        paced = self._pace()
        self._refuse_when_stopped(what)
        with self._stats_lock:
            self.stats.paced_seconds += paced
            self.stats.requests += 1
            self.stats.by_endpoint[endpoint] = self.stats.by_endpoint.get(endpoint, 0) + 1
        self._thread.requests = self.requests_this_thread + 1
        path = urlsplit(url).path
        started = time.monotonic()
        try:
            response = self._session.get(url, params=params, headers=headers, timeout=self.timeout, stream=True)
        except requests.Timeout:
            raise PolygonError(f"{what}: request to {path} timed out", transient=True) from None
        except requests.ConnectionError as exc:
            raise PolygonError(f"{what}: connection to {self._host} failed ({type(exc).__name__})", transient=True) from None
        except requests.RequestException as exc:
            raise PolygonError(f"{what}: request to {path} failed ({type(exc).__name__})", transient=True) from None
        with response:
            content = self._read_body(response, started, what, path)
        return content, response.status_code, response, path

    def _decode(self, content: bytes, status: int, response, path: str, what: str, endpoint: str) -> dict:
        if status != 200:
            text = _error_text(response, content)
            transient = status in TRANSIENT_STATUSES
            retry_after = _retry_after(response) if transient else None
            if retry_after is not None and retry_after > self.retry.backoff_max:
                raise self._asked_to_wait(what, status, retry_after)
            hint = {
                401: " (check POLYGON_API_KEY)",
                403: " (your plan does not cover this; check the start date or upgrade the plan)",
                404: " (check the symbol)",
            }.get(status, "")
            raise PolygonError(f"{what}: HTTP {status} {text}{hint}", status=status, transient=transient, retry_after=retry_after)
        body, problem, transient = answer_body(content, path)
        if body is None:
            raise PolygonError(f"{what}: {problem}", status=status, transient=transient)
        return body

    def _pace(self) -> float:
        if self._pacer_takes_stop:
            return self.pacer.wait(stop=self._stopped)
        return self.pacer.wait()

    def _refuse_when_stopped(self, what: str) -> None:
        if self._stopped.is_set():
            raise Stopped(f"{what}: not sent: the run is stopping")

    def _asked_to_wait(self, what: str, status: int, seconds: float) -> PolygonError:
        """A Retry-After past the longest wait: this request fails now, and every request until then."""
        why = (
            f"Polygon answered HTTP {status} asking to wait {_duration(seconds)} before the next request (Retry-After), "
            f"longer than the longest wait of {self.retry.backoff_max:g} s (backoff_max_seconds): not retried; "
            "run again once that wait has passed"
        )
        with self._stats_lock:
            self._refused = (time.monotonic() + seconds, why)
        return PolygonError(f"{what}: {why}", status=status, retry_after=seconds, stops_run=why)

    def _refuse_when_asked_to_wait(self, what: str) -> None:
        refused = self._refused
        if refused is not None and time.monotonic() < refused[0]:
            raise PolygonError(f"{what}: not sent: {refused[1]}", stops_run=refused[1])

    def _read_body(self, response: requests.Response, started: float, what: str, path: str) -> bytes:
        """The whole body, read and decompressed a chunk at a time as it arrives; cut off when the
        request's overall deadline passes (a server trickling its body would otherwise hold the run:
        each read has only the read timeout) or when it decodes to more than `max_answer_bytes`."""
        deadline = started + self.request_deadline
        raw, chunks, size = response.raw, [], 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise PolygonError(
                        f"{what}: request to {path} did not finish within its {self.request_deadline:g}s deadline "
                        "(the server sent its answer too slowly)",
                        transient=True,
                    )
                chunk = raw.read1(CHUNK_BYTES, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_answer_bytes:
                    raise PolygonError(self._too_large(response, what, path), status=response.status_code)
                chunks.append(chunk)
        except PolygonError:
            raise
        except Exception as exc:  # a read timeout, a reset or a broken body mid-stream
            raise PolygonError(f"{what}: reading the answer from {path} failed ({type(exc).__name__})", transient=True) from None
        return b"".join(chunks)


    def _too_large(self, response: requests.Response, what: str, path: str) -> str:
        encoding = response.headers.get("Content-Encoding")
        wire = f" ({encoding}-compressed on the wire)" if encoding else ""
        return (
            f"{what}: the answer from {path}{wire} decodes to more than {self.max_answer_bytes / 1e6:g} MB, the most one "
            "answer may hold (POLYGON_MAX_ANSWER_MB; the largest real answer, 50,000 bars, is about 5 MB): "
            "not read further, not retried"
        )


def _duration(seconds: float) -> str:
    """`90 s`, `1000000000 s (about 31.7 years)`: the server's number as it sent it, and its size."""
    text = f"{seconds:.0f} s" if float(seconds).is_integer() else f"{seconds:g} s"
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{text} (about {seconds / size:.3g} {unit})"
    return text


def _refuse_set_aside(what: str, fetched: FetchedBars) -> None:
    if fetched.set_aside:
        first = fetched.set_aside[0]
        raise PolygonError(
            f"{what}: unusable bars from Polygon: {len(fetched.set_aside)} bar(s), the first "
            f"({first.date or 'no date'}): {first.reason}"
        )
