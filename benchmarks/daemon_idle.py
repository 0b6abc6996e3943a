"""CPU cost of an idle daemon: Dagster's `dagster-daemon run` (backfill loop every 30 s; with the run
queue's Dagster default of 5 s, then the project's 1 s) beside `market-pipeline daemon` (backfills every
MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS), each on a fresh Dagster home with the project's dagster.yaml
and workspace, no symbols, no backfill.

    .venv/bin/python -m benchmarks.daemon_idle [--warmup 30] [--seconds 60] [--interval 2]

CPU seconds (user + system, the daemon and every process it started, e.g. its code server) counted
from /proc over `--seconds` after `--warmup`, printed per minute. Never part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import CLI, REPO

TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _without_run_coordinator(text: str) -> str:
    """The project's dagster.yaml as it was before the run queue's 1 s dequeue interval (Dagster's 5 s)."""
    return text.split("\n# The run queue:")[0] + "\n"


def measure(command: list[str], env_extra: dict[str, str], warmup: float, seconds: float, yaml_edit=None) -> dict:
    home = Path(tempfile.mkdtemp(prefix="mp-bench-daemon-idle-"))
    try:
        dagster_home = home / "dagster"
        dagster_home.mkdir()
        text = (REPO / "dagster.yaml").read_text()
        (dagster_home / "dagster.yaml").write_text(yaml_edit(text) if yaml_edit else text)
        (home / "data").mkdir()
        env = {
            **os.environ, "DAGSTER_HOME": str(dagster_home), "MARKET_PIPELINE_HOME": str(home),
            "MARKET_PIPELINE_DB_URL": f"sqlite:///{home / 'data' / 'warehouse.sqlite'}",
            "POLYGON_API_KEY": "bench", "POLYGON_BASE_URL": "http://127.0.0.1:9", "POLYGON_REQUESTS_PER_MINUTE": "0",
            "PYTHONWARNINGS": "ignore", **env_extra,
        }
        process = subprocess.Popen(command, env=env, cwd=dagster_home, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(warmup)
            before = _cpu_seconds(_tree(process.pid))
            time.sleep(seconds)
            after = _cpu_seconds(_tree(process.pid))
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return {"cpu_seconds": after - before, "per_minute": (after - before) * 60 / seconds}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon_idle", description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before counting (default 30)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds counted (default 60)")
    parser.add_argument("--interval", default="2", help="MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS of the project's daemon (default 2)")
    args = parser.parse_args(argv)
    workspace = str(REPO / "workspace.yaml")
    results = {
        "dagster-daemon run (30 s), dequeue 5 s": measure(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", workspace], {}, args.warmup, args.seconds,
            _without_run_coordinator),
        "dagster-daemon run (30 s), dequeue 1 s": measure(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", workspace], {}, args.warmup, args.seconds),
        f"market-pipeline daemon ({args.interval} s), dequeue 1 s": measure(
            [CLI, "daemon"], {"MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS": args.interval}, args.warmup, args.seconds),
    }
    for label, r in results.items():
        print(f"{label:44s} {r['per_minute']:6.2f} CPU s per minute idle")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
