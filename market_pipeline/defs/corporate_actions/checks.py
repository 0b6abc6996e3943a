"""The `split_consistency` check on ohlcv_daily partitions (stocks and ETFs): do the as-traded bars
agree with the recorded splits? The evaluation is `market_pipeline.corporate_actions.consistency`
(its docstring justifies the tolerance). Failing dates are named in the metadata; a duplicated
listing is named but does not fail. Crypto never splits: its result passes, marked not applicable.
"""

from dagster import AssetCheckEvaluation, AssetCheckSeverity

from market_pipeline.corporate_actions import evaluate_consistency
from market_pipeline.defs.bars.checks import OHLCV_KEY, SPLIT_CHECK, _target
from market_pipeline.defs.metadata import check_metadata


def split_evaluation(symbol: str, asset_class: str, bars, splits, instance=None, *, target=None, report=None) -> AssetCheckEvaluation:
    """The check's evaluation from the bars and splits, or from their `report` when already computed."""
    if target is None and instance is not None:
        target = _target(instance, symbol)
    if asset_class == "crypto":
        passed, metadata, description = True, {"applicable": False}, f"{symbol}: crypto has no splits"
    else:
        report = report if report is not None else evaluate_consistency(bars, splits)
        metadata = report.metadata()
        passed = report.passed
        description = (
            f"{symbol}: {report.splits_checked} split(s) confirmed by the prices"
            if passed
            else f"{symbol}: {len(report.unexplained_jumps)} unexplained overnight jump(s) "
            f"({', '.join(j['date'] for j in report.unexplained_jumps[:5])}), "
            f"{len(report.unconfirmed_splits)} recorded split(s) the prices do not show"
        )
    return AssetCheckEvaluation(
        asset_key=OHLCV_KEY,
        check_name=SPLIT_CHECK,
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        metadata=check_metadata(metadata, symbol, passed),
        description=description,
        target_materialization_data=target,
        partition=symbol,
        blocking=False,
    )
