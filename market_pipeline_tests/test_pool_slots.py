"""The `polygon_api` pool is the cross-process (cross-machine) pacing point: with a limit of 1, at
most one step may hold its slot, even when steps of several processes claim it at the same instant.

Dagster 1.13.27 claims a slot with `SELECT … FOR UPDATE SKIP LOCKED` and then `UPDATE … WHERE id = …`
as two statements; on PostgreSQL its connections are in autocommit, so the row lock ends with the
SELECT and two claimants that read the same free slot both "claim" it. `market_pipeline.devtools.dagster_patches`
makes the UPDATE conditional on the slot still being free. These tests race real claimants."""

import threading
import uuid

import pytest

from market_pipeline.devtools import dagster_patches
from market_pipeline_tests.waiting import scaled

POOL = "polygon_api"
ROUNDS = 25
CLAIMANTS = 6


def race_claims(storage) -> list[int]:
    """ROUNDS rounds of CLAIMANTS threads claiming the pool's one slot at the same instant;
    returns how many claimed it in each round."""
    claimed_per_round = []
    for _ in range(ROUNDS):
        barrier = threading.Barrier(CLAIMANTS)
        run_ids = [uuid.uuid4().hex for _ in range(CLAIMANTS)]
        results: list = []

        def claim(run_id: str) -> None:
            barrier.wait(timeout=scaled(30))
            results.append(storage._claim_concurrency_slot(POOL, run_id, "ohlcv_daily"))

        threads = [threading.Thread(target=claim, args=(r,)) for r in run_ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=scaled(60))
        claimed_per_round.append(sum(1 for r in results if r.name == "CLAIMED"))
        for run_id in run_ids:
            storage.free_concurrency_slots_for_run(run_id)
    return claimed_per_round


@pytest.fixture
def pg_event_log(postgres_cluster):
    from dagster_postgres.event_log import PostgresEventLogStorage

    name = f"pool_{uuid.uuid4().hex[:12]}"
    postgres_cluster.create_database(name)
    storage = PostgresEventLogStorage(postgres_cluster.url(name))
    storage.set_concurrency_slots(POOL, 1)
    try:
        yield storage
    finally:
        storage.dispose()
        postgres_cluster.drop_database(name)


@pytest.mark.postgres
def test_one_slot_is_claimed_once_on_postgres(pg_event_log):
    assert dagster_patches.applied()
    claimed = race_claims(pg_event_log)
    assert max(claimed) == 1, claimed  # never two holders
    assert min(claimed) == 1, claimed  # and the free slot is always taken by someone


def test_one_slot_is_claimed_once_on_sqlite(tmp_path):
    from dagster._core.storage.event_log import SqliteEventLogStorage

    storage = SqliteEventLogStorage(str(tmp_path))
    storage.set_concurrency_slots(POOL, 1)
    claimed = race_claims(storage)
    assert max(claimed) == 1 and min(claimed) == 1, claimed
