"""What an ohlcv_daily run shows of the data it stored, on the pages people look at.

- Each partition's materialization carries its last bars (`last_bars`, a table) and a chart of the
  symbol's history (`chart`: close as traded and split-adjusted, volume; splits, dividends,
  quarantined bars and missing sessions marked), or a one-line note saying why there is none.
- A failed check's evaluation carries a chart of the days it names.
- Every check outcome is kept in the warehouse (`check_outcomes`) for the command line.
- When the run wrote rows of `symbol_reference` (a new symbol's reference data), the run records a
  materialization of `symbol_reference` too.

Charts are bounded: at most MARKET_PIPELINE_CHARTS_PER_RUN per run (settings.charts_per_run). The
symbols whose history the run changed beyond appending sessions (a new history, late corrections,
quarantined bars, new or changed corporate actions) are drawn first; of those it only appended
sessions to, the ones whose chart is the oldest; a symbol whose bars did not change gets no new one.
A symbol left out says where its last chart is. A run that stores at least CHART_PROCESS_FROM
symbols draws its charts in a worker process (`charts.process`) while it stores the next symbols;
their materializations are recorded as soon as their chart is drawn, and always before the run's
next check or returns batch (which name the materializations they judge).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter

from dagster import AssetCheckEvaluation, AssetMaterialization, MetadataValue

from market_pipeline import settings
from market_pipeline.defs.metadata import bars_table, chart_markdown, table
from market_pipeline.warehouse.timestamps import utcnow
from market_pipeline.warehouse.views_log import CheckOutcome, DrawnChart, ViewsLog

LAST_BARS = 10
CHART_PROCESS_FROM = 32  # symbols a run stores from which its charts are drawn in a worker process
PENDING_CHARTS = 4  # materializations held at most while their charts are drawn
CHART_KEY = "chart"
BARS_KEY = "last_bars"
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}")
# per check, the metadata entries whose dates a failed evaluation names, and what they are
NAMED_DAYS = {
    "split_consistency": (("unexplained_jump_dates", "unconfirmed_splits"), "overnight moves no recorded split explains, splits the prices do not show"),
    "date_gaps": (("missing_ranges",), "missing sessions"),
    "validation_rate": (("examples",), "bars failing a rule"),
    "freshness": (("missing_sessions",), "sessions not stored yet"),
    "unexplained_returns": (("unexplained_returns",), "returns no recorded event explains"),
}


def change_kind(result, factors_changed: set[str]) -> str | None:
    """How the run changed a stored symbol's history: a reason to draw it first, "appended" (new
    sessions only), or None (no bar changed)."""
    if result.rows_stored and result.rows_inserted >= result.rows_stored:
        return "new history"
    if result.rows_changed:
        return "late corrections"
    if result.quarantined:
        return "quarantined bars"
    if result.symbol in factors_changed:
        return "corporate actions"
    return "appended" if result.rows_inserted else None


class RunViews:
    """The views of one ohlcv_daily run (see the module docstring); used on the op's thread."""

    def __init__(self, context, warehouse, rows, now: dt.datetime, budget: int | None = None, storing: bool = False):
        self.context, self.now = context, now
        self.url = warehouse.resolved_url()
        self.store = warehouse.bars()
        self.log = ViewsLog(self.url)
        self.budget = settings.charts_per_run() if budget is None else budget
        self.started = utcnow()
        self.rows = {row.symbol: row for row in rows}
        self.previous = self.log.charts(list(self.rows)) if self.rows else {}
        oldest = sorted(self.rows, key=lambda s: (self.previous[s].drawn_at if s in self.previous else dt.datetime.min, s))
        self.rotation = set(oldest[: self.budget])  # the appended-only symbols whose turn it is
        self.factors_changed: set[str] = set()
        self.drawn: list[DrawnChart] = []
        self._process = None  # the chart process, started with the first chart of a big run
        self._use_process = storing and len(self.rows) >= CHART_PROCESS_FROM and self.budget > 0
        self._held: list[tuple[dict, object, object]] = []  # (metadata, build, result): materializations to yield
        self.outcomes: list[CheckOutcome] = []  # still to record
        self.run_outcomes: list[CheckOutcome] = []  # every outcome of the run (its summary line)
        self.tally = Counter()
        self.recorded: dict[str, float] = {}  # symbol -> when this run recorded its materialization (its checks point at it)

    # ---- the partition's materialization ------------------------------------------------------
    def bars_metadata(self, result, row) -> dict:
        """`last_bars` and `chart` (or its note) of a symbol just stored. Never raises."""
        out = {}
        try:
            out[BARS_KEY] = bars_table(self._last_bars(result))
        except Exception as exc:
            out[BARS_KEY] = MetadataValue.text(f"could not read the last bars: {type(exc).__name__}: {exc}")
        kind = change_kind(result, self.factors_changed)
        if kind is None:
            out[CHART_KEY] = MetadataValue.md(f"No new chart: no bar changed in this run. {self._last_chart(result.symbol)}")
        elif kind == "appended" and result.symbol not in self.rotation:
            out[CHART_KEY] = MetadataValue.md(
                f"No new chart: this run only appended sessions, and its charts (at most {self.budget}, "
                f"MARKET_PIPELINE_CHARTS_PER_RUN) went to symbols whose chart was older. {self._last_chart(result.symbol)}"
            )
        elif not self._spend():
            out[CHART_KEY] = MetadataValue.md(
                f"No new chart: this run drew the {self.budget} charts it may (MARKET_PIPELINE_CHARTS_PER_RUN). "
                + self._last_chart(result.symbol)
            )
        else:
            inputs = self._chart_inputs(result, row, kind)
            if isinstance(inputs, dict):
                future = self._chart_process().draw(inputs) if self._use_process else None
                if future is not None:
                    out[CHART_KEY] = _Drawing(future, inputs)  # replaced by the chart in `held`
                    return out
                from market_pipeline.charts.process import draw_symbol_chart

                inputs = draw_symbol_chart(inputs)
            self._put_chart(out, inputs, result)
        return out

    def _put_chart(self, out: dict, chart, result) -> None:
        out[CHART_KEY] = chart_markdown(chart, f"{result.symbol} bars")
        if chart.drawn:
            self.tally["drawn"] += 1
            self.drawn.append(DrawnChart(result.symbol, self.context.run_id, _date(result.last_date), utcnow()))

    def _chart_process(self):
        if self._process is None:
            from market_pipeline.charts.process import ChartProcess

            self._process = ChartProcess(logger=self.context.log)
        return self._process

    def stored(self, result, row, build):
        """The materialization of a symbol just stored: `build(metadata)` with its last bars and chart,
        yielded now, or once its chart is drawn when the chart process draws it (with any earlier
        ones whose chart is done; at most PENDING_CHARTS are held)."""
        self._held.append((self.bars_metadata(result, row), build, result))
        yield from self.held(wait=len(self._held) > PENDING_CHARTS)

    def held(self, wait: bool = True):
        """The held materializations whose chart is drawn (`wait`: all of them, waiting for their charts)."""
        keep = []
        for metadata, build, result in self._held:
            drawing = metadata.get(CHART_KEY)
            if isinstance(drawing, _Drawing):
                if not wait and not drawing.future.done():
                    keep.append((metadata, build, result))
                    continue
                self._put_chart(metadata, self._process.chart(drawing.future, drawing.inputs), result)
            self.recorded[result.symbol] = time.time()
            yield build(metadata)
        self._held = keep

    def open(self) -> "RunViews":
        """Start the chart process of a big run now: it is ready by the first chart (a second of imports)."""
        if self._use_process:
            self._chart_process()
        return self

    def close(self) -> None:
        """Stop the chart process (a run that ends early leaves no worker behind)."""
        if self._process is not None:
            self._process.close()

    def _spend(self) -> bool:
        if self.tally["charts"] >= self.budget:
            self.tally["over_budget"] += 1
            return False
        self.tally["charts"] += 1
        return True

    def _last_chart(self, symbol: str) -> str:
        last = self.previous.get(symbol)
        if last is None:
            return "No chart was drawn for it yet."
        run = f"run {last.run_id[:8]}" if last.run_id else "a run"
        return f"Its last chart is on the materialization of {run} ({last.drawn_at:%Y-%m-%d %H:%M} UTC, bars to {last.through_date})."

    def _last_bars(self, result):
        bars = result.stored_bars
        if bars is not None and not bars.empty:
            return bars.tail(LAST_BARS)
        return self.store.last_bar_rows(result.symbol, LAST_BARS)

    def _chart_inputs(self, result, row, kind: str):
        """`symbol_chart`'s arguments for a symbol just stored, or the Chart (a note) when there is
        nothing to draw or its data could not be read."""
        from market_pipeline.charts import Chart
        from market_pipeline.quality.gaps import detect_gaps
        from market_pipeline.reference.freshness import last_trading_session
        from market_pipeline.warehouse.corporate_actions import CorporateActionStore
        from market_pipeline.warehouse.quarantine import QuarantineStore
        from market_pipeline.warehouse.reader import read_bars

        symbol = result.symbol
        try:
            bars = result.stored_bars if result.stored_bars is not None else self.store.read_bars(symbol)
            quarantined = sorted({q.date for q in QuarantineStore(self.url).list(symbol) if q.date is not None})
            if bars.empty:
                note = f"{symbol} has no stored bars" + (f"; all {len(quarantined)} fetched were quarantined (ohlcv_quarantine)" if quarantined else "")
                return Chart(None, note)
            adjusted, splits, dividends = None, [], []
            if row.asset_class != "crypto":
                actions = CorporateActionStore(self.url)
                first, last = bars["date"].iloc[0].date(), bars["date"].iloc[-1].date()
                splits = [(s.execution_date, s.label) for s in actions.splits(symbol)
                          if s.status == "active" and s.execution_date and first < s.execution_date <= last]
                dividends = [d.ex_dividend_date for d in actions.dividends(symbol)
                             if d.status == "active" and d.ex_dividend_date and first < d.ex_dividend_date <= last]
                if splits:
                    frame = read_bars(symbol, adjustment="splits", url=self.url).reset_index()
                    adjusted = frame.set_index("date")["close"].reindex(bars["date"]).to_numpy()
            final = last_trading_session(row.asset_class, row.delisted_on) if row.delisted_on else None
            gaps = detect_gaps(bars["date"], row.asset_class, now=self.now, max_ranges=60, last_session=final)
            missing = [(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in gaps.missing_ranges]
        except Exception as exc:  # a read failed: the note says so, the materialization goes on
            return Chart(None, f"the chart's data could not be read ({type(exc).__name__}: {str(exc)[:200]})")
        return dict(
            symbol=symbol, bars=bars[["date", "close", "volume"]], adjusted_close=adjusted, splits=splits,
            dividends=dividends, quarantined=quarantined, missing=missing, subtitle=f"drawn for: {kind}",
        )

    # ---- check evaluations --------------------------------------------------------------------
    def checked(self, evaluations):
        """Pass the evaluations on, a failed one with a chart of the days it names; keep every outcome."""
        for evaluation in evaluations:
            if isinstance(evaluation, AssetCheckEvaluation) and evaluation.partition:
                days = [] if evaluation.passed else named_days(evaluation)
                if not evaluation.passed:
                    evaluation = self._with_days_chart(evaluation, days)
                outcome = outcome_of(evaluation, days)
                self.outcomes.append(outcome)
                self.run_outcomes.append(outcome)
            yield evaluation

    def _with_days_chart(self, evaluation: AssetCheckEvaluation, days: list[dt.date]) -> AssetCheckEvaluation:
        from market_pipeline.charts import Chart, days_chart

        if not days:
            return evaluation
        symbol = evaluation.partition
        if not self._spend():
            chart = Chart(None, f"this run drew the {self.budget} charts it may (MARKET_PIPELINE_CHARTS_PER_RUN)")
        else:
            try:
                bars = self.store.read_bars(symbol, min(days) - dt.timedelta(days=20), max(days) + dt.timedelta(days=20))
                _, what = NAMED_DAYS.get(evaluation.check_name, ((), "the days named"))
                chart = days_chart(symbol, bars, days, what)
            except Exception as exc:
                chart = Chart(None, f"the chart's bars could not be read ({type(exc).__name__}: {str(exc)[:200]})")
            self.tally["drawn"] += chart.drawn
        metadata = {**evaluation.metadata, "days_chart": chart_markdown(chart, f"{symbol} {evaluation.check_name}")}
        return evaluation.with_metadata(metadata)

    # ---- symbol_reference ---------------------------------------------------------------------
    def reference_materialization(self, refs_store, symbols) -> AssetMaterialization | None:
        """A materialization of symbol_reference when this run wrote reference rows of `symbols`
        (however they were fetched); None when it wrote none."""
        from market_pipeline.defs.symbols.reference import attention_md

        written = [
            stored for stored in refs_store.get_many(list(symbols)).values()
            if stored.fetched_at is not None and stored.fetched_at >= self.started
        ]
        if not written:
            return None
        records = [w.record for w in sorted(written, key=lambda w: w.record.symbol)]
        counts = Counter(r.status for r in records)
        return AssetMaterialization(
            asset_key="symbol_reference",
            description=f"reference data of {len(records)} symbol(s) written by this ohlcv_daily run",
            metadata={
                "symbols_written": MetadataValue.text(str(len(records))),
                "statuses": MetadataValue.text(", ".join(f"{s} {n}" for s, n in sorted(counts.items()))),
                "written": table([
                    {"symbol": r.symbol, "status": r.status, "name": r.name, "type": r.type,
                     "primary_exchange": r.primary_exchange, "list_date": r.list_date, "delisted_on": r.delisted_on}
                    for r in records
                ]),
                "attention": MetadataValue.md(attention_md(records)),
            },
        )

    # ---- writes -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Record the charts drawn and the check outcomes so far (caches of what the run showed: a
        failure is logged, never raised)."""
        drawn, outcomes, self.drawn, self.outcomes = self.drawn, self.outcomes, [], []
        try:
            self.log.put_charts(drawn)
            self.log.put_outcomes(outcomes, self.context.run_id)
        except Exception as exc:
            self.context.log.warning(f"could not record {len(outcomes)} check outcome(s) and {len(drawn)} chart(s): {type(exc).__name__}: {exc}")

    def chart_line(self) -> str:
        skipped = self.tally["over_budget"]
        return (
            f"charts: {self.tally['drawn']} drawn (at most {self.budget} a run, MARKET_PIPELINE_CHARTS_PER_RUN)"
            + (f", {self._process.drawn} of them in the chart process" if self._process is not None else "")
            + (f"; {skipped} left for later runs" if skipped else "")
        )


class _Drawing:
    """A chart being drawn in the chart process: its future, and its inputs to draw it here if need be."""

    def __init__(self, future, inputs: dict):
        self.future, self.inputs = future, inputs


def _date(value) -> dt.date | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def _text_of(value) -> list[str]:
    """Every string an entry holds (text, markdown, or a table's cells)."""
    inner = getattr(value, "value", value)
    records = getattr(inner, "records", None)
    if records is not None:  # a table: its `date` column when it has one, else every cell
        return [
            str(v) for record in records
            for k, v in record.data.items() if v is not None and (k == "date" or "date" not in record.data)
        ]
    return [str(inner)]


def named_days(evaluation: AssetCheckEvaluation) -> list[dt.date]:
    """The dates a check evaluation names (NAMED_DAYS), ranges "a .. b" expanded (at most 366 days)."""
    keys, _ = NAMED_DAYS.get(evaluation.check_name, ((), ""))
    days: set[dt.date] = set()
    for key in keys:
        if key not in evaluation.metadata:
            continue
        for text in _text_of(evaluation.metadata[key]):
            for a, b in re.findall(r"(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})", text):
                start, end = dt.date.fromisoformat(a), dt.date.fromisoformat(b)
                days.update(start + dt.timedelta(days=i) for i in range(min((end - start).days + 1, 366)))
            days.update(dt.date.fromisoformat(d) for d in _ISO.findall(text))
    return sorted(days)


def outcome_of(evaluation: AssetCheckEvaluation, days: list[dt.date]) -> CheckOutcome:
    """The one-line outcome kept for the command line: "ok", or the days (or the description)."""
    if evaluation.passed:
        summary = "ok"
    elif days:
        shown = ", ".join(d.isoformat() for d in days[:5])
        summary = shown + (f" (+{len(days) - 5} more)" if len(days) > 5 else "")
    else:
        summary = (evaluation.description or "failed").splitlines()[0][:300]
    severity = None if evaluation.passed else evaluation.severity.value
    return CheckOutcome(evaluation.partition, evaluation.asset_key.to_user_string(), evaluation.check_name, bool(evaluation.passed), severity, summary)
