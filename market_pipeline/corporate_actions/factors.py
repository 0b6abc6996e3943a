"""Adjustment factors from a symbol's events and its as-traded bars. Pure, vectorised (numpy/pandas).

- `resolve_duplicates`: the same split listed twice a few sessions apart (the SHOP 1-for-10 on
  2022-06-22 and 2022-06-29) is applied once. Among same-ratio listings within
  `DUPLICATE_WINDOW_DAYS`, the one whose date shows the price move of the ratio (as-traded open
  against the previous close) is kept; the others become `duplicate` with a reason. Without bars
  around either date the earliest listing is kept.
- `factor_ranges`: the split factor and the total-return factor of every date range between events.
  A bar dated d is on today's share basis after multiplying its prices by the product of
  `split_from / split_to` of every active split executed after d (volume divided by it). The
  total-return factor multiplies that by `(1 - D / C)` for every cash dividend D with ex-date E > d,
  C being the as-traded close of the last session before E.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from market_pipeline.corporate_actions.events import Dividend, Split

DUPLICATE_WINDOW_DAYS = 21  # "a few sessions": listings of one ratio within three weeks are one event
RANGE_START = dt.date(1900, 1, 1)  # valid_from of the first range (before any bar)


def _as_dates(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(frame["date"].to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]")


def overnight_move(bars: pd.DataFrame, day: dt.date) -> float | None:
    """open of the first session on or after `day` / close of the session before it (as traded).

    None when the bars do not cover both sides of `day`. `bars` has `date`, `open`, `close`,
    sorted by date.
    """
    if bars is None or bars.empty:
        return None
    dates = _as_dates(bars)
    i = int(np.searchsorted(dates, np.datetime64(day, "D"), side="left"))
    if i == 0 or i >= len(dates):
        return None
    previous_close = float(bars["close"].iloc[i - 1])
    today_open = float(bars["open"].iloc[i])
    if not (previous_close > 0 and today_open > 0):
        return None
    return today_open / previous_close


def _fit(split: Split, bars: pd.DataFrame | None) -> float | None:
    """How far the observed overnight move is from the split's price factor (|log|); None: no bars."""
    move = overnight_move(bars, split.execution_date) if bars is not None else None
    if move is None:
        return None
    return abs(np.log(move) - np.log(split.price_factor))


def resolve_duplicates(splits: Sequence[Split], bars: pd.DataFrame | None = None) -> list[Split]:
    """The splits with duplicated listings marked `duplicate` (exactly one of each group stays active).

    Only `active` and `duplicate` splits take part (a duplicate may become active again when the
    evidence changes); `invalid` and `withdrawn` ones are returned unchanged.
    """
    out = list(splits)
    candidates = sorted(
        (i for i, s in enumerate(out) if s.status in ("active", "duplicate")),
        key=lambda i: (out[i].execution_date, out[i].provider_id),
    )
    groups: list[list[int]] = []
    for i in candidates:
        split = out[i]
        for group in groups:
            head = out[group[-1]]
            if (
                np.isclose(head.price_factor, split.price_factor, rtol=1e-9)
                and (split.execution_date - head.execution_date).days <= DUPLICATE_WINDOW_DAYS
            ):
                group.append(i)
                break
        else:
            groups.append([i])
    for group in groups:
        fits = [_fit(out[i], bars) for i in group]
        if all(f is None for f in fits):
            keep = group[0]  # no evidence: the earliest listing
        else:
            keep = min((f, k) for k, f in zip(group, fits) if f is not None)[1]
        kept = out[keep]
        out[keep] = dataclasses.replace(kept, status="active", reason=None)
        for i in group:
            if i == keep:
                continue
            other = out[i]
            head = f"duplicate of the {kept.label} split on {kept.execution_date} ({kept.provider_id}): "
            if fits[group.index(keep)] is None:
                reason = head + "same ratio within a few sessions, no bars to tell them apart; the earliest is applied"
            else:
                reason = head + f"the prices move by that ratio on {kept.execution_date}, not on {other.execution_date}"
            out[i] = dataclasses.replace(other, status="duplicate", reason=reason)
    return out


@dataclasses.dataclass(frozen=True)
class FactorRanges:
    """Factors per date range: a bar with valid_from <= date < valid_to takes that row's factors.

    Bars on or after the last event's date have factor 1 and no row. `unapplied` lists dividends
    (provider id -> reason) that could not be turned into a factor.
    """

    frame: pd.DataFrame  # valid_from, valid_to (datetime.date), split_factor, total_return_factor
    unapplied: dict[str, str]


def dividend_multipliers(ex_dates: np.ndarray, cash: np.ndarray, bar_dates: np.ndarray, closes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For cash dividends (ex-dates as datetime64[D], cash amounts) against as-traded bars (dates
    ascending as datetime64[D], closes): (1 - D / C with C the close of the last session before each
    ex-date, the index of that session (-1: none), whether the dividend applies: such a session
    exists and its close is above the cash)."""
    before = np.searchsorted(bar_dates, ex_dates, side="left") - 1  # the last session before each ex-date
    close = np.where(before >= 0, closes[np.maximum(before, 0)] if len(closes) else np.nan, np.nan)
    applies = (before >= 0) & (close > cash)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - cash / close, before, applies


def dividend_factors(dividends: Iterable[Dividend], bars: pd.DataFrame | None) -> tuple[list[tuple[dt.date, float]], dict[str, str]]:
    """(ex date, 1 - D / C) of each applicable active dividend, and the reasons of those not applied."""
    applied, unapplied = [], {}
    active = [d for d in dividends if d.status == "active"]
    if not active:
        return applied, unapplied
    dates = _as_dates(bars) if bars is not None and not bars.empty else np.array([], dtype="datetime64[D]")
    closes = bars["close"].to_numpy(dtype="float64") if len(dates) else np.array([])
    ex = np.array([np.datetime64(d.ex_dividend_date, "D") for d in active])
    cash = np.array([d.cash_amount for d in active], dtype="float64")
    factors, before, applies = dividend_multipliers(ex, cash, dates, closes)
    for k, dividend in enumerate(active):
        if before[k] < 0:
            unapplied[dividend.provider_id] = f"no stored close before the ex-date {dividend.ex_dividend_date}"
        elif not applies[k]:
            unapplied[dividend.provider_id] = (
                f"cash {dividend.cash_amount:g} is not below the close {closes[before[k]]:g} before {dividend.ex_dividend_date}"
            )
        else:
            applied.append((dividend.ex_dividend_date, float(factors[k])))
    return applied, unapplied


def cumulative_factors(dates: np.ndarray, split: np.ndarray, dividend: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events (dates as datetime64[D], each a split price factor and a dividend factor, 1.0 where it
    is not one) as (distinct dates ascending, the split factor and the total-return factor of a bar
    before each): the events of one date multiply in the order given, then the products of every
    date from each on."""
    order = np.argsort(dates, kind="stable")
    dates, split, dividend = dates[order], split[order], dividend[order]
    starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
    split = np.multiply.reduceat(split, starts)  # several events on one date multiply
    total = split * np.multiply.reduceat(dividend, starts)
    # a bar before boundary k takes the product of events k..n-1: reversed cumulative products
    return dates[starts], np.cumprod(split[::-1])[::-1], np.cumprod(total[::-1])[::-1]


def factor_ranges(splits: Iterable[Split], dividends: Iterable[Dividend] = (), bars: pd.DataFrame | None = None) -> FactorRanges:
    """The split and total-return factors between consecutive event dates (only active events count)."""
    split_events = [(s.execution_date, s.price_factor) for s in splits if s.status == "active"]
    dividend_events, unapplied = dividend_factors(dividends, bars)
    if not split_events and not dividend_events:
        empty = pd.DataFrame(
            {"valid_from": [], "valid_to": [], "split_factor": [], "total_return_factor": []}
        )
        return FactorRanges(empty.astype({"split_factor": "float64", "total_return_factor": "float64"}), unapplied)
    dates = np.array([np.datetime64(d, "D") for d, _ in split_events + dividend_events], dtype="datetime64[D]")
    boundaries, split_factor, total_factor = cumulative_factors(
        dates,
        np.array([f for _, f in split_events] + [1.0] * len(dividend_events), dtype="float64"),
        np.array([1.0] * len(split_events) + [f for _, f in dividend_events], dtype="float64"),
    )
    boundaries = boundaries.astype(object).tolist()  # datetime.date
    frame = pd.DataFrame(
        {
            "valid_from": [RANGE_START] + boundaries[:-1],
            "valid_to": boundaries,
            "split_factor": split_factor,
            "total_return_factor": total_factor,
        }
    )
    return FactorRanges(frame, unapplied)


def factors_on(ranges: pd.DataFrame, dates: Sequence[dt.date] | pd.Series) -> pd.DataFrame:
    """split_factor and total_return_factor of each date (1 after the last event): what the views apply."""
    days = np.asarray(pd.to_datetime(pd.Series(dates)).to_numpy(), dtype="datetime64[D]")
    out = pd.DataFrame({"split_factor": np.ones(len(days)), "total_return_factor": np.ones(len(days))})
    if ranges.empty or not len(days):
        return out
    upper = np.array([np.datetime64(d, "D") for d in ranges["valid_to"]])
    k = np.searchsorted(upper, days, side="right")  # the first range whose valid_to > date
    inside = k < len(upper)
    out.loc[inside, "split_factor"] = ranges["split_factor"].to_numpy()[k[inside]]
    out.loc[inside, "total_return_factor"] = ranges["total_return_factor"].to_numpy()[k[inside]]
    return out
