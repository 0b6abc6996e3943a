"""Failure recovery: a run that fails, is cancelled or dies never leaves a symbol `in_progress`.

- In-process: `market-pipeline run` killed with SIGKILL mid-symbol (the sandbox made slow), then what
  Dagster does next (the code server's report of a dead run worker, or the UI's force-termination),
  then the run-status sensors evaluated against the same instance and warehouse; a rerun completes
  without duplicating a bar.
- Full stack (slow): `dagster dev`; a run worker launched by the daemon killed with SIGKILL, a run
  terminated from the UI (GraphQL), and a killed run retried by Dagster's run retries; the sensors run
  in the daemon, nothing is simulated.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context

from market_pipeline import calendars
from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.definitions import defs
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.defs.bars.reconcile import range_tags
from market_pipeline.defs.resources import WarehouseResource
from market_pipeline.sandbox import SANDBOX_API_KEY, as_traded_bars
from market_pipeline.devtools.stack import DagsterStack, descendants
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline_tests.dagster_helpers import wait_for
from market_pipeline_tests.waiting import scaled

PROJECT = Path(__file__).resolve().parents[1]
START = dt.date(2025, 6, 2)
SYMBOLS = {"AAPL": "stock", "MSFT": "stock", "SPY": "etf"}


def served(symbol: str, end: dt.date) -> pd.DataFrame:
    frame = as_traded_bars(symbol, START, end).rename(
        columns={"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap", "n": "transactions"}
    )
    frame["transactions"] = frame["transactions"].astype("Int64")
    return frame[list(BAR_COLUMNS)].reset_index(drop=True)


def assert_stored_as_served(url: str, symbols) -> None:
    """Every bar once (the primary key guarantees that), and exactly the bars the sandbox serves."""
    store = BarStore(url)
    for symbol in symbols:
        stored = store.read_bars(symbol)
        assert stored["date"].is_unique
        last = stored["date"].iloc[-1].date()
        assert last >= calendars.latest_completed_session("stock", dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10))
        pd.testing.assert_frame_equal(stored, served(symbol, last), check_dtype=False)


def in_progress(registry: SymbolRegistry, run_id: str | None = None):
    rows = [r for r in registry.list() if r.backfill_status == "in_progress" and (run_id is None or r.last_run_id == run_id)]
    return rows[0] if rows else None


def track(url: str, instance: DagsterInstance) -> SymbolRegistry:
    registry = SymbolRegistry(url)
    for symbol, asset_class in SYMBOLS.items():
        registry.add([symbol], asset_class, START)
    instance.add_dynamic_partitions(symbols_partitions.name, list(SYMBOLS))
    return registry


def environment(tmp_path: Path, sandbox, dagster_home: Path) -> dict:
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "MARKET_PIPELINE_HOME": str(tmp_path / "home"),
        "MARKET_PIPELINE_DB_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "POLYGON_API_KEY": SANDBOX_API_KEY,
        "POLYGON_BASE_URL": sandbox.url,
        "POLYGON_REQUESTS_PER_MINUTE": "0",
        "MARKET_PIPELINE_STEP_RETRY_DELAY": "0.2",
        "PYTHONWARNINGS": "ignore",
    }


def cli_run(env: dict, log: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("market-pipeline")), "run", *SYMBOLS]
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


# ---- the run-status sensors, evaluated in-process against the instance the killed CLI used ------
class Sensors:
    """The two run-status sensors evaluated tick after tick, keeping their cursors as the daemon does."""

    def __init__(self, instance: DagsterInstance, url: str):
        self.instance, self.url = instance, url
        self.repository = defs.get_repository_def()
        self.cursors: dict[str, str | None] = {}
        self.tick()  # the first tick of a run-status sensor only sets its cursor

    def tick(self) -> None:
        for name in ("symbols_run_failure_sensor", "symbols_run_canceled_sensor"):
            sensor = self.repository.get_sensor_def(name)
            with build_sensor_context(
                instance=self.instance,
                cursor=self.cursors.get(name),
                resources={"warehouse": WarehouseResource(url=self.url)},
                repository_def=self.repository,
            ) as context:
                result = sensor.evaluate_tick(context)
            self.cursors[name] = result.cursor


@pytest.fixture
def shared_instance(tmp_path, monkeypatch):
    """A Dagster home with the project's dagster.yaml, shared by this process and the CLI's."""
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # where the project's event log storage keeps its files
    shutil.copyfile(PROJECT / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        yield home, instance


@pytest.mark.parametrize("ending", ["worker_died", "force_terminated", "next_cli_run"])
def test_killed_cli_run_leaves_no_symbol_in_progress_and_a_rerun_completes(tmp_path, sandbox, shared_instance, ending):
    home, instance = shared_instance
    env = environment(tmp_path, sandbox, home)
    url = env["MARKET_PIPELINE_DB_URL"]
    registry = track(url, instance)
    sensors = Sensors(instance, url)

    sandbox.latency_ms = 1500  # each request takes 1.5 s: the kill lands mid-symbol
    process = cli_run(env, tmp_path / "cli.log")
    try:
        victim = wait_for(lambda: in_progress(registry), 60, "a symbol in progress", poll=0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    sandbox.latency_ms = 0
    run = instance.get_run_by_id(victim.last_run_id)
    # Dagster cannot know an in-process run died: it stays STARTED and the symbol in_progress
    assert run.status == DagsterRunStatus.STARTED
    assert registry.get(victim.symbol).backfill_status == "in_progress"
    # and its `polygon_api` pool slot stays taken: every later ohlcv_daily step would wait for it
    assert run.run_id in instance.event_log_storage.get_concurrency_run_ids()
    sensors.tick()
    assert registry.get(victim.symbol).backfill_status == "in_progress"  # nothing ended yet

    if ending == "worker_died":
        instance.report_run_failed(run)  # what the code server reports for a dead run worker
        expected = "marked as failed"
    elif ending == "force_terminated":  # the UI's Terminate -> "Force termination" on a run whose process is gone
        instance.report_run_canceled(run, message="This pipeline was forcibly marked as canceled from outside the execution context.")
        expected = "cancelled"
    if ending != "next_cli_run":  # with no daemon at all, the next `market-pipeline run` recovers it itself
        sensors.tick()
        row = registry.get(victim.symbol)
        assert row.backfill_status == "failed" and row.last_run_id == run.run_id
        assert run.run_id in row.backfill_error and expected in row.backfill_error
        assert in_progress(registry) is None
        assert run.run_id not in instance.event_log_storage.get_concurrency_run_ids()  # the sensor freed the slot

    rerun = subprocess.run(
        [str(Path(sys.executable).with_name("market-pipeline")), "run", *SYMBOLS],
        env=env, capture_output=True, text=True, timeout=scaled(120),
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    if ending == "next_cli_run":
        assert f"Run {run.run_id} died with its process" in rerun.stderr
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert {r.symbol: r.backfill_status for r in registry.list()} == dict.fromkeys(SYMBOLS, "completed")
    assert_stored_as_served(url, SYMBOLS)


def test_sensors_touch_only_the_symbols_of_the_run_that_ended(polygon_env, instance, warehouse_url):
    """A failed run's in_progress symbols are released; symbols of other runs, in progress or not, are not."""
    registry = track(warehouse_url, instance)
    sensors = Sensors(instance, warehouse_url)
    job = defs.resolve_job_def("ohlcv_daily_job")
    instance.add_dynamic_partitions(symbols_partitions.name, ["NOTTRACKED"])
    failed = job.execute_in_process(instance=instance, tags=range_tags(["SPY", "NOTTRACKED"]), raise_on_error=False)
    assert not failed.success  # NOTTRACKED is not in tracked_symbols
    assert registry.get("SPY").backfill_status == "completed"
    registry.mark_in_progress("AAPL", failed.run_id)  # as a run killed mid-symbol leaves it
    registry.mark_in_progress("MSFT", "another-run-still-going")
    sensors.tick()
    aapl = registry.get("AAPL")
    assert aapl.backfill_status == "failed" and failed.run_id in aapl.backfill_error
    assert registry.get("MSFT").backfill_status == "in_progress"
    assert registry.get("SPY").backfill_status == "completed"
    sensors.tick()  # a later tick does not process the same run again
    assert registry.get("MSFT").backfill_status == "in_progress"


# ---- the full stack: the daemon's sensors, the code server's run-worker watch, run retries --------
TERMINATE = """
mutation Terminate($runId: String!, $policy: TerminateRunPolicy) {
  terminateRun(runId: $runId, terminatePolicy: $policy) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""
LOGS = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) { __typename ... on EventConnection { events { __typename ... on MessageEvent { message } } } }
}
"""
RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { __typename ... on Runs { results { runId status } } }
}
"""


def worker_pid(stack: DagsterStack, run_id: str) -> int:
    """The run worker's pid, from its "Started process for run (pid: N)." event."""
    events = stack.graphql(LOGS, {"runId": run_id})["logsForRun"]["events"]
    for event in events:
        match = re.search(r"Started process for run \(pid: (\d+)\)", event.get("message") or "")
        if match:
            return int(match.group(1))
    raise AssertionError(f"no run worker pid in the events of {run_id}")


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once (the host or container dying)."""
    for victim in [pid, *descendants(pid)]:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def released(registry: SymbolRegistry, symbol: str, run_id: str, reason: str):
    row = registry.get(symbol)
    return row if row.backfill_status == "failed" and run_id in (row.backfill_error or "") and reason in row.backfill_error else None


@pytest.mark.slow
def test_daemon_releases_symbols_of_killed_and_terminated_runs_and_retries_killed_runs(tmp_path, sandbox, monkeypatch):
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))  # where the project's event log storage keeps its files
    shutil.copyfile(PROJECT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = environment(tmp_path, sandbox, dagster_home)
    url = env["MARKET_PIPELINE_DB_URL"]
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        registry = track(url, instance)  # the partitions exist: tracked_symbols_sensor has nothing to do
    stack = DagsterStack(dagster_home, env, log_path=tmp_path / "dagster-dev.log").start(timeout=scaled(180))
    span = (list(SYMBOLS)[0], list(SYMBOLS)[-1])
    try:
        # 1. a run worker (and its step process) killed mid-symbol; run retries off for this run
        sandbox.latency_ms = 1500
        killed = stack.launch_run(partition_range=span, tags={"dagster/max_retries": "0"})
        victim = wait_for(lambda: in_progress(registry, killed), 90, "a symbol in progress in the launched run")
        kill_tree(worker_pid(stack, killed))
        assert stack.wait_run(killed, scaled(60)) == "FAILURE"  # the code server saw its run worker die
        row = wait_for(lambda: released(registry, victim.symbol, killed, "ended before this symbol finished"), 60,
                       "the failure sensor to release the symbol")
        assert row.last_run_id == killed
        assert in_progress(registry) is None
        with DagsterInstance.from_config(str(dagster_home)) as instance:  # its pool slot is free again
            wait_for(lambda: killed not in instance.event_log_storage.get_concurrency_run_ids(), 30, "the slot freed")

        # 2. the UI's Terminate on a running run (the killed run's pool slot must not block it)
        terminated = stack.launch_run(partition_range=span)
        victim = wait_for(lambda: in_progress(registry, terminated), 90, "a symbol in progress in the second run")
        result = stack.graphql(TERMINATE, {"runId": terminated, "policy": "SAFE_TERMINATE"})["terminateRun"]
        assert result["__typename"] == "TerminateRunSuccess", result
        assert stack.wait_run(terminated, scaled(60)) == "CANCELED"
        row = wait_for(lambda: released(registry, victim.symbol, terminated, "cancelled"), 60, "the canceled sensor")
        assert in_progress(registry) is None
        # the op itself stopped on the interrupt (issue 15): marked "interrupted", its step not retried
        assert "interrupted" in row.backfill_error, row.backfill_error
        kinds = {e["__typename"] for e in stack.graphql(LOGS, {"runId": terminated})["logsForRun"]["events"]}
        assert "ExecutionStepUpForRetryEvent" not in kinds and "ExecutionStepFailureEvent" in kinds, kinds
        # the step ran in the run worker itself (defs/executor.py), not in a step process of its own
        assert "StepWorkerStartingEvent" not in kinds and "ExecutionStepStartEvent" in kinds, kinds

        # 3. a killed run with the project's run retries: Dagster launches a retry, which completes
        retried = stack.launch_run(partition_range=span)
        wait_for(lambda: in_progress(registry, retried), 90, "a symbol in progress in the third run")
        kill_tree(worker_pid(stack, retried))
        sandbox.latency_ms = 0
        assert stack.wait_run(retried, scaled(60)) == "FAILURE"

        def retry_run():
            results = stack.graphql(RUNS, {"filter": {"tags": [{"key": "dagster/parent_run_id", "value": retried}]}})
            return results["runsOrError"]["results"]

        (retry,) = wait_for(retry_run, 90, "the automatic retry of the killed run", poll=1.0)
        assert stack.wait_run(retry["runId"], scaled(120)) == "SUCCESS"
        rows = {r.symbol: r for r in registry.list()}
        assert {s: r.backfill_status for s, r in rows.items()} == dict.fromkeys(SYMBOLS, "completed")
        assert {r.last_run_id for r in rows.values()} == {retry["runId"]}
        assert_stored_as_served(url, SYMBOLS)
    finally:
        stack.stop()
