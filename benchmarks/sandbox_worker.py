"""The benchmark's sandbox process: a `SandboxServer` (no rate limit, no faults) driven over stdin.

Prints {"url": ...} once listening, then answers one JSON line per command read from stdin:
add_to_universe [tickers, market], warm [tickers], set_latency MS, counts, counts_by_class (from the request log,
at most its last 10,000 requests), reset, set_now ISO|null, stop.
See `benchmarks.common.SandboxProcess`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from urllib.parse import unquote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page-size", type=int, default=None)
    args = parser.parse_args()

    from market_pipeline.sandbox import SandboxServer
    from market_pipeline.sandbox import market as synthetic

    server = SandboxServer(host="127.0.0.1", port=0, page_size=args.page_size).start()
    print(json.dumps({"url": server.url}), flush=True)
    try:
        for line in sys.stdin:
            message = json.loads(line)
            command, payload = message["command"], message.get("args")
            try:
                result = None
                if command == "stop":
                    print(json.dumps({"result": None}), flush=True)
                    break
                if command == "add_to_universe":
                    server.add_to_universe(payload[0], market=payload[1])
                elif command == "warm":
                    started = time.perf_counter()
                    for ticker in payload:
                        synthetic.ticker_series(ticker)
                    result = time.perf_counter() - started
                elif command == "counts":
                    result = server.request_counts()
                elif command == "counts_by_class":
                    result = {"stock": 0, "crypto": 0, "grouped_stocks": 0, "grouped_crypto": 0, "other": 0}
                    for record in server.request_log():
                        if record.endpoint == "aggs_range":
                            ticker = unquote(record.path.split("/")[4])
                            result["crypto" if ticker.startswith("X:") else "stock"] += 1
                        elif record.endpoint in ("grouped_stocks", "grouped_crypto"):
                            result[record.endpoint] += 1
                        else:
                            result["other"] += 1
                elif command == "set_latency":
                    server.latency_ms = float(payload)
                elif command == "reset":
                    server.reset_counts()
                elif command == "set_now":
                    if payload is None:
                        server.now = lambda: dt.datetime.now(dt.timezone.utc)
                    else:
                        fixed = dt.datetime.fromisoformat(payload)
                        server.now = lambda: fixed
                else:
                    raise ValueError(f"unknown command {command!r}")
                print(json.dumps({"result": result}), flush=True)
            except Exception as exc:  # report and keep serving
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
