"""The asset checks on ohlcv_daily, `validation_rate` and `date_gaps`, one result per symbol partition.

Dagster 1.13's partitioned checks are a preview; an AssetCheckResult in a run covering many
partitions loses its partition. So the asset's op records an `AssetCheckEvaluation` with an explicit
`partition` for each symbol, and every symbol of a batched run gets its own recorded result.
The numbers come from market_pipeline.quality, the same functions the stats asset and CLI use.
"""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    Config,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.storage.event_log.base import AssetRecordsFilter
from pydantic import Field

from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.metadata import check_metadata
from market_pipeline.quality import SymbolStats
from market_pipeline.quality.report import CheckThresholds, freshness_of

_T = CheckThresholds()

OHLCV_KEY = AssetKey("ohlcv_daily")
VALIDATION_CHECK = "validation_rate"
GAPS_CHECK = "date_gaps"
FRESHNESS_CHECK = "freshness"
SPLIT_CHECK = "split_consistency"

def _partitioned_check(name: str, description: str) -> AssetCheckSpec:
    with warnings.catch_warnings():
        # partitioned check specs are a Dagster 1.13 preview; this project relies on them knowingly
        warnings.simplefilter("ignore")
        return AssetCheckSpec(name, asset=OHLCV_KEY, partitions_def=symbols_partitions, description=description)


check_specs = [
    _partitioned_check(
        VALIDATION_CHECK,
        "Share of the symbol's stored bars that pass every hard rule (finite positive prices, OHLC "
        "relations, non-negative volume, a session date not in the future, VWAP within the range). "
        "Fails below min_validation_rate: WARN above validation_error_below, ERROR under it.",
    ),
    _partitioned_check(
        GAPS_CHECK,
        "Sessions missing from the symbol's series (XNYS sessions for stocks/ETFs, every UTC day for "
        "crypto) between its first bar and the latest completed session (a delisted symbol's last "
        "trading session). Fails above max_gaps.",
    ),
    _partitioned_check(
        FRESHNESS_CHECK,
        "Whether the symbol's last stored bar is the latest completed session of its market (XNYS for "
        "stocks/ETFs, the UTC day for crypto), allowing for Polygon's publication delay. WARN when behind, "
        "naming the missing sessions; passes for a delisted symbol whose history reaches its last session "
        "(expected-stale).",
    ),
    _partitioned_check(
        SPLIT_CHECK,
        "Stocks and ETFs: every recorded split shows in the as-traded prices (the move across its "
        "execution date matches its ratio), and no move carries every mark of an unrecorded split (a "
        "split ratio, share volume stepping by its inverse while dollar volume holds, no reversal). "
        "Fails with ERROR naming the dates; large moves without that evidence are listed, never failed. "
        "Duplicated listings are named and applied once; they do not fail.",
    ),
]
CHECK_KEYS = {spec.key for spec in check_specs}


class CheckSettings(Config):
    """The check thresholds as run config (fields and defaults of quality.report.CheckThresholds)."""

    min_validation_rate: float = Field(default=_T.min_validation_rate, description="validation_rate fails below this")
    validation_error_below: float = Field(default=_T.validation_error_below, description="a failing rate under this is ERROR, else WARN")
    large_move: float = Field(default=_T.large_move, description="soft signal: close-to-close move beyond this fraction")
    max_gaps: int = Field(default=_T.max_gaps, description="date_gaps fails when more sessions than this are missing")
    gaps_error_above: int = Field(default=_T.gaps_error_above, description="a failing gap count above this is ERROR, else WARN")


def _severity(name: str) -> AssetCheckSeverity:
    return AssetCheckSeverity.ERROR if name == "ERROR" else AssetCheckSeverity.WARN


def _target(instance, symbol: str, asset_key: AssetKey = OHLCV_KEY) -> AssetCheckEvaluationTargetMaterializationData | None:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[symbol]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=record.event_log_entry.run_id, storage_id=record.storage_id, timestamp=record.timestamp
    )


def materialization_targets(
    instance, symbols: list[str], asset_key: AssetKey = OHLCV_KEY, run_id: str | None = None,
    recorded: dict[str, float] | None = None,
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each symbol's partition: what its check evaluations point at (a
    partition's check counts as current in Dagster only when it names the storage id of the
    partition's latest materialization).

    `recorded`: symbol -> when this run (`run_id`) recorded the partition's materialization, just
    before its checks: then the latest storage ids are looked up in one query that reads no event
    (the materializations are this run's). Otherwise (checks on stored data), the latest
    materializations are read, in one query for the batch; a symbol the query's top rows miss
    (another run materialised some of them since) is looked up on its own."""
    if not symbols:
        return {}
    found: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    if recorded and run_id:
        from dagster import DagsterEventType

        ids = instance.get_latest_storage_id_by_partition(asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(symbols))
        for symbol in symbols:
            if symbol in ids and symbol in recorded:
                found[symbol] = AssetCheckEvaluationTargetMaterializationData(run_id=run_id, storage_id=ids[symbol], timestamp=recorded[symbol])
    else:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, asset_partitions=list(symbols)), limit=len(symbols)
        ).records
        for record in records:  # newest first: the first record of a partition is its latest
            partition = record.event_log_entry.dagster_event.partition if record.event_log_entry.dagster_event else None
            if partition is not None and partition not in found:
                found[partition] = AssetCheckEvaluationTargetMaterializationData(
                    run_id=record.event_log_entry.run_id, storage_id=record.storage_id, timestamp=record.timestamp
                )
    for symbol in symbols:
        if symbol not in found:
            target = _target(instance, symbol, asset_key)
            if target is not None:
                found[symbol] = target
    return found


_LOOKUP = object()


def evaluations(
    stats: SymbolStats, selected: set[AssetCheckKey], instance=None, *, now: dt.datetime | None = None,
    delisted_on: dt.date | None = None, target=_LOOKUP,
) -> list[AssetCheckEvaluation]:
    """The check evaluations of one symbol partition, for the selected checks (freshness at `now`).
    `target`: the materialization they check (default: looked up in `instance`)."""
    if target is _LOOKUP:
        target = _target(instance, stats.symbol) if instance is not None else None
    report, gaps = stats.validation, stats.gaps
    rate = "n/a (no bars)" if report.rate is None else f"{report.rate:.4f}"
    results = {
        VALIDATION_CHECK: (
            report.passed,
            report.severity,
            report.as_metadata(),
            f"{stats.symbol}: validation rate {rate} over {report.bars_checked} bars",
        ),
        GAPS_CHECK: (
            gaps.passed,
            gaps.severity,
            gaps.as_metadata(),
            f"{stats.symbol}: {gaps.gaps_detected} missing sessions of {gaps.expected} expected",
        ),
    }
    if AssetCheckKey(OHLCV_KEY, FRESHNESS_CHECK) in selected:
        fresh = freshness_of(stats, now or dt.datetime.now(dt.timezone.utc), delisted_on)
        metadata = {**fresh.as_metadata(), **({"delisted_on": delisted_on.isoformat()} if delisted_on else {})}
        results[FRESHNESS_CHECK] = (fresh.passed, "WARN", metadata, fresh.description)
    return [
        AssetCheckEvaluation(
            asset_key=OHLCV_KEY,
            check_name=name,
            passed=passed,
            severity=_severity(severity),
            metadata=partition_metadata(metadata, stats.symbol, passed),
            description=description,
            target_materialization_data=target,
            partition=stats.symbol,
            blocking=False,
        )
        for name, (passed, severity, metadata, description) in results.items()
        if AssetCheckKey(OHLCV_KEY, name) in selected
    ]


def partition_metadata(metadata: dict, symbol: str, passed: bool) -> dict:
    """One symbol's check metadata, shaped for a check whose evaluations alternate between symbols:
    text and tables only, empty lists left out, no severity on a passed check (defs.metadata)."""
    return check_metadata(metadata, symbol, passed)
