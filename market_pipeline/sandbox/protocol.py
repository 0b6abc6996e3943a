"""The sandbox's wire protocol: constants, requests and responses, Polygon's error bodies,
cursors, routing of a path to an endpoint, and where a request carries its key."""

from __future__ import annotations

import datetime as dt

import base64
import dataclasses
import json
import re
from typing import Iterable
from urllib.parse import parse_qsl, urlencode


SANDBOX_API_KEY = "sandbox-key"
DEFAULT_LIMIT = 5000
MAX_LIMIT = 50_000
REFERENCE_DEFAULT_LIMIT = 100
REFERENCE_MAX_LIMIT = 1000
RATE_WINDOW_SECONDS = 60.0
REQUEST_LOG_SIZE = 10_000
SHUTDOWN_POLL_SECONDS = 0.02  # how long stop() may wait for the serving loop to notice
ENDPOINTS = (
    "aggs_range", "grouped_stocks", "grouped_crypto", "tickers", "ticker_detail", "ticker_events",
    "splits", "dividends", "splits_v3", "dividends_v3", "other",
)

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
    ("ticker_events", re.compile(r"^/vX/reference/tickers/([^/]+)/events$")),
    ("splits", re.compile(r"^/stocks/v1/splits$")),
    ("dividends", re.compile(r"^/stocks/v1/dividends$")),
    ("splits_v3", re.compile(r"^/v3/reference/splits$")),
    ("dividends_v3", re.compile(r"^/v3/reference/dividends$")),
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
    at: float = 0.0  # time.monotonic() when the request arrived (rate windows, benchmarks)


@dataclasses.dataclass
class Response:
    """What the handler writes: status, body bytes and extra headers."""

    status: int
    body: bytes
    request_id: str
    content_type: str = "application/json"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    trickle: float | None = None  # bytes per second for the body (None: at once)


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


