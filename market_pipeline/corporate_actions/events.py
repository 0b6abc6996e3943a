"""Split and dividend events: parsing Polygon's rows (v1 and deprecated v3 shapes) and validating them.

Pure functions, no I/O. A row that cannot be applied (a zero, negative or missing ratio, a negative,
zero or non-USD cash amount, an unknown adjustment or distribution type, an unparseable date) is
returned with `status="invalid"` and a `reason`: it is stored flagged, never applied, and never fails
a run.

Row shapes (see POLYGON_API.md, "Corporate actions"):

- `/stocks/v1/splits`: `id`, `ticker`, `execution_date`, `split_from`, `split_to`,
  `adjustment_type` (`forward_split`, `reverse_split`, `stock_dividend`),
  `historical_adjustment_factor`.
- `/v3/reference/splits`: `execution_date`, `split_from`, `split_to`, `ticker`, sometimes `id`;
  no `adjustment_type` (derived from the ratio).
- `/stocks/v1/dividends`: `id`, `ticker`, `ex_dividend_date`, `declaration_date`, `record_date`,
  `pay_date`, `cash_amount`, `currency`, `split_adjusted_cash_amount`, `distribution_type`,
  `frequency`, `historical_adjustment_factor`.
- `/v3/reference/dividends`: the same dates and `cash_amount`, `dividend_type` (`CD`, `SC`, `LT`,
  `ST`) instead of `distribution_type`, `frequency`, `currency` sometimes absent (then USD).

A row without a provider `id` (v3) gets a stable synthetic one from its content
(`v3:<ticker>:<date>:<from>:<to>` or `v3:<ticker>:<ex date>:<cash>`), so re-reading the same list
finds the same events.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping

SPLIT_TYPES = ("forward_split", "reverse_split", "stock_dividend")
DISTRIBUTION_TYPES = ("recurring", "special", "supplemental", "irregular", "unknown")
# the deprecated v3 `dividend_type` codes and the v1 distribution type they stand for
V3_DIVIDEND_TYPES = {"CD": "recurring", "SC": "special", "LT": "special", "ST": "special"}
STATUSES = ("active", "duplicate", "withdrawn", "invalid")


@dataclasses.dataclass(frozen=True)
class Split:
    """One split row. Prices before `execution_date` times `price_factor` are on the new basis."""

    symbol: str
    provider_id: str
    execution_date: dt.date | None
    split_from: float | None
    split_to: float | None
    adjustment_type: str | None
    historical_adjustment_factor: float | None = None
    status: str = "active"
    reason: str | None = None

    @property
    def price_factor(self) -> float:
        """split_from / split_to: 0.25 for a 4-for-1, 10 for a 1-for-10 reverse split."""
        return float(self.split_from) / float(self.split_to)

    @property
    def label(self) -> str:
        """`4-for-1` style: new shares for old."""
        return f"{_num(self.split_to)}-for-{_num(self.split_from)}"

    def content(self) -> tuple:
        """What identifies a change of the event (the provider may correct a row under the same id)."""
        return (self.execution_date, self.split_from, self.split_to, self.adjustment_type)


@dataclasses.dataclass(frozen=True)
class Dividend:
    """One cash dividend row; `cash_amount` is as declared (not split-adjusted)."""

    symbol: str
    provider_id: str
    ex_dividend_date: dt.date | None
    cash_amount: float | None
    currency: str | None
    distribution_type: str | None
    declaration_date: dt.date | None = None
    record_date: dt.date | None = None
    pay_date: dt.date | None = None
    frequency: int | None = None
    status: str = "active"
    reason: str | None = None

    def content(self) -> tuple:
        return (self.ex_dividend_date, self.cash_amount, self.currency, self.distribution_type)


def _num(value) -> str:
    if value is None:
        return "?"
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _date(row: Mapping, key: str) -> tuple[dt.date | None, str | None]:
    """(date, problem) of an optional ISO date field."""
    raw = row.get(key)
    if raw in (None, ""):
        return None, None
    try:
        return dt.date.fromisoformat(str(raw)[:10]), None
    except ValueError:
        return None, f"unparseable {key} {raw!r}"


def _number(row: Mapping, key: str) -> tuple[float | None, str | None]:
    raw = row.get(key)
    if raw is None or raw == "":
        return None, f"missing {key}"
    if isinstance(raw, bool):
        return None, f"{key} is not a number ({raw!r})"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None, f"{key} is not a number ({raw!r})"
    if not math.isfinite(value):
        return None, f"{key} is not finite ({raw!r})"
    return value, None


def _symbol_of(row: Mapping) -> str:
    return str(row.get("ticker") or "").strip()


def _ticker_and_date(row: Mapping, date_key: str, problems: list[str]) -> tuple[str, dt.date | None]:
    """The row's ticker and its event date (`date_key`); what is missing or unparseable goes to `problems`."""
    symbol = _symbol_of(row)
    if not symbol:
        problems.append("missing ticker")
    day, problem = _date(row, date_key)
    if problem:
        problems.append(problem)
    elif day is None:
        problems.append(f"missing {date_key}")
    return symbol, day


def parse_split(row: Mapping) -> Split:
    """A split row of either shape; problems give `status="invalid"` with the reason."""
    problems: list[str] = []
    symbol, execution_date = _ticker_and_date(row, "execution_date", problems)
    split_from, problem_from = _number(row, "split_from")
    split_to, problem_to = _number(row, "split_to")
    problems += [p for p in (problem_from, problem_to) if p]
    for name, value in (("split_from", split_from), ("split_to", split_to)):
        if value is not None and value <= 0:
            problems.append(f"{name} must be positive, got {_num(value)}")
    kind = row.get("adjustment_type")
    if kind is None and split_from and split_to and split_from > 0 and split_to > 0:
        kind = "forward_split" if split_to >= split_from else "reverse_split"
    if kind is not None and kind not in SPLIT_TYPES:
        problems.append(f"unknown adjustment_type {kind!r}")
    if split_from is not None and split_to is not None and split_from > 0 and split_to > 0:
        if split_from == split_to:
            problems.append("split_from equals split_to: a ratio of 1 changes nothing")
        elif kind == "forward_split" and split_to < split_from:
            problems.append(f"a forward_split with split_to {_num(split_to)} < split_from {_num(split_from)}")
        elif kind == "reverse_split" and split_to > split_from:
            problems.append(f"a reverse_split with split_to {_num(split_to)} > split_from {_num(split_from)}")
    factor, _ = _number(row, "historical_adjustment_factor")
    provider_id = str(row.get("id") or "").strip() or (
        f"v3:{symbol}:{row.get('execution_date')}:{_num(split_from)}:{_num(split_to)}"
    )
    return Split(
        symbol=symbol,
        provider_id=provider_id,
        execution_date=execution_date,
        split_from=split_from,
        split_to=split_to,
        adjustment_type=kind,
        historical_adjustment_factor=factor,
        status="invalid" if problems else "active",
        reason="; ".join(problems) or None,
    )


def parse_dividend(row: Mapping) -> Dividend:
    """A dividend row of either shape; problems give `status="invalid"` with the reason."""
    problems: list[str] = []
    symbol, ex_date = _ticker_and_date(row, "ex_dividend_date", problems)
    other_dates = {}
    for key in ("declaration_date", "record_date", "pay_date"):
        other_dates[key], problem = _date(row, key)
        if problem:
            problems.append(problem)
    cash, problem = _number(row, "cash_amount")
    if problem:
        problems.append(problem)
    elif cash <= 0:
        problems.append(f"cash_amount must be positive, got {cash:g}")
    currency = str(row.get("currency") or "USD").upper()
    if currency != "USD":
        problems.append(f"currency {currency} is not USD (prices are in USD)")
    if "distribution_type" in row:
        kind = row.get("distribution_type")
        if kind not in DISTRIBUTION_TYPES:
            problems.append(f"unknown distribution_type {kind!r}")
    else:
        code = row.get("dividend_type")
        kind = V3_DIVIDEND_TYPES.get(code, code)
        if code is not None and code not in V3_DIVIDEND_TYPES:
            problems.append(f"unknown dividend_type {code!r}")
    frequency = row.get("frequency")
    try:
        frequency = int(frequency) if frequency is not None else None
    except (TypeError, ValueError):
        frequency = None
    provider_id = str(row.get("id") or "").strip() or f"v3:{symbol}:{row.get('ex_dividend_date')}:{row.get('cash_amount')}"
    return Dividend(
        symbol=symbol,
        provider_id=provider_id,
        ex_dividend_date=ex_date,
        cash_amount=cash,
        currency=currency,
        distribution_type=kind,
        frequency=frequency,
        status="invalid" if problems else "active",
        reason="; ".join(problems) or None,
        **other_dates,
    )
