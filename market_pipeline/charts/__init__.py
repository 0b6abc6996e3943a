"""Charts for the Dagster UI: small PNG images of stored data, drawn headless with matplotlib's Agg
canvas (no pyplot, no display) and embedded in Markdown metadata. matplotlib is imported only when a
chart is drawn, so importing this package (and the code location, and the CLI) stays fast.

Every function here returns a `Chart`: the PNG, or a one-line note saying why there is none (no
bars, all bars quarantined, a plotting error). Drawing a chart never raises.
"""

from market_pipeline.charts.render import Chart, days_chart, markdown, stats_chart, symbol_chart

__all__ = ["Chart", "days_chart", "markdown", "stats_chart", "symbol_chart"]
