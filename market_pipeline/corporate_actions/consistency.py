"""`split_consistency`: do a symbol's as-traded prices agree with its recorded splits? Pure.

The evidence is the overnight move m = open(session) / close(previous session) of the as-traded bars:

- every active split whose execution date lies inside the bars must show m close to its price
  factor (split_from / split_to): |log m - log factor| <= tolerance, else it is *unconfirmed*;
- every overnight move with |log m| >= `SUSPICIOUS_LOG_MOVE` in the same direction as that day's
  close-to-close move, on a date with no active split, is an *unexplained jump* (it looks like a
  split the provider has not recorded, or one recorded on the wrong date);
- duplicated listings are named but never fail the check (they are applied once).

Tolerance. An ordinary overnight gap of a listed stock is a few percent (the sandbox's daily sigma
is at most 3%; large caps rarely gap more than 10%), while the smallest split the check must still
recognise, a 4-for-3 (factor 0.75), is |log 0.75| = 0.29 away from "nothing happened". The
tolerance is therefore half the distance between the two hypotheses, |log factor| / 2 (the move is
attributed to whichever is nearer), capped at `MAX_TOLERANCE` = 0.2 (a gap of about +-20% on top of
the split): wide enough for earnings-day gaps, narrow enough that a 2-for-1 (0.69) cannot be
confused with a 3-for-2 (0.41) or with no split at all.

Suspicious moves: |log m| >= log 1.45 (the price falls below 0.69x or rises above 1.45x overnight
and the close confirms it) catches every split of 3-for-2 or more and every reverse split of 2-for-3
or more, while staying above the overnight gaps of ordinary trading; smaller splits are still
verified when they are recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd

from market_pipeline.corporate_actions.events import Split

MAX_TOLERANCE = 0.2
SUSPICIOUS_LOG_MOVE = float(np.log(1.45))
MAX_EXAMPLES = 20


def tolerance_for(price_factor: float) -> float:
    """|log m - log factor| allowed for a split with this price factor (see the module docstring)."""
    return min(MAX_TOLERANCE, abs(float(np.log(price_factor))) / 2)


@dataclasses.dataclass(frozen=True)
class ConsistencyReport:
    passed: bool
    splits_checked: int
    splits_outside_bars: int
    unexplained_jumps: list[dict]  # {"date", "previous_date", "move"}
    unconfirmed_splits: list[dict]  # {"date", "ratio", "expected_move", "observed_move", "id"}
    duplicates: list[dict]  # {"date", "ratio", "id", "reason"}

    def metadata(self) -> dict:
        return {
            "passed": self.passed,
            "splits_checked": self.splits_checked,
            "splits_outside_bars": self.splits_outside_bars,
            "unexplained_jumps": self.unexplained_jumps[:MAX_EXAMPLES],
            "unexplained_jump_dates": [j["date"] for j in self.unexplained_jumps[:MAX_EXAMPLES]],
            "unconfirmed_splits": self.unconfirmed_splits[:MAX_EXAMPLES],
            "duplicates": self.duplicates[:MAX_EXAMPLES],
        }


def active_splits(splits: Iterable[Split]) -> list[Split]:
    """The splits the prices must show: active, with an execution date."""
    return [s for s in splits if s.status == "active" and s.execution_date is not None]


def duplicate_entries(splits: Iterable[Split]) -> list[dict]:
    """The duplicated listings, named in the report (they never fail it)."""
    return [
        {"date": s.execution_date.isoformat(), "ratio": s.label, "id": s.provider_id, "reason": s.reason}
        for s in splits
        if s.status == "duplicate"
    ]


def judge_split(split: Split, overnight: np.ndarray, i: int, explained: np.ndarray) -> dict | None:
    """Does the overnight move into bar `i` (overnight[i - 1]) show `split`: marks it explained and
    returns None, or returns the unconfirmed split's entry."""
    expected = float(np.log(split.price_factor))
    observed = float(overnight[i - 1])
    if abs(observed - expected) <= tolerance_for(split.price_factor):
        explained[i - 1] = True
        return None
    return {
        "date": split.execution_date.isoformat(),
        "ratio": split.label,
        "id": split.provider_id,
        "expected_move": round(float(np.exp(expected)), 6),
        "observed_move": round(float(np.exp(observed)), 6),
    }


def unexplained_jumps(dates: np.ndarray, overnight: np.ndarray, close_to_close: np.ndarray, explained: np.ndarray) -> list[dict]:
    """The overnight moves into dates[i + 1] that look like a split no recorded one explains."""
    suspicious = (
        (np.abs(overnight) >= SUSPICIOUS_LOG_MOVE)
        & (np.sign(overnight) == np.sign(close_to_close))
        & (np.abs(close_to_close) >= SUSPICIOUS_LOG_MOVE)
        & ~explained
    )
    return [
        {"date": str(dates[i + 1]), "previous_date": str(dates[i]), "move": round(float(np.exp(overnight[i])), 6)}
        for i in np.flatnonzero(suspicious).tolist()
    ]


def evaluate(bars: pd.DataFrame, splits: Iterable[Split]) -> ConsistencyReport:
    """Check as-traded `bars` (date, open, close; any order) against the symbol's splits."""
    splits = list(splits)
    active, duplicates = active_splits(splits), duplicate_entries(splits)
    if len(bars) < 2:
        return ConsistencyReport(True, 0, len(active), [], [], duplicates)
    # in date order, bars with a positive open and close only (numpy: this runs once per stored symbol)
    dates = np.asarray(bars["date"].to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]")
    opens = bars["open"].to_numpy(dtype="float64", na_value=np.nan)
    closes = bars["close"].to_numpy(dtype="float64", na_value=np.nan)
    order = np.argsort(dates, kind="stable")
    with np.errstate(invalid="ignore"):
        keep = (opens[order] > 0) & (closes[order] > 0)
    order = order[keep]
    if len(order) < 2:
        return ConsistencyReport(True, 0, len(active), [], [], duplicates)
    dates, opens, closes = dates[order], opens[order], closes[order]
    overnight = np.log(opens[1:] / closes[:-1])  # move into session i+1
    close_to_close = np.log(closes[1:] / closes[:-1])

    explained = np.zeros(len(overnight), dtype=bool)
    unconfirmed, checked, outside = [], 0, 0
    for split in active:
        i = int(np.searchsorted(dates, np.datetime64(split.execution_date, "D"), side="left"))
        if i == 0 or i >= len(dates):
            outside += 1
            continue
        checked += 1
        miss = judge_split(split, overnight, i, explained)
        if miss is not None:
            unconfirmed.append(miss)
    jumps = unexplained_jumps(dates, overnight, close_to_close, explained)
    passed = not jumps and not unconfirmed
    return ConsistencyReport(passed, checked, outside, jumps, unconfirmed, duplicates)
