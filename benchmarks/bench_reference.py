"""Requests and time of one weekly `symbol_reference` refresh of N tracked stocks (run by scenario 13).

    python -m benchmarks.bench_reference --base-url URL --symbols-file FILE [--cap 300] [--json FILE]

For each case, a fresh SQLite warehouse tracking the N stocks (all of them in the sandbox's list of
tickers), their `symbol_reference` rows written straight into the warehouse, a fresh Dagster instance
with the project's event log; then the `symbol_reference_job` run executed in-process as the weekly
schedule launches it, timed from its start to its end; its requests from the asset's metadata.

- `list dates known`: every row as a refresh leaves it (steady state): pages of the list only;
- `list dates unknown`: every row as a bulk first run leaves it (read from the list, no list date), the
  refresh capped at `--cap` list-date lookups (the free plan's default: an hour of 5 requests a minute).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

CASES = ("list dates known", "list dates unknown")


def _seed(url: str, symbols: list[str], list_dates: bool) -> None:
    import sqlalchemy as sa

    from market_pipeline.reference.listing import LIST_DATE_PENDING
    from market_pipeline.sandbox.reference import default_figi
    from market_pipeline.warehouse import SymbolRegistry
    from market_pipeline.warehouse.engine import get_engine
    from market_pipeline.warehouse.schema import symbol_reference

    SymbolRegistry(url).add(symbols, "stock", dt.date(2020, 1, 2))
    now = dt.datetime(2025, 3, 1)
    rows = [
        {"symbol": s, "asset_class": "stock", "status": "ok", "status_text": None if list_dates else LIST_DATE_PENDING,
         "ticker": s, "name": s, "market": "stocks", "type": "CS", "primary_exchange": "XNYS",
         "composite_figi": default_figi(s), "share_class_figi": None, "list_date": dt.date(1995, 1, 3) if list_dates else None,
         "active": True, "delisted_on": None, "renamed_to": None, "fetched_at": now}
        for s in symbols
    ]
    with get_engine(url).begin() as conn:
        conn.execute(sa.insert(symbol_reference), rows)


def _refresh(instance, cap: int | None) -> tuple[bool, float, dict]:
    from dagster import AssetKey

    from market_pipeline.definitions import defs

    job = defs.resolve_job_def("symbol_reference_job")
    run_config = {"ops": {"symbol_reference": {"config": {"list_date_lookups": cap}}}} if cap is not None else None
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False,
                                    tags={"market_pipeline/trigger": "symbol_reference_weekly"})
    seconds = time.perf_counter() - started
    meta = {}
    for event in result.get_asset_materialization_events():
        if event.asset_key == AssetKey("symbol_reference"):
            meta = {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}
    return result.success, seconds, meta


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--symbols-file", required=True, help="JSON list of stock symbols (in the sandbox's list)")
    parser.add_argument("--cap", type=int, default=300, help="list-date lookups of the 'list dates unknown' case")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    symbols = json.loads(Path(args.symbols_file).read_text())

    from dagster import instance_for_test

    from market_pipeline.storage.config import project_event_log_storage

    out = []
    for case in CASES:
        with tempfile.TemporaryDirectory(prefix="mp-bench-reference-") as tmp:
            home = Path(tmp)
            url = f"sqlite:///{home / 'warehouse.sqlite'}"
            os.environ.update(MARKET_PIPELINE_HOME=str(home), MARKET_PIPELINE_DB_URL=url, POLYGON_API_KEY="sandbox-key",
                              POLYGON_BASE_URL=args.base_url, POLYGON_REQUESTS_PER_MINUTE="0")
            _seed(url, symbols, list_dates=case == CASES[0])
            (home / "dagster").mkdir()
            with instance_for_test(temp_dir=str(home / "dagster"), overrides=project_event_log_storage(home / "dagster")) as instance:
                ok, seconds, meta = _refresh(instance, None if case == CASES[0] else args.cap)
            from market_pipeline.warehouse.engine import dispose_engine

            dispose_engine(url)
        out.append({
            "case": case, "success": ok, "seconds": seconds, "symbols": len(symbols), "requests": meta.get("requests"),
            "list_pages": meta.get("list_pages"), "single_lookups": meta.get("single_lookups"),
            "list_dates_pending": meta.get("list_dates_pending"), "cap": None if case == CASES[0] else args.cap,
        })
    text = json.dumps(out)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
