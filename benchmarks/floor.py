"""The floor: a bare loop with no Dagster fetching every symbol's history from the sandbox.

Run as a child process by scenario 1 (it prints one JSON line):

    python -m benchmarks.floor --base-url URL --db-url sqlite:///... --symbols-file FILE --start YYYY-MM-DD [--mode bare|library]

- `bare`: one `requests.Session`, `response.json()`, `bars.parse_aggregate_results` and the warehouse's
  bulk upsert `BarStore.upsert_bars` (one transaction per symbol): the least work our job can do.
- `library`: `ingest.refresh_symbol` with `PolygonClient`, `BarStore` and `SymbolRegistry` (status
  updates, re-fetch planning, summary query) but still no Dagster: where our own code costs time.

The loop's time excludes interpreter start-up and imports; the warehouse schema is created first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--symbols-file", required=True, help="JSON list of [symbol, asset_class]")
    parser.add_argument("--start", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--mode", choices=("bare", "library"), default="bare")
    parser.add_argument("--in-flight", type=int, default=1, help="bare mode: requests in flight at once (threads)")
    parser.add_argument(
        "--job-requests", action="store_true",
        help="bare mode with --in-flight: also send the other requests `ohlcv_daily` sends on these symbols' "
        "first run (their corporate-action batches and the pages of the list of tickers holding their "
        "reference data), in flight with the bars: the floor for the job's own requests",
    )
    args = parser.parse_args()

    import requests

    from market_pipeline.polygon.bars import parse_aggregate_results
    from market_pipeline.polygon.tickers import polygon_ticker
    from market_pipeline.warehouse.store import BarStore

    with open(args.symbols_file) as fh:
        symbols = [tuple(x) for x in json.load(fh)]
    store = BarStore(args.db_url)
    store.engine  # migrations run here, before the clock starts
    today = dt.datetime.now(dt.timezone.utc).date()
    phases = {"http": 0.0, "json": 0.0, "parse": 0.0, "upsert": 0.0}
    bars = requests_sent = 0

    started = time.perf_counter()
    if args.mode == "bare" and args.in_flight > 1:
        bars, requests_sent = _bare_in_flight(args, symbols, today, store, phases)
    elif args.mode == "bare":
        session = requests.Session()
        session.headers["Authorization"] = "Bearer sandbox-key"
        params = {"adjusted": "true", "sort": "asc", "limit": 50000}
        for symbol, asset_class in symbols:
            t0 = time.perf_counter()
            url = f"{args.base_url}/v2/aggs/ticker/{polygon_ticker(symbol, asset_class)}/range/1/day/{args.start}/{today}"
            response = session.get(url, params=params, timeout=60)
            response.raise_for_status()
            t1 = time.perf_counter()
            body = response.json()
            t2 = time.perf_counter()
            frame = parse_aggregate_results(body.get("results"), asset_class)
            t3 = time.perf_counter()
            store.upsert_bars(symbol, frame)
            t4 = time.perf_counter()
            requests_sent += 1
            bars += len(frame)
            phases["http"] += t1 - t0
            phases["json"] += t2 - t1
            phases["parse"] += t3 - t2
            phases["upsert"] += t4 - t3
            if body.get("next_url"):
                raise SystemExit("the floor expects one page per symbol (start the sandbox without page_size)")
    else:
        from market_pipeline.refresh.ingest import refresh_symbol
        from market_pipeline.polygon.client import PolygonClient
        from market_pipeline.warehouse.registry import SymbolRegistry

        registry = SymbolRegistry(args.db_url)
        tracked = {r.symbol: r for r in registry.get_many([s for s, _ in symbols])}
        with PolygonClient("sandbox-key", args.base_url, requests_per_minute=0) as client:
            for symbol, _ in symbols:
                result = refresh_symbol(client, store, registry, tracked[symbol], run_id=None, today=today)
                if result.status != "completed":
                    raise SystemExit(f"{symbol}: {result.error}")
                bars += result.rows_fetched
            requests_sent = client.stats.requests
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bars": bars, "requests": requests_sent, "symbols": len(symbols), **phases}))


def _bare_in_flight(args, symbols, today, store, phases) -> tuple[int, int]:
    """The bare loop with `--in-flight` requests at once: threads fetch, decode and parse (one session
    each); this thread upserts each symbol as its frame arrives, in order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from market_pipeline.polygon.bars import parse_aggregate_results
    from market_pipeline.polygon.tickers import polygon_ticker

    local = threading.local()
    params = {"adjusted": "true", "sort": "asc", "limit": 50000}

    def session_of_thread() -> requests.Session:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.headers["Authorization"] = "Bearer sandbox-key"
        return session

    def fetch(item):
        symbol, asset_class = item
        session = session_of_thread()
        url = f"{args.base_url}/v2/aggs/ticker/{polygon_ticker(symbol, asset_class)}/range/1/day/{args.start}/{today}"
        response = session.get(url, params=params, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("next_url"):
            raise SystemExit("the floor expects one page per symbol (start the sandbox without page_size)")
        return symbol, parse_aggregate_results(body.get("results"), asset_class)

    def get_json(url: str, params: dict) -> dict:
        response = session_of_thread().get(url, params=params, timeout=60)
        response.raise_for_status()
        return response.json()

    def list_pages(_item) -> int:
        """The job's walk through the list of tickers for these symbols (one page after another)."""
        from market_pipeline.reference.listing import ListWalk, parse_list_page

        walk = ListWalk("stocks", [polygon_ticker(s, a) for s, a in symbols if a != "crypto"])
        pages = 0
        while (params := walk.next_query()) is not None:
            walk.take(parse_list_page(get_json(f"{args.base_url}/v3/reference/tickers", params)))
            pages += 1
        return pages

    def corporate_actions(item) -> int:
        _, path, batch = item
        get_json(f"{args.base_url}{path}", {"limit": 5000, "ticker.any_of": ",".join(batch)})
        return 1

    extra = []
    if args.job_requests:
        from market_pipeline.polygon.corporate_actions import BATCH_SIZE, V1

        equities = sorted(s for s, a in symbols if a != "crypto")
        batches = [equities[i : i + BATCH_SIZE] for i in range(0, len(equities), BATCH_SIZE)]
        extra = [("ca", V1[kind], batch) for kind in ("splits", "dividends") for batch in batches] + [("pages",)]

    def work(item):
        if item[0] == "ca":
            return item, corporate_actions(item)
        if item[0] == "pages":
            return item, list_pages(item)
        return fetch(item)

    bars = sent = 0
    with ThreadPoolExecutor(max_workers=args.in_flight) as pool:
        t0 = time.perf_counter()
        for first, second in pool.map(work, extra + list(symbols)):
            if isinstance(first, tuple):  # one of the job's other requests
                sent += second
                continue
            t1 = time.perf_counter()
            store.upsert_bars(first, second)
            t2 = time.perf_counter()
            phases["http"] += t1 - t0  # waiting for the next frame (fetch, decode, parse overlap)
            phases["upsert"] += t2 - t1
            bars += len(second)
            sent += 1
            t0 = time.perf_counter()
    return bars, sent


if __name__ == "__main__":
    main()
