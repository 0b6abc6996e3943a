"""Fault injection and data edits of the sandbox: failure and truncation schedules, the rate
limit, and per-ticker bar edits (drop, corrupt, revise, listing date)."""

from __future__ import annotations

import datetime as dt

import numpy as np

import dataclasses
import time
from typing import Callable
from urllib.parse import unquote

from market_pipeline.sandbox import market as synthetic
from market_pipeline.sandbox.protocol import (
    DEFAULT_FAILURE_BODY,
    RATE_WINDOW_SECONDS,
    Response,
    _as_dates,
    _error,
)

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


class FaultKnobs:
    """The knobs of `SandboxServer` that inject faults and edit bars (mixed into the server)."""

    # ---- fault schedules -------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 503, body: str = DEFAULT_FAILURE_BODY, retry_after: float | None = None) -> None:
        """The next n requests fail with `status` and `body` (HTML when it starts with '<'), with a
        `Retry-After: retry_after` header when it is given."""
        with self._lock:
            self._failures.extend([(status, body, retry_after)] * n)

    def fail_ticker(self, ticker: str, status: int | None = 503) -> None:
        """Every range request for `ticker` answers `status` (404: "Ticker not found."; None: heal it)."""
        with self._lock:
            failing = dict(getattr(self, "_failing_tickers", {}))
            if status is None:
                failing.pop(ticker, None)
            else:
                failing[ticker] = status
            self._failing_tickers = failing

    def _ticker_failure(self, request) -> Response | None:
        failing = getattr(self, "_failing_tickers", None)
        if not failing or request.endpoint != "aggs_range":
            return None
        status = failing.get(unquote(request.args[0]))
        if status is None:
            return None
        if status == 404:
            return _error(404, request.request_id, "NOT_FOUND", "Ticker not found.")
        return Response(status, DEFAULT_FAILURE_BODY.encode(), request.request_id, content_type="text/html")

    def truncate_next(self, n: int = 1) -> None:
        """The next n responses send only the first half of their body (invalid JSON)."""
        with self._lock:
            self._truncations += n

    # ---- bar edits -------------------------------------------------------------------------

    def drop_bars(self, ticker: str, dates) -> None:
        """Never serve these bars (holes), from range and grouped alike."""
        self._edit(ticker, lambda e: dataclasses.replace(e, dropped=e.dropped | frozenset(_as_dates(dates))))

    def corrupt_bars(self, ticker: str, dates, kind: str) -> None:
        """Serve these bars corrupted; `kind` is one of `synthetic.CORRUPTIONS` (valid JSON, values a
        validation rule rejects) or `synthetic.WIRE_CORRUPTIONS` (Infinity/NaN literals, a missing
        close, a stock's `t` at 00:00 UTC: bars the client sets aside in quarantine)."""
        kinds = synthetic.CORRUPTIONS + synthetic.WIRE_CORRUPTIONS
        if kind not in kinds:
            raise ValueError(f"unknown corruption {kind!r}: use one of {', '.join(kinds)}")
        changes = {day: kind for day in _as_dates(dates)}
        self._edit(ticker, lambda e: dataclasses.replace(e, corrupted={**e.corrupted, **changes}))

    def revise_bars(self, ticker: str, dates, factor: float) -> None:
        """A late correction: serve these bars with o, h, l, c, vw multiplied by `factor` (last call wins)."""
        if not factor > 0:
            raise ValueError(f"a revision factor must be positive, got {factor!r}")
        changes = {day: float(factor) for day in _as_dates(dates)}
        self._edit(ticker, lambda e: dataclasses.replace(e, revised={**e.revised, **changes}))

    def restore_bars(self, ticker: str, dates) -> None:
        """Serve these bars as the market has them again: no drop, corruption or revision."""
        days = frozenset(_as_dates(dates))
        self._edit(ticker, lambda e: dataclasses.replace(
            e, dropped=e.dropped - days, corrupted={d: k for d, k in e.corrupted.items() if d not in days},
            revised={d: f for d, f in e.revised.items() if d not in days},
        ))

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

    def _injected_failure(self, request_id: str) -> Response | None:
        with self._lock:
            if self._failures:
                status, body, retry_after = self._failures.popleft()
            elif self.error_rate and self._rng.random() < self.error_rate:
                status, body, retry_after = self._rng.choice((500, 502, 503, 504)), DEFAULT_FAILURE_BODY, None
            else:
                return None
        kind = "text/html" if body.lstrip().startswith("<") else "application/json"
        response = Response(status, body.encode(), request_id, content_type=kind)
        if retry_after is not None:
            response.headers["Retry-After"] = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        return response

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

