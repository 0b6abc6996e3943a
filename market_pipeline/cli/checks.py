"""Check outcomes on the command line: `run`'s per-symbol check column, summary line and
`--fail-on-check`, and `stats`' checks. Read from the warehouse's `check_outcomes` (each run records
its evaluations there as it makes them), so no Dagster event log is opened."""

from __future__ import annotations

from collections.abc import Sequence

from market_pipeline import settings
from market_pipeline.cli.errors import EXIT_CHECK_FAILED

FAIL_ON_CHECK = ("error", "warn")


def add_fail_on_check(parser) -> None:
    parser.add_argument(
        "--fail-on-check", choices=FAIL_ON_CHECK, default=None,
        help="exit 3 when a check of this severity or worse failed in the run (error: ERROR only; warn: WARN "
             "or ERROR); without it the exit code says only whether every symbol's bars were stored",
    )


def outcomes_by_symbol(symbols: Sequence[str], run_ids: Sequence[str] | None = None) -> dict[str, list]:
    """symbol -> its latest check outcomes (recorded by `run_ids` only, when given)."""
    from market_pipeline.warehouse.views_log import ViewsLog

    out: dict[str, list] = {s: [] for s in symbols}
    for outcome in ViewsLog(settings.db_url()).outcomes(list(symbols), run_ids):
        out.setdefault(outcome.symbol, []).append(outcome)
    return out


def run_checks(symbols: Sequence[str], run_ids: Sequence[str]) -> tuple[dict[str, str], str, list]:
    """Per symbol its check column (`checks ok`, `split_consistency FAILED: 2021-01-27`), the summary
    line, and the outcomes the runs recorded."""
    from market_pipeline.quality.outcomes import summary_line, symbol_line

    by_symbol = outcomes_by_symbol(symbols, run_ids)
    outcomes = [o for items in by_symbol.values() for o in items]
    return {s: symbol_line(by_symbol.get(s, [])) for s in symbols}, summary_line(outcomes), outcomes


def check_exit(outcomes: list, level: str | None) -> int | None:
    """EXIT_CHECK_FAILED when `--fail-on-check level` and a check of that severity failed, else None."""
    from market_pipeline.quality.outcomes import failed

    if level and failed(outcomes, level):
        return EXIT_CHECK_FAILED
    return None


def stats_checks(symbols: Sequence[str]) -> dict[str, dict]:
    """symbol -> {check name: {asset, passed, severity, summary, evaluated_at, run_id}} (latest of each)."""
    return {
        symbol: {
            o.check_name: {
                "asset": o.asset, "passed": o.passed, "severity": o.severity, "summary": o.summary,
                "evaluated_at": o.evaluated_at.isoformat() if o.evaluated_at else None, "run_id": o.run_id,
            }
            for o in items
        }
        for symbol, items in outcomes_by_symbol(symbols).items()
    }
