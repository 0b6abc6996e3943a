"""A run's symbol charts drawn in a worker process, while the run stores the next symbols.

A chart takes about 60 ms of matplotlib on a quiet core, and a run may draw up to
MARKET_PIPELINE_CHARTS_PER_RUN of them: on the run's own thread that is seconds added to every big
run. `ChartProcess` (a `worker_pool.WorkerPool`) draws them on a worker process instead, with the
same function and the same result; until the worker has started, and for good if it is gone or
hangs, the run draws them itself (`draw` answers None, `chart` answers the chart drawn here).
"""

from __future__ import annotations

import logging

from market_pipeline.charts.render import Chart, symbol_chart
from market_pipeline.worker_pool import UNAVAILABLE, WorkerPool

CHART_TIMEOUT = 60.0  # seconds a chart may take in the worker (about 60 ms quiet)


def draw_symbol_chart(inputs: dict) -> Chart:
    """`symbol_chart(**inputs)`: what the worker runs."""
    return symbol_chart(**inputs)


class ChartProcess(WorkerPool):
    what = "the chart process"
    fallback = "charts are drawn in the run's process from now on"
    modules = ("market_pipeline.charts.render", "matplotlib.backends.backend_agg", "matplotlib.figure", "matplotlib.ticker", "PIL.Image")

    def __init__(self, logger: logging.Logger | None = None, timeout: float = CHART_TIMEOUT):
        super().__init__(1, logger, timeout)
        self.drawn = 0  # charts the worker drew

    def draw(self, inputs: dict):
        """A future of the chart drawn by the worker, or None: draw it yourself (`draw_symbol_chart`)."""
        return self.submit(draw_symbol_chart, inputs)

    def chart(self, future, inputs: dict) -> Chart:
        """The chart of a future `draw` gave, drawn here when the worker could not."""
        chart = self.wait(future)
        if chart is UNAVAILABLE:
            return draw_symbol_chart(inputs)
        self.drawn += 1
        return chart
