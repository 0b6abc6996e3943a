"""Metadata as the Dagster UI shows it well: check metadata as text and tables only, bar and event
tables, charts as Markdown images.

Dagster plots every numeric metadata entry of an asset check across its evaluations, whatever their
partition: a line through AAPL's rate, then BTCUSD's gap count, is noise. So a check's numbers are
shown as text, its lists as text (dates) or tables (records), and an empty list or a missing value is
left out rather than shown as `[]` behind "[Show JSON]".
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

MAX_TABLE_ROWS = 50
MAX_TEXT_ITEMS = 40


def _scalar_text(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _cell(value):
    """A table cell: str, int, float, bool or None."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, (list, tuple)):
        return ", ".join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def _column_type(values) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool} and kinds:
        return "bool"
    if kinds <= {int} and kinds:
        return "int"
    if kinds <= {int, float} and kinds:
        return "float"
    return "string"


def table(records: Sequence[Mapping], columns: Sequence[str] | None = None, descriptions: Mapping[str, str] | None = None,
          limit: int = MAX_TABLE_ROWS):
    """Records as a table (at most `limit` rows), every value a cell."""
    rows = [{k: _cell(v) for k, v in record.items()} for record in list(records)[:limit]]
    names = list(columns) if columns else list(dict.fromkeys(k for row in rows for k in row))
    descriptions = descriptions or {}
    schema = TableSchema(columns=[
        TableColumn(name, _column_type([row.get(name) for row in rows]), description=descriptions.get(name))
        for name in names
    ])
    return MetadataValue.table([TableRecord({n: row.get(n) for n in names}) for row in rows], schema=schema)


def _text_list(values: Sequence) -> str:
    shown = [" .. ".join(map(_scalar_text, v)) if isinstance(v, (list, tuple)) else _scalar_text(v) for v in values[:MAX_TEXT_ITEMS]]
    more = f" (and {len(values) - MAX_TEXT_ITEMS} more)" if len(values) > MAX_TEXT_ITEMS else ""
    return ", ".join(shown) + more


def check_entry(value):
    """One check metadata value as text or a table; None when it is empty (left out)."""
    if value is None or (isinstance(value, (str, list, tuple, dict)) and len(value) == 0):
        return None
    if isinstance(value, MetadataValue):
        return value
    if isinstance(value, (bool, int, float, dt.date)):
        return MetadataValue.text(_scalar_text(value))
    if isinstance(value, str):
        return MetadataValue.text(value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, Mapping) for v in value):
            return table(value)
        return MetadataValue.text(_text_list(list(value)))
    if isinstance(value, Mapping):
        if all(isinstance(v, Mapping) for v in value.values()):
            return table([{"name": k, **v} for k, v in value.items()])
        items = [{"name": k, "value": v} for k, v in value.items() if v not in (None, 0, "") and not (isinstance(v, (list, tuple)) and not v)]
        return table(items) if items else None  # only what counts: a rule failed by no bar is left out
    return MetadataValue.text(_scalar_text(value))


def check_metadata(metadata: Mapping, symbol: str | None = None, passed: bool | None = None) -> dict:
    """A check evaluation's metadata shaped for the UI (see the module docstring); a passed check
    carries no severity."""
    shaped = {}
    for key, value in metadata.items():
        if key == "severity" and passed:
            continue
        entry = check_entry(value)
        if entry is not None:
            shaped[key] = entry
    if symbol is not None:
        shaped["symbol"] = MetadataValue.text(symbol)
    return shaped


BAR_COLUMNS = (
    ("date", "session date"),
    ("open", "as traded"),
    ("high", "as traded"),
    ("low", "as traded"),
    ("close", "as traded"),
    ("volume", "shares (units for crypto), as traded"),
    ("vwap", "volume-weighted average price"),
    ("transactions", "trades"),
)


def bars_table(bars) -> MetadataValue:
    """Bars, newest first: a bar frame's rows, or rows (date, open, high, low, close, volume, vwap,
    transactions; None for NULL) by date as `BarStore.last_bar_rows` reads them."""
    rows = bars if isinstance(bars, list) else _frame_rows(bars)
    records = [
        TableRecord({
            "date": str(row[0])[:10],
            **{c: (None if v is None or v != v else float(v)) for c, v in zip(("open", "high", "low", "close", "volume", "vwap"), row[1:7])},
            "transactions": None if row[7] is None else int(row[7]),
        })
        for row in reversed(rows)
    ]
    return MetadataValue.table(records, schema=_BARS_SCHEMA)


def _frame_rows(frame) -> list[tuple]:
    import numpy as np

    days = np.asarray(frame["date"].to_numpy(), dtype="datetime64[ns]").astype("datetime64[D]").astype(str).tolist()
    values = [frame[c].to_numpy(dtype="float64", na_value=np.nan).tolist() for c in ("open", "high", "low", "close", "volume", "vwap")]
    tx = frame["transactions"].astype("Int64")
    trades = [None if missing else int(v) for v, missing in zip(tx.to_numpy(dtype="int64", na_value=0).tolist(), tx.isna().tolist())]
    return list(zip(days, *values, trades))


_BARS_SCHEMA = TableSchema(columns=[
    TableColumn(name, {"date": "date", "transactions": "int"}.get(name, "float"), description=text) for name, text in BAR_COLUMNS
])


def chart_markdown(chart, title: str) -> MetadataValue:
    from market_pipeline.charts import markdown

    return MetadataValue.md(markdown(chart, title))
