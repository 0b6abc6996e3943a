"""Keeping the `symbols` dynamic partitions equal to the registry's active symbols. Pure planning
plus the run requests that backfill newly added symbols in batches."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import RunRequest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from market_pipeline.defs.bars.partitions import MAX_PARTITIONS_PER_RUN


@dataclass(frozen=True)
class PartitionPlan:
    to_add: list[str]
    to_delete: list[str]


def plan_partitions(active: Sequence[str], existing: Sequence[str]) -> PartitionPlan:
    """Partitions to add (active, not yet a partition; in registry order) and to delete (no longer active)."""
    existing_set, active_set = set(existing), set(active)
    return PartitionPlan(
        to_add=[s for s in active if s not in existing_set],
        to_delete=[s for s in existing if s not in active_set],
    )


def range_tags(keys: Sequence[str]) -> dict[str, str]:
    """Run tags that make one run cover the contiguous partition keys first..last."""
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


def contiguous_runs(selected: Sequence[str], ordered_keys: Sequence[str], size: int = MAX_PARTITIONS_PER_RUN) -> list[list[str]]:
    """Split `selected` into runs of contiguous keys (in partition order), each at most `size` keys."""
    position = {k: i for i, k in enumerate(ordered_keys)}
    picked = sorted((position[k], k) for k in set(selected) if k in position)
    runs: list[list[str]] = []
    last = None
    for index, key in picked:
        if runs and last is not None and index == last + 1 and len(runs[-1]) < size:
            runs[-1].append(key)
        else:
            runs.append([key])
        last = index
    return runs


def backfill_requests(batches: Sequence[Sequence[str]], stamp: str, reason: str) -> list[RunRequest]:
    """One run request per batch of contiguous new partitions; the run key changes with `stamp`
    (the registry rows' update times) so a symbol reactivated later is backfilled again."""
    requests = []
    for batch in batches:
        digest = hashlib.sha1(f"{','.join(batch)}|{stamp}".encode()).hexdigest()[:16]
        tags = {"market_pipeline/trigger": reason}
        if len(batch) == 1:
            requests.append(RunRequest(run_key=f"backfill-{batch[0]}-{digest}", partition_key=batch[0], tags=tags))
        else:
            requests.append(
                RunRequest(run_key=f"backfill-{batch[0]}-{batch[-1]}-{digest}", tags={**tags, **range_tags(batch)})
            )
    return requests
