"""The asset check on daily_returns, one result per symbol partition (recorded with an explicit
partition, like the ohlcv_daily checks: see market_pipeline.defs.bars.checks).

`unexplained_returns` (WARN): the returns whose total-return close moved by more than a factor of
1 + max_unexplained_return either way with no recorded split, dividend or rename dated between the two
bars. Listed with their dates; such a day is worth a look (a missing corporate action, a bad print, or
real news). One check, not more: every check evaluation is an event per symbol per run, and a daily
refresh of 10,000 symbols pays for each (the row count is on the materialization instead).
"""

from __future__ import annotations

import warnings

from dagster import AssetCheckEvaluation, AssetCheckKey, AssetCheckSeverity, AssetCheckSpec, AssetKey

from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.metadata import check_metadata

RETURNS_KEY = AssetKey("daily_returns")
UNEXPLAINED_CHECK = "unexplained_returns"
RETURNS_CHECK_KEYS = {AssetCheckKey(RETURNS_KEY, UNEXPLAINED_CHECK)}


def returns_check_specs() -> list[AssetCheckSpec]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # partitioned check specs are a Dagster 1.13 preview
        return [
            AssetCheckSpec(
                UNEXPLAINED_CHECK, asset=RETURNS_KEY, partitions_def=symbols_partitions,
                description=(
                    "Daily total returns beyond a factor of 1 + max_unexplained_return either way (default "
                    "0.5: up more than 50% or down more than a third) with no recorded split, dividend or "
                    "rename between the two bars: each is listed with its date. WARN."
                ),
            ),
        ]


def returns_evaluations(symbol: str, outliers: list[dict], threshold: float, selected: set, target=None) -> list[AssetCheckEvaluation]:
    """The selected returns check of one symbol: its unexplained returns."""
    out = []
    if AssetCheckKey(RETURNS_KEY, UNEXPLAINED_CHECK) in selected:
        passed = not outliers
        dates = [o["date"] for o in outliers]
        description = (
            f"{symbol}: no return beyond the threshold without a recorded event" if passed
            else f"{symbol}: {len(outliers)} return(s) beyond the threshold no recorded event explains ({', '.join(dates[:5])})"
        )
        out.append(_evaluation(symbol, UNEXPLAINED_CHECK, passed, AssetCheckSeverity.WARN, description, {
            "threshold": f"a factor of {1 + threshold:g} either way",
            "unexplained_returns": outliers,
        }, target))
    return out


def _evaluation(symbol, name, passed, severity, description, metadata, target) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=RETURNS_KEY,
        check_name=name,
        passed=passed,
        severity=severity,
        metadata=check_metadata(metadata, symbol, passed),
        description=description,
        target_materialization_data=target,
        partition=symbol,
        blocking=False,
    )
