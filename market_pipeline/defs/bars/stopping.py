"""A run of `ohlcv_daily` that meets an error every later symbol would meet too stops at once.

Such errors: the warehouse's disk is full, the warehouse is read-only or gone and does not come back
(`market_pipeline.warehouse.faults`), or Polygon asks for a wait longer than the client's longest
(`PolygonError.stops_run`). Going on would fetch bars that cannot be stored, or ask a server that
said to wait. The op then

- stops fetching (the fetches not started are cancelled, the client sends nothing more);
- marks every symbol of the run that did not complete `failed`, with that reason (the symbols that
  failed on their own keep theirs), in one transaction;
- raises a `Failure` naming the reason, with every symbol's reason in its metadata (`errors`); a
  step retry is allowed only when the warehouse was unreachable (a server that may come back).

The op claims its symbols up front (`claim`: all of them `in_progress` with the run's id, one
statement), so even when that last write cannot be made either, no symbol of the run is left
looking untouched: each is `in_progress` in a run that has ended, and the next `market-pipeline`
command, or the run-failure sensor, marks it failed with the reason the run recorded
(`market_pipeline.defs.bars.released`).
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import Failure, MetadataValue

STOPPED_METADATA = "run_stopped"


def claim(context, registry, symbols: Sequence[str]) -> None:
    """Mark the run's symbols `in_progress` with its run id before anything is fetched. A warehouse
    that cannot take even this write stops the run here: nothing is fetched."""
    if not symbols:
        return
    try:
        registry.mark_in_progress_many(list(symbols), context.run_id)
    except Exception as exc:
        from market_pipeline.warehouse.faults import UNREACHABLE, lost

        reason = lost(exc, registry.engine)
        if reason is None:
            raise
        context.log.error(f"the run stops before fetching anything: {reason}")
        raise Failure(
            description=f"the run stopped before fetching anything: {reason}",
            metadata={STOPPED_METADATA: reason, "failed_symbols": MetadataValue.json(list(symbols)),
                      "errors": MetadataValue.json({s: f"not fetched: {reason}" for s in symbols})},
            allow_retries=reason.startswith(UNREACHABLE),
        ) from None


def stopped_failure(context, registry, scope: Sequence[str], stored: set[str], failures, stop) -> Failure:
    """Mark the run's symbols that did not complete `failed` (their own reason, or the stop's), and
    the Failure that ends the step. `stop`: the SymbolResult whose error stops the run."""
    reason = stop.stop_reason
    own = {r.symbol: r.error or reason for r in failures}
    errors = {
        symbol: own.get(symbol) or f"not fetched: run {context.run_id} stopped: {reason}"
        for symbol in scope if symbol not in stored
    }
    context.log.error(f"{stop.symbol}: {reason}: the run stops; {len(errors)} symbol(s) not stored are marked failed")
    try:
        registry.fail_many(errors, context.run_id)
        recorded = f"{len(errors)} symbol(s) not stored were marked failed"
    except Exception as exc:
        from market_pipeline.warehouse.faults import describe

        recorded = (
            f"{len(errors)} symbol(s) not stored could not be marked failed ({describe(exc)}): they stay in_progress "
            "until the next `market-pipeline` command or the run-failure sensor records them"
        )
        context.log.error(recorded)
    return Failure(
        description=f"the run stopped: {reason}; {recorded}",
        metadata={
            STOPPED_METADATA: reason,
            "failed_symbols": MetadataValue.json(sorted(errors)),
            "errors": MetadataValue.json(errors),
        },
        allow_retries=stop.transient,
    )
