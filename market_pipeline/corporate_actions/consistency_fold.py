"""`split_consistency` computed as a fold over a symbol's bars in date order, so a daily refresh can
keep what the old bars said and read only the new ones. Pure.

`SplitFold` is the state after some leading part of the bars; `extend_splits(state, ...)` adds the
next bars (all dated after the state's); `finish_splits(state, splits)` gives the report.
A property test holds it to `consistency.evaluate` (every session judged at once) at every cut.

What crosses a chunk's edge: a session is judged on the `WINDOW_SESSIONS` kept bars either side of
it, so the state keeps the last 2 x `WINDOW_SESSIONS` kept bars (date, open, close, volume) and the
date through which every session has been judged: a session whose window after it is not complete
yet waits for the next bars, or for `finish_splits`, which judges it on the bars there are. A split
is judged with the session it falls on; one dated after the last kept bar waits (and is outside
the bars at the finish). The state is only valid for the split list it was computed with
(`splits_digest`) and the rules it was computed by (`consistency.RULES_VERSION`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from market_pipeline.corporate_actions.consistency import (
    WINDOW_SESSIONS,
    ConsistencyReport,
    Judged,
    Window,
    active_splits,
    judge,
    kept_bars,
    report,
)
from market_pipeline.corporate_actions.events import Split

TAIL = 2 * WINDOW_SESSIONS


@dataclass
class SplitFold:
    first_date: str | None = None  # the first kept bar of the history (ISO)
    judged_through: str | None = None  # every kept bar up to this date is judged
    tail_days: list[str] = field(default_factory=list)  # the last TAIL kept bars
    tail_opens: list[float] = field(default_factory=list)
    tail_closes: list[float] = field(default_factory=list)
    tail_volumes: list[float | None] = field(default_factory=list)  # None: unknown
    found: dict = field(default_factory=lambda: dataclasses.asdict(Judged()))


def splits_digest(splits: Sequence[Split]) -> str:
    """What a SplitFold depends on in the symbol's split list (any change, order included)."""
    text = repr([(s.provider_id, s.status, *s.content()) for s in splits])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tail_window(state: SplitFold) -> Window:
    return Window(
        np.array(state.tail_days, dtype="datetime64[D]"),
        np.array(state.tail_opens, dtype="float64"),
        np.array(state.tail_closes, dtype="float64"),
        np.array([np.nan if v is None else v for v in state.tail_volumes], dtype="float64"),
    )


def _pending_from(w: Window, judged_through: str | None) -> int:
    """The index of the first session of `w` not judged yet."""
    if judged_through is None:
        return 0
    return int(np.searchsorted(w.days, np.datetime64(judged_through, "D"), side="right"))


def _judged(state: SplitFold) -> Judged:
    return Judged(**{k: (list(v) if isinstance(v, list) else v) for k, v in state.found.items()})


def extend_splits(
    state: SplitFold, days: np.ndarray, opens: np.ndarray, closes: np.ndarray, splits: Sequence[Split],
    volumes: np.ndarray | None = None,
) -> SplitFold:
    """The state after the bars `days` (datetime64[D], sorted, unique, all after the state's) with
    their opens, closes and volumes (float64; volumes None or NaN where unknown)."""
    new = kept_bars(days, opens, closes, volumes)
    if len(new) == 0:
        return state
    tail = _tail_window(state)
    w = Window(*(np.concatenate((a, b)) for a, b in zip(dataclasses.astuple(tail), dataclasses.astuple(new))))
    first = state.first_date or str(w.days[0])
    found = _judged(state)
    start = _pending_from(w, state.judged_through)
    stop = len(w) - WINDOW_SESSIONS + 1  # the sessions whose window after them is complete
    judge(w, start, stop, active_splits(splits), np.datetime64(first, "D"), found)
    judged_through = str(w.days[stop - 1]) if stop > start else state.judged_through
    keep = slice(max(0, len(w) - TAIL), len(w))
    return SplitFold(
        first, judged_through,
        [str(d) for d in w.days[keep]], w.opens[keep].tolist(), w.closes[keep].tolist(),
        [None if not np.isfinite(v) else float(v) for v in w.volumes[keep]],
        dataclasses.asdict(found),
    )


def finish_splits(state: SplitFold, splits: Sequence[Split]) -> ConsistencyReport:
    """The report over every bar folded into `state`: the sessions still waiting are judged on the
    bars there are, and splits after the last kept bar are outside the bars."""
    active = active_splits(splits)
    found = _judged(state)
    w = _tail_window(state)
    if len(w):
        judge(w, _pending_from(w, state.judged_through), len(w), active, np.datetime64(state.first_date, "D"), found)
    return report(found, list(splits), w.days[-1] if len(w) else None)
