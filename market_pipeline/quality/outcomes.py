"""Check outcomes as a run reports them: one line per symbol and a summary line. Pure.

The same words everywhere a run reports: `market-pipeline run` (per symbol, then the summary), the
run's last log line in the Dagster UI, and `market-pipeline stats`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

SEVERITIES = ("ERROR", "WARN")
MAX_NAMED = 10  # failed symbols named in a summary line


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    symbol: str
    asset: str
    check_name: str
    passed: bool
    severity: str | None  # ERROR or WARN (of a failed check)
    summary: str  # "ok", or what failed: the days it names (or its description)
    run_id: str | None = None
    evaluated_at: dt.datetime | None = None

    def text(self) -> str:
        if self.passed:
            return f"{self.check_name} ok"
        level = "" if self.severity in (None, "WARN") else f" ({self.severity})"
        return f"{self.check_name} FAILED{level}: {self.summary}"


def failed(outcomes: Iterable[CheckOutcome], at_least: str = "WARN") -> list[CheckOutcome]:
    """The failed outcomes of severity `at_least` or worse (ERROR only, or WARN and ERROR)."""
    wanted = {"ERROR"} if at_least.upper() == "ERROR" else set(SEVERITIES)
    return [o for o in outcomes if not o.passed and (o.severity or "WARN") in wanted]


def _order(outcome: CheckOutcome) -> tuple:
    """The bars' checks first, then those of what is computed from them."""
    return (outcome.asset != "ohlcv_daily", outcome.asset, outcome.check_name)


def symbol_line(outcomes: Sequence[CheckOutcome]) -> str:
    """`checks ok`, `split_consistency FAILED: 2021-01-27; ...`, or `not checked` (no outcome)."""
    if not outcomes:
        return "not checked"
    bad = sorted((o for o in outcomes if not o.passed), key=_order)
    if not bad:
        return "checks ok"
    return "; ".join(o.text() for o in bad)


def summary_line(outcomes: Sequence[CheckOutcome]) -> str:
    """`check results: 4 symbol(s) ok, 1 failed (1 ERROR, 2 WARN check(s)): AAPL split_consistency ...`."""
    by_symbol: dict[str, list[CheckOutcome]] = {}
    for o in outcomes:
        by_symbol.setdefault(o.symbol, []).append(o)
    if not by_symbol:
        return "check results: none evaluated"
    bad = {s: [o for o in items if not o.passed] for s, items in by_symbol.items()}
    bad = {s: items for s, items in bad.items() if items}
    ok = len(by_symbol) - len(bad)
    if not bad:
        return f"check results: all {len(by_symbol)} symbol(s) ok ({len(outcomes)} check(s) passed)"
    counts = {level: sum(1 for items in bad.values() for o in items if (o.severity or "WARN") == level) for level in SEVERITIES}
    named = "; ".join(f"{s} {symbol_line(items)}" for s, items in sorted(bad.items())[:MAX_NAMED])
    more = f"; and {len(bad) - MAX_NAMED} more symbol(s)" if len(bad) > MAX_NAMED else ""
    return (
        f"check results: {ok} symbol(s) ok, {len(bad)} with a failed check "
        f"({counts['ERROR']} ERROR, {counts['WARN']} WARN): {named}{more}"
    )
