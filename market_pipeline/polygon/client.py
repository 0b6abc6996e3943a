"""A small client for the Polygon (Massive) REST API: daily bars, grouped daily bars, reference.

- The key travels only in the `Authorization: Bearer` header; it never appears in a URL, a log line
  or an error message.
- Requests are paced before they are sent (`requests_per_minute`; 0 means no pacing), retried with
  tenacity on 429, 5xx, connection errors, timeouts and truncated bodies (exponential backoff with
  jitter, honouring `Retry-After`, bounded attempts and total wait), and final on 400/401/403/404.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit, parse_qsl, urlencode

import pandas as pd
import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

from market_pipeline.polygon.bars import BarParseError, empty_bars, parse_aggregate_results, parse_grouped_results
from market_pipeline.polygon.tickers import polygon_ticker

log = logging.getLogger("market_pipeline.polygon")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
SUCCESS_STATUSES = frozenset({"OK", "DELAYED"})
MAX_PAGES = 1000


class PolygonError(Exception):
    """A request Polygon did not answer with data. `transient` says whether a later try may work."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


class MissingApiKey(PolygonError):
    pass


class Pacer:
    """Spaces requests evenly: at most `per_minute` a minute from this process (0: no pacing)."""

    def __init__(self, per_minute: int):
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> float:
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            delay = max(0.0, self._next - now)
            self._next = max(now, self._next) + self.interval
        if delay:
            time.sleep(delay)
        return delay


_pacers: dict[tuple[str, int], Pacer] = {}
_pacers_lock = threading.Lock()


def shared_pacer(base_url: str, per_minute: int) -> Pacer:
    """One pacer per (host, plan rate) per process, shared by every client in it."""
    with _pacers_lock:
        return _pacers.setdefault((base_url, per_minute), Pacer(per_minute))


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    max_total_wait: float = 300.0  # seconds across all retries of one request
    backoff_base: float = 1.0  # first backoff ~ base seconds, doubling, with full jitter
    backoff_max: float = 60.0


@dataclass
class RequestStats:
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    paced_seconds: float = 0.0
    by_endpoint: dict[str, int] = field(default_factory=dict)


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.reason or "no JSON body").strip()
    if isinstance(body, dict):
        status = body.get("status")
        text = body.get("error") or body.get("message") or ""
        return f"{status}: {text}" if status and text else str(text or status or body)
    return str(body)[:200]


def _strip_key(url: str) -> str:
    """Drop an apiKey query parameter a server may have echoed into a next_url."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "apikey"]
    return urlunsplit(parts._replace(query=urlencode(query)))


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
    ):
        """`limiter`: anything with `wait() -> seconds waited`, called before every request (retries
        included); the deployment-wide budget `warehouse.rate_limit.SharedRateLimiter` in the pipeline.
        None: this process's own pacer at `requests_per_minute`."""
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.adjusted = adjusted
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry or RetryPolicy()
        self.pacer = limiter if limiter is not None else shared_pacer(self.base_url, requests_per_minute)
        self.stats = RequestStats()
        self.log = logger or log
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "market_pipeline/0.1"
        self._host = urlsplit(self.base_url).netloc

    def __repr__(self) -> str:  # never show the key
        return f"PolygonClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- public endpoints ---------------------------------------------------------------------
    def daily_bars(self, symbol: str, asset_class: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Daily bars of one symbol from `start` to `end` inclusive, keyed by session date."""
        ticker = polygon_ticker(symbol, asset_class)
        url = f"{self.base_url}/v2/aggs/ticker/{ticker}/range/1/day/{start.isoformat()}/{end.isoformat()}"
        params = {"adjusted": self._adjusted(asset_class), "sort": "asc", "limit": 50000}
        results: list[dict] = []
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            seen.add(url)
            body = self._get_json(url, params, what=symbol, endpoint="aggs_range")
            results.extend(body.get("results") or [])
            next_url = body.get("next_url")
            if not next_url:
                break
            next_url = _strip_key(next_url)
            if next_url in seen:
                self.log.warning("%s: Polygon repeated a next_url; stopping pagination", symbol)
                break
            url, params = next_url, None
        if not results:
            return empty_bars()
        try:
            return parse_aggregate_results(results, asset_class)
        except BarParseError as exc:
            raise PolygonError(f"{symbol}: unusable bars from Polygon: {exc}") from None

    def grouped_daily(self, asset_class: str, day: dt.date) -> pd.DataFrame:
        """Every ticker's bar of one date for the stock (stock/etf) or crypto market, with a `symbol` column."""
        if asset_class == "crypto":
            url = f"{self.base_url}/v2/aggs/grouped/locale/global/market/crypto/{day.isoformat()}"
        else:
            url = f"{self.base_url}/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}"
        what = f"grouped daily {day}"
        body = self._get_json(url, {"adjusted": self._adjusted(asset_class)}, what=what, endpoint="grouped")
        try:
            return parse_grouped_results(body.get("results"), asset_class)
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
        netloc = urlsplit(url).netloc
        if netloc != self._host and not netloc.endswith(("polygon.io", "massive.com")):
            return {}  # never hand the key to another host
        return {"Authorization": f"Bearer {self._api_key}"}

    def _get_json(self, url: str, params: dict | None, *, what: str, endpoint: str) -> dict:
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, PolygonError) and e.transient),
            stop=stop_after_attempt(self.retry.max_attempts) | stop_after_delay(self.retry.max_total_wait),
            wait=self._wait,
            before_sleep=lambda rs: self._before_sleep(rs, what),
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(self._attempt, url, params, what, endpoint)
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
        self.stats.retries += 1
        exc = retry_state.outcome.exception()
        self.log.warning(
            "%s: transient Polygon error (%s), retry %d in %.1fs",
            what, exc, retry_state.attempt_number, retry_state.next_action.sleep if retry_state.next_action else 0.0,
        )

    def _attempt(self, url: str, params: dict | None, what: str, endpoint: str) -> dict:
        headers = self._headers(url)
        self.stats.paced_seconds += self.pacer.wait()
        self.stats.requests += 1
        self.stats.by_endpoint[endpoint] = self.stats.by_endpoint.get(endpoint, 0) + 1
        path = urlsplit(url).path
        try:
            response = self._session.get(url, params=params, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            raise PolygonError(f"{what}: request to {path} timed out", transient=True) from None
        except requests.ConnectionError as exc:
            raise PolygonError(f"{what}: connection to {self._host} failed ({type(exc).__name__})", transient=True) from None
        except requests.RequestException as exc:
            raise PolygonError(f"{what}: request to {path} failed ({type(exc).__name__})", transient=True) from None
        status = response.status_code
        if status != 200:
            text = _error_text(response)
            transient = status in TRANSIENT_STATUSES
            retry_after = _retry_after(response) if transient else None
            hint = {
                401: " (check POLYGON_API_KEY)",
                403: " (your plan does not cover this; check the start date or upgrade the plan)",
                404: " (check the symbol)",
            }.get(status, "")
            raise PolygonError(f"{what}: HTTP {status} {text}{hint}", status=status, transient=transient, retry_after=retry_after)
        try:
            body = response.json()
        except ValueError:
            raise PolygonError(f"{what}: truncated or invalid JSON from {path}", status=status, transient=True) from None
        if not isinstance(body, dict):
            raise PolygonError(f"{what}: unexpected payload from {path}", status=status)
        if body.get("status") not in SUCCESS_STATUSES:
            raise PolygonError(f"{what}: Polygon answered status {body.get('status')!r}: {body.get('error') or body.get('message') or ''}", status=status)
        return body


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None
