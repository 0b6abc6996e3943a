"""A fix to Dagster 1.13.27 that the `polygon_api` pool depends on, applied on import of the code
location (every process that runs an ohlcv_daily step imports it first).

The pool is the cross-process, cross-machine pacing point for the Polygon API: with a limit of 1, one
fetching step at a time. Dagster claims a pool slot with `SELECT id … FOR UPDATE SKIP LOCKED` and then
`UPDATE … WHERE id = :id`, two statements; on PostgreSQL its storage connections are in autocommit, so
the row lock ends with the SELECT, and steps of several processes that read the same free slot at
the same instant all "claim" it (measured: up to 5 holders of a 1-slot pool among 6 claimants; see
market_pipeline_tests/test_pool_slots.py, and dagster-io/dagster#34092 for the same flaw in the
assignment step). Here the claim is one statement that only takes a slot still free:

    UPDATE concurrency_slots SET run_id = :run, step_key = :step
    WHERE id = (SELECT id … WHERE step_key IS NULL … LIMIT 1 FOR UPDATE SKIP LOCKED) AND step_key IS NULL

A claimant that loses gets BLOCKED, which Dagster already handles (the step waits and claims again).
"""

from __future__ import annotations

import sqlalchemy as db
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._utils.concurrency import ConcurrencySlotStatus


def _claim_concurrency_slot_atomically(self, concurrency_key: str, run_id: str, step_key: str):
    free_slot = (
        db.select(ConcurrencySlotsTable.c.id)
        .where(
            db.and_(
                ConcurrencySlotsTable.c.concurrency_key == concurrency_key,
                ConcurrencySlotsTable.c.step_key == None,  # noqa: E711
                ConcurrencySlotsTable.c.deleted == False,  # noqa: E712
            )
        )
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    with self.index_connection() as conn:
        claimed = conn.execute(
            ConcurrencySlotsTable.update()
            .values(run_id=run_id, step_key=step_key)
            .where(db.and_(ConcurrencySlotsTable.c.id == free_slot, ConcurrencySlotsTable.c.step_key == None))  # noqa: E711
        ).rowcount
    return ConcurrencySlotStatus.CLAIMED if claimed else ConcurrencySlotStatus.BLOCKED


def apply() -> None:
    SqlEventLogStorage._claim_concurrency_slot = _claim_concurrency_slot_atomically


def applied() -> bool:
    return SqlEventLogStorage._claim_concurrency_slot is _claim_concurrency_slot_atomically


apply()
