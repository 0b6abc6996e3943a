"""`split_consistency`: do a symbol's as-traded prices agree with its recorded splits, and does any
move look like a split nobody recorded? Pure.

Every session is judged on a window of `WINDOW_SESSIONS` sessions either side of it: the sessions
before it, and the session itself with the ones after it. The overnight move of a session is
m = open / previous close; its log is compared with the log of a split's price factor f
(split_from / split_to: 0.5 for a 2-for-1, 10 for a 1-for-10).

**A recorded split** (active, with an execution date) is confirmed by the first session on or after
its date when the open or the close of that session, against the previous close, is within
`recorded_tolerance(f)` of f; or, when the move is within `RECORDED_CAP` of f but not that close,
when the share volume stepped nearer the split's inverse ratio than not at all. Otherwise it is
*unconfirmed* (the adjusted prices are wrong by its ratio).

**An unrecorded split** (an *unexplained jump*) needs all the evidence a split leaves:

1. the overnight move is within `RATIO_TOLERANCE` of a ratio companies use (`SPLIT_RATIOS`, each
   way), and no confirmed recorded split explains the session;
2. the share volume steps by the inverse ratio: the median volume from the session on against the
   median before, within `VOLUME_TOLERANCE` (log) of 1/f;
3. the dollar volume does not jump: its median after against before within
   `DOLLAR_VOLUME_TOLERANCE`, and the session's own dollar volume within
   `DAY_DOLLAR_VOLUME_TOLERANCE` of the median before (a squeeze, a crash, a trial result trade many
   times the usual dollars that day; a split does not);
4. the move does not reverse: the median close from the session on is within `LEVEL_TOLERANCE` of
   the previous close times f;
5. the sessions before were quiet next to the step: no close-to-close move larger than |log f| /
   `QUIET_FACTOR` (a split is one step in an ordinary stretch; a crash or a squeeze comes in a run
   of large moves);
6. every session of both windows traded (volume above zero): without volume there is no evidence.

**A large move** (|log m| >= log 1.45 with the close confirming it) that is neither explained nor
evidenced is reported with the reason it is not called a split, and never fails the check.

Thresholds, from real histories (market_pipeline_tests/data/real_histories, and scans of two
Yahoo Finance dumps of 6,300+ US histories each; docs/data-quality.md has the counts). The opening
moves of 62 real splits of listed ratios 2014-2024 fell within 0.023 (log) of their factor for 56 of
them, and within 0.035 for 57; the rest (0.039-0.052) came with an overnight gap of their own, as do
spin-offs and falls that happen to land near a ratio (Teradata's spin-off from NCR opened 0.037 off
a 2-for-1): `RATIO_TOLERANCE` = 0.035. The share-volume steps of the real splits against their
inverse ratio were within 0.58 for 55 of the 62, while a stock that fell near a ratio with its
turnover unchanged (trial results, a spin-off, Netflix in 2011) stepped 0.63-0.72 away:
`VOLUME_TOLERANCE` = 0.6. Dollar-volume steps spread to 0.82 (1.0), the split-day dollar volume
reached 1.22 of the usual (1.4), the level after the split stayed within 0.07 (0.2), and the largest
move before one was 0.106 for a 5-for-1 (|log f| / 4 = 0.40). Reverse splits of distressed companies
open 20-30% below the new basis: log 0.7 = -0.36, so `RECORDED_CAP` = 0.45, while half the distance
to "no split" (|log f| / 2) keeps a 3-for-2 from being confused with nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd

from market_pipeline.corporate_actions.events import Split

RULES_VERSION = 3  # bump when the rule changes: kept check states computed by another rule are not reused
WINDOW_SESSIONS = 10
SPLIT_RATIOS = (1.5, 2, 3, 4, 5, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50, 100, 200)
RATIO_TOLERANCE = 0.035
VOLUME_TOLERANCE = 0.6
DOLLAR_VOLUME_TOLERANCE = 0.6
DAY_DOLLAR_VOLUME_TOLERANCE = 1.4
LEVEL_TOLERANCE = 0.2
QUIET_FACTOR = 4.0
RECORDED_CAP = 0.45
LARGE_LOG_MOVE = float(np.log(1.45))
MAX_EXAMPLES = 20

# log price factors of the ratios, each way (a 2-for-1 halves the price, a 1-for-2 doubles it)
_RATIOS = np.array([r for x in SPLIT_RATIOS for r in (float(x), 1 / float(x))])
_LOG_FACTORS = -np.log(_RATIOS)
_SMALLEST_CANDIDATE = min(float(np.abs(_LOG_FACTORS).min()) - RATIO_TOLERANCE, LARGE_LOG_MOVE)


def recorded_tolerance(price_factor: float) -> float:
    """|log m - log f| allowed for a recorded split on price alone (see the module docstring)."""
    return min(RECORDED_CAP, abs(float(np.log(price_factor))) / 2)


def ratio_label(price_factor: float) -> str:
    """`2-for-1`, `1-for-10`, `3-for-2` for a price factor of 0.5, 10, 2/3."""
    ratio = 1 / price_factor
    for new in range(1, 201):
        old = new / ratio
        if abs(old - round(old)) < 1e-6 and round(old) >= 1:
            return f"{new}-for-{int(round(old))}"
    return f"{ratio:.4g}-for-1"


@dataclasses.dataclass(frozen=True)
class ConsistencyReport:
    passed: bool
    splits_checked: int
    splits_outside_bars: int
    unexplained_jumps: list[dict]  # {"date", "previous_date", "move", "ratio"}: evidence-backed unrecorded splits
    unconfirmed_splits: list[dict]  # {"date", "ratio", "expected_move", "observed_move", "id"}
    duplicates: list[dict]  # {"date", "ratio", "id", "reason"}
    large_moves: list[dict] = dataclasses.field(default_factory=list)  # {"date", "previous_date", "move", "why_not_a_split"}
    unexplained_count: int | None = None  # every one, when the lists keep only the first MAX_EXAMPLES
    unconfirmed_count: int | None = None
    large_move_count: int | None = None

    @property
    def severity(self) -> str:
        """ERROR when the adjusted prices are wrong by a split's ratio (a failing report), else WARN."""
        return "WARN" if self.passed else "ERROR"

    def metadata(self) -> dict[str, str | list[dict]]:
        """The check's metadata: text, or rows for a table; a list with nothing in it is left out, and
        `<name>_total` says how many there are when a list keeps only the first MAX_EXAMPLES."""
        jumps, unconfirmed, large = self.counts()
        out: dict[str, str | list[dict]] = {
            "splits_checked": str(self.splits_checked),
            "splits_outside_bars": str(self.splits_outside_bars),
        }
        for name, rows, total, dates in (
            ("unexplained_jumps", self.unexplained_jumps, jumps, "unexplained_jump_dates"),
            ("unconfirmed_splits", self.unconfirmed_splits, unconfirmed, None),
            ("duplicates", self.duplicates, len(self.duplicates), None),
            ("large_moves", self.large_moves, large, "large_move_dates"),
        ):
            if not rows:
                continue
            out[name] = list(rows[:MAX_EXAMPLES])
            if dates:
                out[dates] = ", ".join(row["date"] for row in rows[:MAX_EXAMPLES])
            if total > MAX_EXAMPLES:
                out[f"{name}_total"] = str(total)
        return out

    def counts(self) -> tuple[int, int, int]:
        """(unexplained jumps, unconfirmed splits, large moves), each in full."""
        return (
            len(self.unexplained_jumps) if self.unexplained_count is None else self.unexplained_count,
            len(self.unconfirmed_splits) if self.unconfirmed_count is None else self.unconfirmed_count,
            len(self.large_moves) if self.large_move_count is None else self.large_move_count,
        )


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


@dataclasses.dataclass(frozen=True)
class Window:
    """A symbol's kept bars (positive open and close), in date order: what a judgement reads."""

    days: np.ndarray  # datetime64[D]
    opens: np.ndarray
    closes: np.ndarray
    volumes: np.ndarray  # NaN where unknown

    def __len__(self) -> int:
        return len(self.days)


def kept_bars(days: np.ndarray, opens: np.ndarray, closes: np.ndarray, volumes: np.ndarray | None) -> Window:
    """The bars with a positive open and close (the others say nothing about a split)."""
    volumes = np.full(len(days), np.nan) if volumes is None else np.asarray(volumes, dtype="float64")
    with np.errstate(invalid="ignore"):
        keep = (opens > 0) & (closes > 0)
    return Window(days[keep], opens[keep], closes[keep], volumes[keep])


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values)) if len(values) else float("nan")


def _log_ratio(a: float, b: float) -> float:
    return float(np.log(a / b)) if a > 0 and b > 0 and np.isfinite(a) and np.isfinite(b) else float("nan")


def _share_volume_step(w: Window, i: int) -> float:
    lo, hi = max(0, i - WINDOW_SESSIONS), min(len(w), i + WINDOW_SESSIONS)
    return _log_ratio(_median(w.volumes[i:hi]), _median(w.volumes[lo:i]))


def split_evidence(w: Window, i: int, log_factor: float) -> list[str]:
    """Why the move into session i is not a split of price factor exp(log_factor): [] when every
    piece of evidence says split (see the module docstring)."""
    lo, hi = max(0, i - WINDOW_SESSIONS), min(len(w), i + WINDOW_SESSIONS)
    volumes, closes = w.volumes, w.closes
    if not (np.all(volumes[lo:hi] > 0) and i > lo):
        return ["no volume on every session around it"]
    why = []
    shares = _share_volume_step(w, i)
    if not abs(shares + log_factor) <= VOLUME_TOLERANCE:
        why.append(f"share volume x{np.exp(shares):.2g}, not x{np.exp(-log_factor):.3g}")
    dollars_before = _median(volumes[lo:i] * closes[lo:i])
    dollars = _log_ratio(_median(volumes[i:hi] * closes[i:hi]), dollars_before)
    day = _log_ratio(volumes[i] * closes[i], dollars_before)
    if not abs(dollars) <= DOLLAR_VOLUME_TOLERANCE:
        why.append(f"dollar volume x{np.exp(dollars):.2g} after it")
    if not abs(day) <= DAY_DOLLAR_VOLUME_TOLERANCE:
        why.append(f"dollar volume x{np.exp(day):.2g} that day")
    level = _log_ratio(float(np.median(closes[i:hi])), float(closes[i - 1]))
    if not abs(level - log_factor) <= LEVEL_TOLERANCE:
        why.append(f"the price did not stay (median close x{np.exp(level):.3g} of the close before)")
    with np.errstate(divide="ignore", invalid="ignore"):
        before = np.abs(np.log(closes[lo + 1 : i] / closes[lo : i - 1]))
    if len(before) and float(np.nanmax(before)) > abs(log_factor) / QUIET_FACTOR:
        why.append(f"moves of up to {np.expm1(float(np.nanmax(before))):+.0%} in the sessions before")
    return why


def nearest_ratio(log_move: float) -> tuple[float, float]:
    """(log price factor of the nearest split ratio, distance to it)."""
    k = int(np.argmin(np.abs(_LOG_FACTORS - log_move)))
    return float(_LOG_FACTORS[k]), abs(float(_LOG_FACTORS[k]) - log_move)


def judge_recorded(w: Window, i: int, split: Split) -> dict | None:
    """Does session i (the first on or after the split's date) show `split`: None, or its
    unconfirmed entry."""
    expected = float(np.log(split.price_factor))
    overnight = _log_ratio(float(w.opens[i]), float(w.closes[i - 1]))
    close = _log_ratio(float(w.closes[i]), float(w.closes[i - 1]))
    off = min(abs(overnight - expected), abs(close - expected))
    if off <= recorded_tolerance(split.price_factor):
        return None
    if off <= RECORDED_CAP:  # the price allows it: the volume decides
        shares = _share_volume_step(w, i)
        if np.isfinite(shares) and abs(shares + expected) < abs(shares):
            return None
    return {
        "date": split.execution_date.isoformat(),
        "ratio": split.label,
        "id": split.provider_id,
        "expected_move": round(float(np.exp(expected)), 6),
        "observed_move": round(float(np.exp(overnight)), 6),
    }


@dataclasses.dataclass
class Judged:
    """What judging some sessions found (lists keep the first MAX_EXAMPLES, counts every one)."""

    checked: int = 0
    outside: int = 0
    jumps: list[dict] = dataclasses.field(default_factory=list)
    jump_count: int = 0
    unconfirmed: list[dict] = dataclasses.field(default_factory=list)
    unconfirmed_count: int = 0
    large: list[dict] = dataclasses.field(default_factory=list)
    large_count: int = 0

    def add(self, kind: str, entry: dict) -> None:
        items = getattr(self, kind)
        if len(items) < MAX_EXAMPLES:
            items.append(entry)
        count = {"jumps": "jump_count", "unconfirmed": "unconfirmed_count", "large": "large_count"}[kind]
        setattr(self, count, getattr(self, count) + 1)


def judge(w: Window, start: int, stop: int, splits: list[Split], history_start: np.datetime64, found: Judged) -> None:
    """Judge sessions start..stop-1 of `w` (each with the window of sessions `w` holds around it) into
    `found`: the recorded splits that fall on them, then every unexplained move."""
    if stop <= start:
        return
    n = len(w)
    explained: set[int] = set()
    sessions = [int(np.searchsorted(w.days, np.datetime64(s.execution_date, "D"), side="left")) for s in splits]
    for k in sorted(range(len(splits)), key=lambda k: sessions[k]):  # in date order, then listing order
        split, i = splits[k], sessions[k]
        if not start <= i < stop:
            continue  # judged with other sessions, or after the last bar
        if w.days[i] == history_start:
            found.outside += 1  # no session before it to compare with
            continue
        found.checked += 1
        miss = judge_recorded(w, i, split)
        if miss is None:
            explained.add(i)
        else:
            found.add("unconfirmed", miss)
    first = max(start, 1)
    if stop <= first:
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        overnight = np.log(w.opens[first:stop] / w.closes[first - 1 : stop - 1])
        close_to_close = np.log(w.closes[first:stop] / w.closes[first - 1 : stop - 1])
    # only a move of at least the smallest ratio's distance from 1, less the tolerance, can be either
    for k in np.flatnonzero(np.abs(overnight) >= _SMALLEST_CANDIDATE).tolist():
        i = first + k
        if i in explained or i >= n:
            continue
        move = float(overnight[k])
        large = abs(move) >= LARGE_LOG_MOVE and abs(float(close_to_close[k])) >= LARGE_LOG_MOVE and move * close_to_close[k] > 0
        near = nearest_ratio(move)[1] <= RATIO_TOLERANCE
        if not (near or large):
            continue
        entry = {"date": str(w.days[i]), "previous_date": str(w.days[i - 1]), "move": round(float(np.exp(move)), 6)}
        if near:
            log_factor, _ = nearest_ratio(move)
            why = split_evidence(w, i, log_factor)
            if not why:
                found.add("jumps", {**entry, "ratio": ratio_label(float(np.exp(log_factor)))})
                continue
        else:
            why = ["not near a split ratio"]
        if large:
            found.add("large", {**entry, "why_not_a_split": "; ".join(why)})


def report(found: Judged, splits: list[Split], last_day: np.datetime64 | None) -> ConsistencyReport:
    """The report of what judging every session found; active splits after `last_day` (the last kept
    bar) are outside the bars."""
    later = sum(1 for s in active_splits(splits) if last_day is None or np.datetime64(s.execution_date, "D") > last_day)
    return ConsistencyReport(
        not found.jump_count and not found.unconfirmed_count, found.checked, found.outside + later, found.jumps,
        found.unconfirmed, duplicate_entries(splits), found.large, found.jump_count, found.unconfirmed_count,
        found.large_count,
    )


def evaluate(bars: pd.DataFrame, splits: Iterable[Split]) -> ConsistencyReport:
    """Check as-traded `bars` (date, open, close and volume when known; any order; a date given twice
    keeps its last bar) against the symbol's splits, every session judged at once."""
    splits = list(splits)
    days = np.asarray(bars["date"].to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]")
    columns = {
        name: bars[name].to_numpy(dtype="float64", na_value=np.nan) if name in bars else np.full(len(bars), np.nan)
        for name in ("open", "close", "volume")
    }
    valid = np.flatnonzero(~np.isnat(days))
    order = valid[np.argsort(days[valid], kind="stable")]
    if len(order) > 1:  # one bar per date: the last one given
        ordered = days[order]
        order = order[np.r_[ordered[1:] != ordered[:-1], True]]
    w = kept_bars(days[order], columns["open"][order], columns["close"][order], columns["volume"][order])
    found = Judged()
    if len(w):
        judge(w, 0, len(w), active_splits(splits), w.days[0], found)
    return report(found, splits, w.days[-1] if len(w) else None)
