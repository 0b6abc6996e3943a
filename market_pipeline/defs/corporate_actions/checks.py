"""The `split_consistency` check on ohlcv_daily partitions (stocks and ETFs): do the as-traded bars
agree with the recorded splits, and does any move carry the evidence of a split nobody recorded?
The evaluation is `market_pipeline.corporate_actions.consistency` (its docstring gives the rule and
its thresholds). It fails with severity ERROR, naming the dates, when a recorded split does not show
or a move has every mark of an unrecorded split: the adjusted prices are then wrong by the ratio.
Large moves without that evidence are listed (`large_moves`) and never fail it; a duplicated listing
is named but does not fail. Crypto never splits: its result passes, marked not applicable.

The metadata is text and tables only (a number would be plotted across the symbols' evaluations),
and a list with nothing in it is left out.
"""

from dagster import AssetCheckEvaluation, AssetCheckSeverity, MetadataValue, TableColumn, TableRecord, TableSchema

from market_pipeline.corporate_actions import evaluate_consistency
from market_pipeline.defs.bars.checks import OHLCV_KEY, SPLIT_CHECK, _target


def _table(rows: list[dict]) -> MetadataValue:
    names = list(dict.fromkeys(name for row in rows for name in row))
    return MetadataValue.table(
        records=[TableRecord(data={name: "" if row.get(name) is None else str(row[name]) for name in names}) for row in rows],
        schema=TableSchema(columns=[TableColumn(name, "string") for name in names]),
    )


def _description(symbol: str, report) -> str:
    jumps, unconfirmed, large = report.counts()
    if report.passed:
        text = (
            f"{symbol}: {report.splits_checked} recorded split(s) confirmed by the prices"
            if report.splits_checked else f"{symbol}: no recorded split in the bars, no move with a split's evidence"
        )
        if large:
            dates = ", ".join(m["date"] for m in report.large_moves[:5])
            text += f"; {large} large move(s) without a split's evidence ({dates}), not splits"
        return text
    parts = []
    if jumps:
        dates = ", ".join(f"{j['date']} ({j['ratio']})" for j in report.unexplained_jumps[:5])
        parts.append(f"{jumps} move(s) with every mark of an unrecorded split: {dates}")
    if unconfirmed:
        dates = ", ".join(f"{u['date']} ({u['ratio']})" for u in report.unconfirmed_splits[:5])
        parts.append(f"{unconfirmed} recorded split(s) the prices do not show: {dates}")
    return f"{symbol}: " + "; ".join(parts) + " (the adjusted prices are wrong by the ratio)"


def split_evaluation(symbol: str, asset_class: str, bars, splits, instance=None, *, target=None, report=None) -> AssetCheckEvaluation:
    """The check's evaluation from the bars and splits, or from their `report` when already computed."""
    if target is None and instance is not None:
        target = _target(instance, symbol)
    severity = AssetCheckSeverity.WARN
    if asset_class == "crypto":
        passed, metadata, description = True, {"applicable": MetadataValue.text("False")}, f"{symbol}: crypto has no splits"
    else:
        report = report if report is not None else evaluate_consistency(bars, splits)
        metadata = {
            key: (_table(value) if isinstance(value, list) else MetadataValue.text(value))
            for key, value in report.metadata().items()
        }
        passed, description = report.passed, _description(symbol, report)
        if not passed:
            severity = AssetCheckSeverity.ERROR
    return AssetCheckEvaluation(
        asset_key=OHLCV_KEY,
        check_name=SPLIT_CHECK,
        passed=passed,
        severity=severity,
        metadata={**metadata, "symbol": MetadataValue.text(symbol)},
        description=description,
        target_materialization_data=target,
        partition=symbol,
        blocking=False,
    )
