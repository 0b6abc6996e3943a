"""A Polygon-compatible HTTP server on loopback, serving the synthetic market of `market.py`.

Stdlib only: `http.server.ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive. Every response
carries `Content-Length`, `X-Request-Id` and `X-Sandbox: synthetic`. The wire format (bodies, key
order, errors, pagination, auth) follows /work/shared/POLYGON_API.md.

Knobs and fault injection live on the `SandboxServer` instance and may change while it serves:

- plain attributes: `page_size`, `rate_limit_per_minute`, `retry_after_seconds`, `error_rate`,
  `latency_ms`, `delayed`, `history_limit_days`, `now`, `api_keys`;
- schedules: `fail_next(n, status, body)`, `truncate_next(n)`, `fail_ticker(ticker, status)`;
- bar edits: `drop_bars`, `corrupt_bars`, `revise_bars`, `restore_bars`, `set_listing_date`, `clear_knobs`;
- universe: `add_to_universe`;
- symbol lifecycle (`reference.py`): `delist`, `rename_ticker`, `reuse_ticker`;
- the list of tickers (`ticker_list.py`): `ticker_list_fault`, `clear_ticker_list_faults`;
- hostile answers (`wire_faults.py`): `next_url_origin`, `paginate_badly`, `trickle_next`,
  `serve_empty`, `serve_future_bars`, `gzip_bomb`, `clear_wire_faults`;
- corporate actions (`corporate_actions_routes.py`): `add_split`, `record_split`, `duplicate_split`,
  `withdraw_split`, `add_dividend`, `withdraw_dividend`, `correct_dividend`, `corporate_actions_v1`;
- observation: `request_counts()`, `reset_counts()`, `request_log()`, `max_concurrent()` (the most
  requests it was answering at one moment, latency included).
"""

from __future__ import annotations

import collections
import logging
import datetime as dt
import random
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

from market_pipeline import calendars
from market_pipeline.sandbox import market as synthetic
from market_pipeline.sandbox.faults import FaultKnobs, _TickerEdits
from market_pipeline.sandbox.protocol import (
    ENDPOINTS,
    MSG_RATE_LIMIT,
    REQUEST_LOG_SIZE,
    SANDBOX_API_KEY,
    SHUTDOWN_POLL_SECONDS,
    RequestRecord,
    Response,
    _api_key,
    _BadRequest,
    _error,
    _redacted,
    _Request,
    _route,
)
from market_pipeline.sandbox.reference import Lifecycle, LifecycleKnobs
from market_pipeline.sandbox.corporate_actions_routes import CorporateActionKnobs
from market_pipeline.sandbox.routes import Endpoints
from market_pipeline.sandbox.ticker_list import TickerListMixin
from market_pipeline.sandbox.wire_faults import WireFaultsMixin

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# The server


class SandboxServer(CorporateActionKnobs, FaultKnobs, LifecycleKnobs, WireFaultsMixin, TickerListMixin, Endpoints):
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
        self._failures: collections.deque[tuple[int, str, float | None]] = collections.deque()
        self._truncations = 0
        self._admitted: collections.deque[float] = collections.deque()
        self._counts = collections.Counter()
        self._answering = 0  # requests being answered now
        self._max_answering = 0
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self._edits: dict[str, _TickerEdits] = {}
        self._init_wire_faults()
        self._init_ticker_list()
        self._universe = {info.ticker: info for info in synthetic.DEFAULT_UNIVERSE}
        self._lifecycle = Lifecycle()
        self._universe.update(self._lifecycle.universe_rows(self._universe))
        self._init_corporate_actions()
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
        """Zero the counters (and the concurrency peak) and empty the request log."""
        with self._lock:
            self._counts.clear()
            self._log.clear()
            self._max_answering = self._answering

    def max_concurrent(self) -> int:
        """The most requests answered at one moment since start (or `reset_counts`)."""
        with self._lock:
            return self._max_answering

    def request_log(self) -> list[RequestRecord]:
        """The most recent requests (at most 10,000), oldest first."""
        with self._lock:
            return list(self._log)

    # ---- request pipeline ------------------------------------------------------------------

    def dispatch(self, method: str, target: str, headers) -> Response:
        """Answer one HTTP request: faults, auth, rate limit, then the endpoint."""
        arrived = time.monotonic()
        url = urlsplit(target)
        endpoint, args = _route(method, url.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        key, key_source = _api_key(headers, query)
        host = headers.get("Host") or f"{self.host}:{self.port}"
        request = _Request(endpoint, args, url.path, query, host, uuid.uuid4().hex)
        with self._lock:
            self._counts[endpoint] += 1
            self._answering += 1
            self._max_answering = max(self._max_answering, self._answering)
        try:
            response = self._respond(request, key)
        finally:
            with self._lock:
                self._answering -= 1
        self._wire_bomb(request, response)
        response.trickle = self._wire_trickle()
        with self._lock:
            self._log.append(RequestRecord(method, _redacted(url), key_source, endpoint, response.status, arrived))
        return response

    def _respond(self, request: _Request, key: str | None) -> Response:
        rid = request.request_id
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)
        failure = self._injected_failure(rid) or self._ticker_failure(request)
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
        if response.trickle:
            self._trickle(response.body, response.trickle)
        else:
            self.wfile.write(response.body)

    def _trickle(self, body: bytes, bytes_per_second: float) -> None:
        """Write the body a few bytes at a time; stop quietly when the client hangs up."""
        step = max(1, int(bytes_per_second // 10))
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                time.sleep(step / bytes_per_second)
        except OSError:
            self.close_connection = True

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

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer (it refused a body, or timed out) is no error of the sandbox."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

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
