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


def dividend_factors(dividends: Iterable[Dividend], bars: pd.DataFrame | None) -> tuple[list[tuple[dt.date, float]], dict[str, str]]:
    """(ex date, 1 - D / C) of each applicable active dividend, and the reasons of those not applied."""
    applied, unapplied = [], {}
    active = [d for d in dividends if d.status == "active"]
    if not active:
        return applied, unapplied
    dates = _as_dates(bars) if bars is not None and not bars.empty else np.array([], dtype="datetime64[D]")
    closes = bars["close"].to_numpy(dtype="float64") if len(dates) else np.array([])
    ex = np.array([np.datetime64(d.ex_dividend_date, "D") for d in active])
    before = np.searchsorted(dates, ex, side="left") - 1  # the last session before each ex-date
    for dividend, i in zip(active, before.tolist()):
        if i < 0:
            unapplied[dividend.provider_id] = f"no stored close before the ex-date {dividend.ex_dividend_date}"
            continue
        close = closes[i]
        if not close > dividend.cash_amount:
            unapplied[dividend.provider_id] = (
                f"cash {dividend.cash_amount:g} is not below the close {close:g} before {dividend.ex_dividend_date}"
            )
            continue
        applied.append((dividend.ex_dividend_date, 1.0 - dividend.cash_amount / close))
    return applied, unapplied


def factor_ranges(splits: Iterable[Split], dividends: Iterable[Dividend] = (), bars: pd.DataFrame | None = None) -> FactorRanges:
    """The split and total-return factors between consecutive event dates (only active events count)."""
    split_events = [(s.execution_date, s.price_factor) for s in splits if s.status == "active"]
    dividend_events, unapplied = dividend_factors(dividends, bars)
    events = pd.DataFrame(
        {
            "date": [d for d, _ in split_events] + [d for d, _ in dividend_events],
            "split": [f for _, f in split_events] + [1.0] * len(dividend_events),
            "dividend": [1.0] * len(split_events) + [f for _, f in dividend_events],
        }
    )
    if events.empty:
        empty = pd.DataFrame(
            {"valid_from": [], "valid_to": [], "split_factor": [], "total_return_factor": []}
        )
        return FactorRanges(empty.astype({"split_factor": "float64", "total_return_factor": "float64"}), unapplied)
    by_date = events.groupby("date", sort=True).prod()  # several events on one date multiply
    split = by_date["split"].to_numpy()
    total = split * by_date["dividend"].to_numpy()
    # a bar before boundary k takes the product of events k..n-1: reversed cumulative products
    split_factor = np.cumprod(split[::-1])[::-1]
    total_factor = np.cumprod(total[::-1])[::-1]
    boundaries = list(by_date.index)
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
