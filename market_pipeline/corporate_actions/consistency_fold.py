"""`split_consistency` computed as a fold over a symbol's bars in date order, so a daily refresh can
keep what the old bars said and read only the new ones. Pure.

`SplitFold` is the state after some leading part of the bars; `extend_splits(state, chunk, splits)`
adds the next bars (all dated after the state's); `finish_splits(state, splits)` gives the same
`ConsistencyReport` as `consistency.evaluate` over all the bars (a property test holds them equal).

What crosses a chunk's edge: the overnight move into the chunk's first bar needs the state's last
kept bar (positive open and close), and a split is judged by the first kept bar on or after its
execution date, so a split dated after the state's last kept bar waits for the chunk that holds it.
The state is only valid for the split list it was computed with (see `splits_digest`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from market_pipeline.corporate_actions.consistency import (
    ConsistencyReport,
    active_splits,
    duplicate_entries,
    judge_split,
    unexplained_jumps,
)
from market_pipeline.corporate_actions.events import Split


@dataclass
class SplitFold:
    last_date: str | None = None  # the last kept bar folded in (ISO) and its close
    last_close: float | None = None
    checked: int = 0
    outside: int = 0  # splits before the first kept bar
    jumps: list[dict] = field(default_factory=list)
    unconfirmed: list[list] = field(default_factory=list)  # [index among the active splits, entry]


def splits_digest(splits: Sequence[Split]) -> str:
    """What a SplitFold depends on in the symbol's split list (any change, order included)."""
    text = repr([(s.provider_id, s.status, *s.content()) for s in splits])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def extend_splits(state: SplitFold, days: np.ndarray, opens: np.ndarray, closes: np.ndarray, splits: Sequence[Split]) -> SplitFold:
    """The state after the bars `days` (datetime64[D], sorted, all after the state's) with their
    opens and closes (float64)."""
    with np.errstate(invalid="ignore"):
        keep = (opens > 0) & (closes > 0)
    days, opens, closes = days[keep], opens[keep], closes[keep]
    if len(days) == 0:
        return state
    last = np.datetime64(state.last_date, "D") if state.last_date else None
    if last is not None:
        days = np.concatenate(([last], days))
        opens = np.concatenate(([np.nan], opens))
        closes = np.concatenate(([state.last_close], closes))
    checked, outside, unconfirmed = state.checked, state.outside, list(state.unconfirmed)
    with np.errstate(invalid="ignore", divide="ignore"):
        overnight = np.log(opens[1:] / closes[:-1])  # move into bar i+1
        close_to_close = np.log(closes[1:] / closes[:-1])
    explained = np.zeros(len(overnight), dtype=bool)
    for index, split in enumerate(active_splits(splits)):
        day = np.datetime64(split.execution_date, "D")
        if (last is not None and day <= last) or day > days[-1]:
            continue  # judged with earlier bars, or waits for a later bar
        i = int(np.searchsorted(days, day, side="left"))
        if i == 0:
            outside += 1
            continue
        checked += 1
        miss = judge_split(split, overnight, i, explained)
        if miss is not None:
            unconfirmed.append([index, miss])
    jumps = state.jumps + unexplained_jumps(days, overnight, close_to_close, explained)
    return SplitFold(str(days[-1]), float(closes[-1]), checked, outside, jumps, unconfirmed)


def finish_splits(state: SplitFold, splits: Sequence[Split]) -> ConsistencyReport:
    """The report over every bar folded into `state` (splits after the last kept bar are outside)."""
    last = np.datetime64(state.last_date, "D") if state.last_date else None
    later = sum(1 for s in active_splits(splits) if last is None or np.datetime64(s.execution_date, "D") > last)
    duplicates = duplicate_entries(splits)
    unconfirmed = [entry for _, entry in sorted(state.unconfirmed, key=lambda pair: pair[0])]
    passed = not state.jumps and not unconfirmed
    return ConsistencyReport(passed, state.checked, state.outside + later, list(state.jumps), unconfirmed, duplicates)
