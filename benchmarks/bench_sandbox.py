"""Time the sandbox serving 20 years of daily bars for 1,000 tickers over one requests.Session.

    .venv/bin/python benchmarks/bench_sandbox.py [--tickers 1000] [--years 20]

Prints the cold pass (every ticker's series simulated and rendered on first request) and the
warm pass (served from the cache), with and without parsing the JSON on the client.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import requests

from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer


def fetch_all(
    session: requests.Session, base: str, tickers: list[str], start: dt.date, end: dt.date, parse: bool
) -> int:
    """Request every ticker's range once; returns the number of bars received."""
    bars = 0
    for ticker in tickers:
        response = session.get(
            f"{base}/v2/aggs/ticker/{ticker}/range/1/day/{start}/{end}", params={"limit": 50000}
        )
        response.raise_for_status()
        if parse:
            bars += response.json()["resultsCount"]
        else:
            bars += response.content.count(b'"t":')
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=1000)
    parser.add_argument("--years", type=int, default=20)
    options = parser.parse_args()
    tickers = [f"BENCH{i:04d}" for i in range(options.tickers)]
    end = dt.date(2025, 12, 31)
    start = end - dt.timedelta(days=round(365.25 * options.years))
    with SandboxServer() as server, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {SANDBOX_API_KEY}"
        for label, parse in (
            ("cold, bytes only", False),
            ("warm, bytes only", False),
            ("warm, parsed JSON", True),
        ):
            began = time.perf_counter()
            bars = fetch_all(session, server.url, tickers, start, end, parse)
            elapsed = time.perf_counter() - began
            print(
                f"{label:>18}: {len(tickers)} requests, {bars:,} bars in {elapsed:.2f} s "
                f"({1000 * elapsed / len(tickers):.1f} ms per request)"
            )


if __name__ == "__main__":
    main()
