"""Scenario 6's child process: both asset checks and `symbol_stats` over a filled warehouse.

    MARKET_PIPELINE_HOME=<home of a main-job run> python -m benchmarks.quality_worker [--repeats 3]

Per repetition, over every tracked symbol of the home's warehouse:

- checks: what `ohlcv_daily`'s op does per symbol for its two checks: read the stored bars, compute
  the stats (`validation_rate` and `date_gaps`), build both check evaluations;
- symbol_stats (plain): `stats_report.all_table_rows` + `replace_stats`, the asset's body;
- symbol_stats (Dagster): `symbol_stats_job` executed in-process on the home's Dagster instance.

Prints one JSON line of lists of seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import warnings


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from dagster import DagsterInstance

    from market_pipeline import calendars, settings
    from market_pipeline.defs.bars.checks import CHECK_KEYS, CheckSettings, evaluations
    from market_pipeline.quality.report import compute_stats
    from market_pipeline.definitions import defs
    from market_pipeline.devtools.runner import QUIET
    from market_pipeline.quality.report import all_table_rows
    from market_pipeline.warehouse.registry import SymbolRegistry
    from market_pipeline.warehouse.stats_table import replace_stats
    from market_pipeline.warehouse.store import BarStore

    settings.ensure_dagster_home()
    registry, store, config = SymbolRegistry(), BarStore(), CheckSettings()
    rows = registry.list()
    calendars.xnys_session_days()  # once per process, as in a run worker
    instance = DagsterInstance.get()
    job = defs.resolve_job_def("symbol_stats_job")
    out = {"symbols": len(rows), "bars": 0, "checks": [], "checks_read": [], "stats_plain": [], "stats_dagster": []}
    for _ in range(args.repeats):
        now = dt.datetime.now(dt.timezone.utc)
        reading = 0.0
        bars = 0
        started = time.perf_counter()
        for row in rows:
            t0 = time.perf_counter()
            frame = store.read_bars(row.symbol)
            reading += time.perf_counter() - t0
            bars += len(frame)
            stats = compute_stats(row.symbol, row.asset_class, frame, config, now)
            evaluations(stats, CHECK_KEYS)
        out["checks"].append(time.perf_counter() - started)
        out["checks_read"].append(reading)
        out["bars"] = bars

        started = time.perf_counter()
        replace_stats(store.engine, all_table_rows(registry, store, config))
        out["stats_plain"].append(time.perf_counter() - started)

        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
        out["stats_dagster"].append(time.perf_counter() - started)
        if not result.success:
            raise SystemExit("symbol_stats_job failed")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
