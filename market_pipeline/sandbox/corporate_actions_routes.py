"""The sandbox's corporate-action knobs and list endpoints (mixed into `SandboxServer`).

Knobs: `add_split` (a split that happened; `recorded=False`: listed late, by `record_split`),
`duplicate_split`, `withdraw_split`, `add_dividend`, `withdraw_dividend`, `correct_dividend` (the
provider lists another cash amount under the same id); `corporate_actions_v1`
(False: the v1 endpoints answer 404, as if they did not exist, to exercise the v3 fallback).
"""

from __future__ import annotations

import dataclasses

from market_pipeline import calendars
from market_pipeline.sandbox import corporate_actions as ca
from market_pipeline.sandbox import market as synthetic
from market_pipeline.sandbox.protocol import (
    Response,
    _as_dates,
    _BadRequest,
    _error,
    _json_response,
    _Request,
    decode_cursor,
    encode_cursor,
)


class CorporateActionKnobs:
    """Needs `_lock`, `now` and sets `_book`, `corporate_actions_v1` in `_init_corporate_actions`."""

    def _init_corporate_actions(self) -> None:
        self._book = ca.Book()
        self.corporate_actions_v1 = True

    def clear_knobs(self) -> None:
        """Forget every drop, corruption, revision and listing date, and every corporate-action knob."""
        super().clear_knobs()
        with self._lock:
            self._book = ca.Book()

    def add_split(self, ticker: str, date, split_from: float, split_to: float, *, recorded: bool = True) -> str:
        """A split that happened (the as-traded prices show it); `recorded=False`: not listed until
        `record_split` (a split recorded late). Returns its id."""
        if not (split_from > 0 and split_to > 0):
            raise ValueError("split_from and split_to must be positive")
        split = ca.SplitListing(ticker, _as_dates(date)[0], float(split_from), float(split_to), listed=recorded).with_id()
        with self._lock:
            self._book = dataclasses.replace(self._book, splits=self._book.splits + (split,))
        return split.id

    def record_split(self, ticker: str, date) -> None:
        """The provider lists the (late) split of `ticker` executed on `date`."""
        self._change_splits(ticker, date, lambda s: dataclasses.replace(s, listed=True), actual=True)

    def duplicate_split(self, ticker: str, date, listed_on) -> str:
        """List the split of `date` a second time, on `listed_on` (prices show no move there)."""
        day, original_day = _as_dates(listed_on)[0], _as_dates(date)[0]
        with self._lock:
            original = next(
                (s for s in self._book.splits if s.ticker == ticker and s.execution_date == original_day), None
            )
            if original is None:
                raise ValueError(f"the sandbox has no split of {ticker} on {original_day}")
            copy = dataclasses.replace(original, execution_date=day, actual=False, listed=True, id="").with_id()
            self._book = dataclasses.replace(self._book, splits=self._book.splits + (copy,))
        return copy.id

    def withdraw_split(self, ticker: str, date) -> None:
        """Remove the listing of `ticker`'s split on `date` from the provider's lists (prices unchanged)."""
        self._change_splits(ticker, date, lambda s: dataclasses.replace(s, listed=False), actual=None)

    def add_dividend(self, ticker: str, ex_date, cash_amount: float) -> str:
        dividend = ca.DividendListing(ticker, _as_dates(ex_date)[0], float(cash_amount)).with_id()
        with self._lock:
            self._book = dataclasses.replace(self._book, extra_dividends=self._book.extra_dividends + (dividend,))
        return dividend.id

    def withdraw_dividend(self, dividend_id: str) -> None:
        with self._lock:
            self._book = dataclasses.replace(
                self._book,
                withdrawn_dividends=self._book.withdrawn_dividends | {dividend_id},
                extra_dividends=tuple(d for d in self._book.extra_dividends if d.id != dividend_id),
            )

    def correct_dividend(self, dividend_id: str, cash_amount: float) -> None:
        """The provider corrects a dividend: it lists `cash_amount` under the same id from now on."""
        if not cash_amount > 0:
            raise ValueError("cash_amount must be positive")
        with self._lock:
            known = {d.id for d in self._book.dividends(self._book.dividend_tickers())}
            if dividend_id not in known:
                raise ValueError(f"the sandbox lists no dividend {dividend_id}")
            kept = tuple(c for c in self._book.corrected_dividends if c[0] != dividend_id)
            self._book = dataclasses.replace(self._book, corrected_dividends=kept + ((dividend_id, float(cash_amount)),))

    def dividend_ids(self, ticker: str) -> list[tuple[str, str, float]]:
        """(id, ex-date ISO, cash amount) of the dividends the sandbox lists for `ticker`, by ex-date."""
        listed = self._book.dividends({ticker} & self._book.dividend_tickers())
        return sorted(((d.id, d.ex_dividend_date.isoformat(), d.cash_amount) for d in listed if d.ticker == ticker), key=lambda t: t[1])

    def listed_splits(self, ticker: str) -> list[ca.SplitListing]:
        return [s for s in self._book.splits if s.ticker == ticker and s.listed]

    def _change_splits(self, ticker: str, date, change, actual: bool | None) -> None:
        day = _as_dates(date)[0]
        with self._lock:
            found = [
                s for s in self._book.splits
                if s.ticker == ticker and s.execution_date == day and (actual is None or s.actual == actual)
            ]
            if not found:
                raise ValueError(f"the sandbox has no split of {ticker} on {day}")
            self._book = dataclasses.replace(
                self._book, splits=tuple(change(s) if s in found else s for s in self._book.splits)
            )

    def _split_steps(self, ticker: str, adjusted: bool):
        """The price steps the listed splits put in `ticker`'s served prices (none: the plain series)."""
        return ca.price_steps(self._book.splits, ticker, adjusted)

    def _series(self, ticker: str, adjusted: bool) -> synthetic.Series:
        """The rendered series served for `ticker` (a renamed security's names: one series, see
        `reference.Lifecycle.series_ticker`): as traded, or adjusted by the listed splits."""
        source = self._lifecycle.series_ticker(ticker)
        steps = ca.price_steps(self._book.splits, ticker, adjusted)
        return ca.scaled_series(source, steps) if steps else synthetic.ticker_series(source)

    def _corporate_actions(self, request: _Request) -> Response:
        kind = "splits" if request.endpoint.startswith("splits") else "dividends"
        version = "v3" if request.endpoint.endswith("_v3") else "v1"
        if version == "v1" and not self.corporate_actions_v1:
            return _error(404, request.request_id, "NOT_FOUND", f"Path not found: {request.path}")
        params = decode_cursor(request.query["cursor"]) if "cursor" in request.query else request.query
        today = self.now().astimezone(calendars.UTC).date()
        try:
            rows, following = ca.list_body(kind, version, params, self._book, today)
        except ca.ListRequestError as exc:
            raise _BadRequest(str(exc)) from None
        body = {"results": rows, "status": "OK", "request_id": request.request_id}
        if following is not None:
            body["next_url"] = f"http://{request.host}{request.path}?cursor={encode_cursor(following)}"
        return _json_response(200, body, request.request_id)
