"""Sandbox knobs for hostile or broken answers (issue 15): where `next_url` points, pagination that
never ends, bodies that trickle, empty answers and bars after the last completed session.

`SandboxServer` mixes these in; each knob is a method, each may change while the server serves:

- `next_url_origin(ticker, url_base)`: the ticker's `next_url`s point at another origin
  (`https://evilpolygon.io`, a downgraded `http://` URL, another loopback server), path and cursor kept;
- `paginate_badly(ticker, kind)`: `self_loop` (a page's `next_url` is its own URL), `cursor_cycle`
  (the third page points back at the second) or `endless` (every page has a fresh `next_url`);
- `trickle_next(n, bytes_per_second)`: the next n responses send their body slowly;
- `serve_empty(ticker)`: the range endpoint answers with no bars at all for the ticker;
- `serve_future_bars(ticker, n)`: the range endpoint adds n bars after the last completed session
  (ignoring `to`), as a broken server would;
- `gzip_bomb(ticker, inflated_bytes)`: the range endpoint answers for the ticker with a small
  `Content-Encoding: gzip` body that inflates to `inflated_bytes` (1 GiB by default, from about 1 MB on
  the wire: concatenated gzip members of a mebibyte of spaces each);
- `serve_stray_bars(ticker, dates)`: the first page of the ticker's range answers also carries a bar
  of each date (1970, 2100: any date, inside the series or not), whatever the range asked;
- `duplicate_bars(ticker, dates, conflicting)`: range answers give the bar of each date twice, the
  copy identical or with its close (and high) at 999.0;
- `overlap_pages(ticker, conflicting)`: every page after the first starts again with the previous
  page's last bar, identical or with its close at 999.0;
- `grouped_stray_bars(ticker, dates)`: every grouped-daily answer of the ticker's market also
  carries its bar of each date (a bar of another date than the one asked).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import gzip
import json
import threading
from urllib.parse import unquote, urlencode, urlsplit

import numpy as np

from market_pipeline import calendars
from market_pipeline.sandbox import market as synthetic
from market_pipeline.sandbox.protocol import _as_dates

PAGINATION_FAULTS = ("self_loop", "cursor_cycle", "endless")
VALID_CURSOR = base64.urlsafe_b64encode(b"limit=50000&sort=asc").decode().rstrip("=")
GIB = 1 << 30
_MEMBER = 1 << 20  # bytes of spaces each gzip member of a bomb inflates to


@functools.lru_cache(maxsize=4)
def gzip_bomb_body(ticker: str, inflated_bytes: int = GIB) -> bytes:
    """A gzip body that inflates to about `inflated_bytes`: the start of a range answer, then spaces.
    Gzip allows members one after another; one of a mebibyte of spaces is about a kilobyte."""
    head = gzip.compress(f'{{"ticker":"{ticker}","status":"OK","results":['.encode(), 9)
    member = gzip.compress(b" " * _MEMBER, 9)
    return head + member * max(1, inflated_bytes // _MEMBER)


class WireFaultsMixin:
    def _init_wire_faults(self) -> None:
        self._wire_lock = threading.Lock()
        self._origins: dict[str, str] = {}
        self._pagination: dict[str, str] = {}
        self._cycle_start: dict[str, str] = {}
        self._trickles: list[float] = []
        self._empty: set[str] = set()
        self._future: dict[str, int] = {}
        self._bombs: dict[str, int] = {}
        self._strays: dict[str, tuple[dt.date, ...]] = {}
        self._duplicates: dict[str, dict[dt.date, bool]] = {}  # date -> conflicting
        self._overlaps: dict[str, bool] = {}  # ticker -> conflicting
        self._grouped_strays: dict[str, tuple[dt.date, ...]] = {}

    # ---- knobs -----------------------------------------------------------------------------

    def next_url_origin(self, ticker: str, url_base: str | None) -> None:
        """`ticker`'s next_urls point at `url_base` (scheme://host[:port]); None: back to normal."""
        with self._wire_lock:
            if url_base is None:
                self._origins.pop(ticker, None)
            else:
                self._origins[ticker] = url_base.rstrip("/")

    def paginate_badly(self, ticker: str, kind: str | None) -> None:
        """Broken pagination for `ticker` (see PAGINATION_FAULTS); None: back to normal."""
        if kind is not None and kind not in PAGINATION_FAULTS:
            raise ValueError(f"unknown pagination fault {kind!r}: use one of {', '.join(PAGINATION_FAULTS)}")
        with self._wire_lock:
            self._cycle_start.pop(ticker, None)
            if kind is None:
                self._pagination.pop(ticker, None)
            else:
                self._pagination[ticker] = kind

    def trickle_next(self, n: int = 1, bytes_per_second: float = 10.0) -> None:
        """The next n responses write their body at about `bytes_per_second`."""
        if not bytes_per_second > 0:
            raise ValueError("bytes_per_second must be positive")
        with self._wire_lock:
            self._trickles.extend([float(bytes_per_second)] * n)

    def serve_empty(self, ticker: str, empty: bool = True) -> None:
        """The range endpoint serves no bars for `ticker` (HTTP 200, no `results` key)."""
        with self._wire_lock:
            (self._empty.add if empty else self._empty.discard)(ticker)

    def serve_future_bars(self, ticker: str, n: int) -> None:
        """Add n bars dated after the last completed session to `ticker`'s range answers (0: none)."""
        with self._wire_lock:
            if n:
                self._future[ticker] = int(n)
            else:
                self._future.pop(ticker, None)

    def gzip_bomb(self, ticker: str, inflated_bytes: int | None = GIB) -> None:
        """Range answers for `ticker` become a gzip bomb inflating to `inflated_bytes` (None: normal again)."""
        with self._wire_lock:
            if inflated_bytes:
                self._bombs[ticker] = int(inflated_bytes)
            else:
                self._bombs.pop(ticker, None)
    def serve_stray_bars(self, ticker: str, dates) -> None:
        """The first page of `ticker`'s range answers also carries a bar dated each of `dates`
        (whatever the range asked; [] or None: none)."""
        with self._wire_lock:
            days = tuple(_as_dates(dates)) if dates else ()
            (self._strays.__setitem__(ticker, days) if days else self._strays.pop(ticker, None))

    def duplicate_bars(self, ticker: str, dates, conflicting: bool = True) -> None:
        """`ticker`'s range answers give the bar of each date twice: the copy has its close (and
        high) at 999.0 when `conflicting`, else it is identical."""
        with self._wire_lock:
            self._duplicates[ticker] = {**self._duplicates.get(ticker, {}), **dict.fromkeys(_as_dates(dates), conflicting)}

    def overlap_pages(self, ticker: str, conflicting: bool | None = False) -> None:
        """Every page of `ticker`'s range answers after the first starts with the previous page's last
        bar again (its close at 999.0 when `conflicting`); None: pages no longer overlap."""
        with self._wire_lock:
            (self._overlaps.pop(ticker, None) if conflicting is None else self._overlaps.__setitem__(ticker, conflicting))

    def grouped_stray_bars(self, ticker: str, dates) -> None:
        """Every grouped-daily answer of `ticker`'s market also carries its bar of each of `dates`."""
        with self._wire_lock:
            days = tuple(_as_dates(dates)) if dates else ()
            (self._grouped_strays.__setitem__(ticker, days) if days else self._grouped_strays.pop(ticker, None))

    def clear_wire_faults(self) -> None:
        """Forget every knob of this module (pending trickles included)."""
        with self._wire_lock:
            self._origins.clear()
            self._pagination.clear()
            self._cycle_start.clear()
            self._trickles.clear()
            self._empty.clear()
            self._future.clear()
            self._bombs.clear()
            self._strays.clear()
            self._duplicates.clear()
            self._overlaps.clear()
            self._grouped_strays.clear()

    # ---- hooks the server calls --------------------------------------------------------------

    def _wire_indices(self, ticker: str, indices: np.ndarray, grid_size: int, last_served_hi: int) -> np.ndarray:
        """The bar indices to serve after the empty and future knobs."""
        with self._wire_lock:
            empty, future = ticker in self._empty, self._future.get(ticker, 0)
        if empty:
            return indices[:0]
        if future:
            extra = np.arange(last_served_hi, min(grid_size, last_served_hi + future))
            indices = np.concatenate([indices, extra[~np.isin(extra, indices)]]).astype(indices.dtype)
        return indices

    def _wire_next_url(
        self, ticker: str, host: str, path: str, query: dict[str, str], next_url: str | None,
        from_ms: int, to_ms: int, last_t: int | None,
    ) -> str | None:
        """The range answer's next_url after the pagination and origin knobs."""
        with self._wire_lock:
            kind = self._pagination.get(ticker)
            origin = self._origins.get(ticker)
        own = f"http://{host}{path}" + (f"?{urlencode(query)}" if query else "")
        if kind == "self_loop":
            next_url = own
        elif kind == "endless" and next_url is None:
            # past the last bar, every page points one millisecond further: empty pages forever
            start = min(max(from_ms, last_t if last_t is not None else from_ms) + 1, to_ms)
            segments = path.split("/")
            segments[-2] = str(start)
            page = int(query.get("page", "1")) + 1
            next_url = f"http://{host}{'/'.join(segments)}?cursor={VALID_CURSOR}&page={page}"
        elif kind == "cursor_cycle" and "cursor" in query:
            with self._wire_lock:
                first = self._cycle_start.setdefault(ticker, own)
            if own != first:  # the third page points back at the second
                next_url = first
            elif next_url is None:
                next_url = own + "&page=3"  # a third page even when the bars fit on two
        elif kind == "cursor_cycle" and next_url is None:
            segments = path.split("/")
            next_url = f"http://{host}{'/'.join(segments)}?cursor={VALID_CURSOR}&page=2"
        if next_url and origin:
            parts = urlsplit(next_url)
            next_url = origin + parts.path + (f"?{parts.query}" if parts.query else "")
        return next_url

    def _wire_bomb(self, request, response) -> None:
        """Replace a range answer's body with a gzip bomb when its ticker has one."""
        if request.endpoint != "aggs_range" or response.status != 200:
            return
        ticker = unquote(request.args[0])
        with self._wire_lock:
            size = self._bombs.get(ticker)
        if size:
            response.body = gzip_bomb_body(ticker, size)
            response.headers["Content-Encoding"] = "gzip"
    def _wire_results(self, ticker: str, series, indices: np.ndarray, joined, first_page: bool) -> tuple[bytes, int]:
        """The range page's `results` bytes and bar count after the stray, duplicate and overlap knobs
        (`joined`: the page's bars as the server renders them)."""
        with self._wire_lock:
            strays = self._strays.get(ticker, ()) if first_page else ()
            duplicates = self._duplicates.get(ticker, {})
            overlap = None if first_page else self._overlaps.get(ticker)
        if not strays and not duplicates and overlap is None:
            return joined, len(indices)
        # bar objects hold no nested object: "},{" is only ever between two of them
        fragments = [b"{" + f + b"}" for f in bytes(joined)[1:-1].split(b"},{")] if len(indices) else []
        out = []
        if overlap is not None and len(indices) and indices[0] > 0:
            previous = series.fragment(int(indices[0]) - 1)
            out.append(_altered(previous) if overlap else previous)
        for i, fragment in zip(indices.tolist(), fragments):
            out.append(fragment)
            day = series.grid.dates[i].astype(object)
            if day in duplicates:
                out.append(_altered(fragment) if duplicates[day] else fragment)
        out += [_stray(series, day) for day in strays]
        return b",".join(out), len(out)

    def _wire_grouped_rows(self, crypto: bool) -> list[bytes]:
        """Extra grouped-daily rows: the bars of other dates `grouped_stray_bars` asks for."""
        with self._wire_lock:
            strays = dict(self._grouped_strays)
        rows = []
        for ticker, days in strays.items():
            if synthetic.is_crypto_ticker(ticker) != crypto:
                continue
            series = synthetic.ticker_series(self._lifecycle.series_ticker(ticker))
            for day in days:
                i = int(np.searchsorted(series.grid.dates, np.datetime64(day, "D")))
                if i < len(series.grid.dates) and series.grid.dates[i] == np.datetime64(day, "D"):
                    rows.append(synthetic.grouped_row(ticker, series.fragment(i), int(series.grid.t_range[i]), int(series.grid.t_grouped[i])))
        return rows

    def _wire_trickle(self) -> float | None:
        """Bytes per second for this response's body, or None to send it at once."""
        with self._wire_lock:
            return self._trickles.pop(0) if self._trickles else None


def _altered(fragment: bytes) -> bytes:
    """The bar with its close at 999.0 (and its high raised to it): a conflicting copy."""
    bar = json.loads(fragment)
    bar["c"] = 999.0
    bar["h"] = max(bar["h"], 999.0)
    return json.dumps(bar, separators=(",", ":")).encode()


def _stray(series, day: dt.date) -> bytes:
    """A bar dated `day` (any date: 1970, 2100) with the values of the series' first bar."""
    bar = json.loads(series.fragment(0))
    bar["t"] = calendars.ms_at_local_midnight(day, "crypto" if series.crypto else "stock")
    return json.dumps(bar, separators=(",", ":")).encode()
