"""`make dev`: the Dagster UI and daemon on http://127.0.0.1:3000 with the project's instance.

With no POLYGON_API_KEY the built-in sandbox serves synthetic bars on a loopback port for the
lifetime of the stack, and the code location talks to it (no pacing, as the sandbox has no limit).
Schedules (stocks_daily_refresh, crypto_daily_refresh) and sensors (tracked_symbols_sensor and the
run-failure sensors) are on from the start: add a symbol with `market-pipeline symbols add` and
watch its backfill run. The daemon logs at WARNING (`--verbose`: INFO, a line per sensor tick).

Ctrl-C or SIGTERM stops everything, sent to this process, to `make` (GNU make passes SIGTERM on to
its recipe but not SIGINT: it resets its own handler and waits for the recipe, which notices that and
stops) or to the stack's `dg dev` process. The webserver, daemon and code server `dg dev` starts
ignore signals of their own (Dagster's design) and stop with it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from market_pipeline import settings
from market_pipeline.devtools.instance import DagsterStorageError, configure_home, dagster_home
from market_pipeline.devtools.processes import caught_signals, command_name
from market_pipeline.devtools.stack import DagsterStack, StackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m market_pipeline.devtools.devstack", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the UI listens on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=3000, help="port of the UI (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the UI to come up (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="log the daemon at INFO (every sensor tick) instead of WARNING")
    args = parser.parse_args(argv)
    chosen = bool((os.environ.get("DAGSTER_HOME") or "").strip())
    try:
        settings.validate()
        home = dagster_home()
    except (settings.SettingsError, DagsterStorageError) as exc:
        print(f"make dev: error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ, DAGSTER_HOME=str(home))
    stack = DagsterStack(home, env, host=args.host, port=args.port, daemon_log_level="info" if args.verbose else "warning")
    try:
        stack.claim()  # before anything starts: one stack per port and per Dagster home
    except StackError as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    if chosen:  # the project's dagster.yaml into a home without one, or one line on what it lacks
        try:
            configure_home(home, prog="make dev")
        except DagsterStorageError as exc:
            stack.release()
            print(f"make dev: error: {exc}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGINT, _stop)  # Ctrl-C, and a process manager's stop, shut the stack down
    signal.signal(signal.SIGTERM, _stop)
    watch_make()
    sandbox = None
    try:
        if not settings.polygon_api_key():
            from market_pipeline.sandbox import SANDBOX_API_KEY, SandboxServer

            sandbox = SandboxServer(host="127.0.0.1", port=0).start()
            stack.env.update(POLYGON_API_KEY=SANDBOX_API_KEY, POLYGON_BASE_URL=sandbox.url, POLYGON_REQUESTS_PER_MINUTE="0")
            print(f"No POLYGON_API_KEY set: the built-in sandbox serves SYNTHETIC bars at {sandbox.url}", flush=True)
        else:
            print(
                f"Polygon at {settings.polygon_base_url()}, paced at {settings.requests_per_minute()} requests/minute "
                "(POLYGON_REQUESTS_PER_MINUTE; 0 = no pacing)",
                flush=True,
            )
        print(f"Dagster home: {home}\nWarehouse: {settings.db_url()}", flush=True)
        stack.start(timeout=args.timeout)
        print(
            f"\nDagster UI: {stack.url}  (schedules and sensors are on; Ctrl-C stops)\n"
            "Track a symbol and watch its backfill: market-pipeline symbols add AAPL --asset-class stock\n",
            flush=True,
        )
        return stack.wait() or 0
    except _Stop:
        print("\nStopping the Dagster UI and daemon...", flush=True)
        return 0
    except StackError as exc:
        print(f"make dev: the Dagster UI did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        # further Ctrl-C or SIGTERM while stopping are ignored: the stop below finishes, with no traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop(timeout=STOP_TIMEOUT)
        if sandbox is not None:
            sandbox.stop()


STOP_TIMEOUT = 10.0  # seconds for dg dev to stop on its own before its processes are terminated
FATAL_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def watch_make(poll: float = 0.25) -> None:
    """When `make dev` started this process: stop when make is told to stop.

    GNU make passes SIGTERM on to its recipe, but not SIGINT or SIGHUP (it expects the terminal to
    have sent those to the whole process group): it resets its handler for the signal to the
    default and waits for the recipe to end. So a `kill -INT <make's pid>` would leave the stack
    running and make waiting for ever. Make's handlers are visible in /proc: once one of them is
    gone, this process sends itself SIGTERM and stops as on Ctrl-C."""
    parent = os.getppid()
    if command_name(parent) != "make":
        return
    watched = (caught_signals(parent) or set()) & FATAL_SIGNALS
    if not watched:
        return

    def watch():
        while True:
            time.sleep(poll)
            caught = caught_signals(parent)
            if caught is None or watched - caught:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="watch-make", daemon=True).start()


class _Stop(BaseException):
    """Ctrl-C or SIGTERM: stop the stack."""


def _stop(_signum, _frame):
    raise _Stop()


if __name__ == "__main__":
    sys.exit(main())
