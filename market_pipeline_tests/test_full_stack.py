"""The full stack as a user drives it: `dagster dev` (webserver, daemon, code server) in a temporary
Dagster home with the project's dagster.yaml, against the sandbox over HTTP and a temporary SQLite
warehouse, on free ports.

1. add symbols of all three asset classes with the CLI (a subprocess with the same environment);
2. wait until tracked_symbols_sensor has created their partitions and its runs have succeeded;
3. launch a backfill of every partition through GraphQL, with the mutation the UI's launch dialog sends;
4. wait for it, then check the warehouse against the sandbox, every symbol `completed`, and the
   materialisations and per-partition check results as the UI reads them (GraphQL);
5. stop everything and check that nothing of the stack is left running.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from market_pipeline import calendars
from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.sandbox import SANDBOX_API_KEY, as_traded_bars
from market_pipeline.devtools.stack import BACKFILL_TERMINAL, DagsterStack, descendants, group_members
from market_pipeline.warehouse import BarStore, get_engine
from market_pipeline.warehouse.stats_table import read_stats
from market_pipeline_tests.waiting import scaled, wait_for

pytestmark = pytest.mark.slow

START = "2025-06-02"
SYMBOLS = {"stock": ["AAPL", "MSFT"], "etf": ["SPY"], "crypto": ["BTCUSD", "ETHUSD"]}
ALL = [s for names in SYMBOLS.values() for s in names]
CLASS_OF = {s: c for c, names in SYMBOLS.items() for s in names}
CHECKS = ("validation_rate", "date_gaps", "freshness", "split_consistency")

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { __typename ... on Runs { results { runId status tags { key value } } } }
}
"""
ASSET_NODE = """
query AssetNode($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      partitionKeys
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetChecksOrError {
        __typename
        ... on AssetChecks {
          checks {
            name
            partitionStatuses {
              __typename
              ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions executionFailedPartitions }
            }
          }
        }
      }
    }
  }
}
"""
MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition
        runId
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
          ... on BoolMetadataEntry { boolValue }
        }
      }
    }
  }
}
"""
CHECK_EXECUTIONS = """
query CheckExecutions($key: AssetKeyInput!, $check: String!, $partition: String) {
  assetCheckExecutions(assetKey: $key, checkName: $check, partition: $partition, limit: 1) {
    runId
    status
    partition
    evaluation { success partition metadataEntries { label } }
  }
}
"""
SCHEDULES = """
query Schedules($repo: RepositorySelector!) {
  schedulesOrError(repositorySelector: $repo) {
    __typename ... on Schedules { results { name scheduleState { status } } }
  }
}
"""
KEY = {"path": ["ohlcv_daily"]}
STATS_MATERIALIZATIONS = """
query Stats {
  assetNodeOrError(assetKey: {path: ["symbol_stats"]}) {
    ... on AssetNode { assetMaterializations(limit: 1) { runId metadataEntries { label } } }
  }
}
"""


def cli(env: dict, *args: str) -> str:
    command = [str(Path(sys.executable).with_name("market-pipeline")), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=scaled(120))
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def listed(env: dict) -> dict:
    return {row["symbol"]: row for row in json.loads(cli(env, "symbols", "list", "--json"))}


def served(symbol: str, end: dt.date) -> pd.DataFrame:
    ticker = f"X:{symbol}" if CLASS_OF[symbol] == "crypto" else symbol
    raw = as_traded_bars(ticker, dt.date.fromisoformat(START), end)
    frame = raw.rename(columns={"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap", "n": "transactions"})
    frame["transactions"] = frame["transactions"].astype("Int64")
    return frame[list(BAR_COLUMNS)].reset_index(drop=True)


def runs(stack: DagsterStack, **tags) -> list[dict]:
    data = stack.graphql(RUNS, {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}})
    return data["runsOrError"]["results"]


def test_add_symbols_sensor_backfills_then_ui_backfill_of_every_partition(tmp_path, sandbox):
    warehouse = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    env = {
        **os.environ,
        "MARKET_PIPELINE_HOME": str(tmp_path / "home"),
        "MARKET_PIPELINE_DB_URL": warehouse,
        "POLYGON_API_KEY": SANDBOX_API_KEY,
        "POLYGON_BASE_URL": sandbox.url,
        "POLYGON_REQUESTS_PER_MINUTE": "0",
        "PYTHONWARNINGS": "ignore",
    }
    stack = DagsterStack(tmp_path / "dagster", env, log_path=tmp_path / "dagster-dev.log")
    stack.start(timeout=scaled(180))
    leader = stack.process.pid
    try:
        # the daemon is the project's (backfills iterate every MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS), not dagster's
        commands = [_cmdline(p) for p in descendants(leader)]
        assert any("market_pipeline.devtools.daemon" in c and " run " in f" {c} " for c in commands), commands
        assert not any("dagster._daemon" in c for c in commands), commands
        assert (tmp_path / "dagster" / "dagster.yaml").read_text() == (Path(__file__).parents[1] / "dagster.yaml").read_text()
        schedules = stack.graphql(
            SCHEDULES, {"repo": {"repositoryLocationName": stack.location_name, "repositoryName": stack.repository_name}}
        )["schedulesOrError"]["results"]
        assert {s["name"]: s["scheduleState"]["status"] for s in schedules} == {
            "stocks_daily_refresh": "RUNNING", "crypto_daily_refresh": "RUNNING", "symbol_reference_weekly": "RUNNING",
            "corporate_actions_weekly_sweep": "RUNNING", "revisions_retention_weekly": "RUNNING",
        }

        # 1. the user adds symbols with the CLI
        for asset_class, names in SYMBOLS.items():
            cli(env, "symbols", "add", *names, "--asset-class", asset_class, "--start-date", START)

        # 2. the sensor adds their partitions and backfills them, with nothing else touched
        seen: dict = {}

        def partitions_and_runs_done():
            node = stack.graphql(ASSET_NODE, {"key": KEY})["assetNodeOrError"]
            seen["partitions"] = len(node["partitionKeys"])
            if sorted(node["partitionKeys"]) != sorted(ALL):
                return False
            requested = runs(stack, **{"market_pipeline/trigger": "new_symbols"})
            statuses = {r["status"] for r in requested}
            assert not statuses & {"FAILURE", "CANCELED"}, requested
            seen["runs"] = sorted((r["runId"], r["status"]) for r in requested)
            done = {s for s, row in listed(env).items() if row["backfill_status"] == "completed"}
            seen["done"] = len(done)
            return requested and statuses == {"SUCCESS"} and done == set(ALL) and requested

        # each step (partitions added, a run requested, started, finished, symbols completed) restarts the clock
        sensor_runs = wait_for(
            partitions_and_runs_done, 90, "the sensor's backfill runs", progress=lambda: tuple(sorted(seen.items()))
        )
        sensor_run_ids = {r["runId"] for r in sensor_runs}
        counts_after_sensor = sandbox.request_counts()
        assert counts_after_sensor["aggs_range"] == len(ALL)  # one range request per new symbol

        # 3. "Materialize all" -> launch a backfill of every partition, through the UI's mutation
        backfill_id = stack.launch_partition_backfill("ohlcv_daily")
        # 4. it completes; every symbol is in the warehouse as the sandbox serves it
        def backfill_done():
            status = stack.backfill_status(backfill_id)
            seen["backfill"] = (status, tuple(sorted((r["runId"], r["status"]) for r in runs(stack, **{"dagster/backfill": backfill_id}))))
            return status if status in BACKFILL_TERMINAL else None

        assert wait_for(backfill_done, 120, "the UI's backfill", poll=1.0, progress=lambda: seen.get("backfill")) == "COMPLETED_SUCCESS"
        backfill_runs = runs(stack, **{"dagster/backfill": backfill_id})
        assert backfill_runs and {r["status"] for r in backfill_runs} == {"SUCCESS"}
        backfill_run_ids = {r["runId"] for r in backfill_runs}
        assert not backfill_run_ids & sensor_run_ids
        # the sensor's runs (ohlcv_daily_job) and the backfill's (__ASSET_JOB): one tag finds them all
        bars_runs = {r["runId"] for r in runs(stack, **{"market_pipeline/asset": "ohlcv_daily"})}
        assert sensor_run_ids | backfill_run_ids <= bars_runs

        store = BarStore(warehouse)
        for symbol in ALL:
            stored = store.read_bars(symbol)
            last = stored["date"].iloc[-1].date()
            now = dt.datetime.now(dt.timezone.utc)
            # the latest completed session (or the one before, had a session just ended mid-test)
            assert last in {
                calendars.latest_completed_session(CLASS_OF[symbol], now),
                calendars.latest_completed_session(CLASS_OF[symbol], now - dt.timedelta(minutes=10)),
            }, symbol
            pd.testing.assert_frame_equal(stored, served(symbol, last), check_dtype=False)
        rows = listed(env)
        assert {s: rows[s]["backfill_status"] for s in ALL} == dict.fromkeys(ALL, "completed")
        assert {rows[s]["last_run_id"] for s in ALL} <= backfill_run_ids

        # what the UI shows: a materialisation per partition from the backfill, with its metadata ...
        node = stack.graphql(ASSET_NODE, {"key": KEY})["assetNodeOrError"]
        assert node["partitionStats"]["numMaterialized"] == node["partitionStats"]["numPartitions"] == len(ALL)
        assert node["partitionStats"]["numFailed"] == 0
        events = stack.graphql(MATERIALIZATIONS, {"key": KEY, "partitions": ALL})["assetOrError"]["assetMaterializations"]
        latest = {}
        for event in events:  # most recent first
            latest.setdefault(event["partition"], event)
        assert set(latest) == set(ALL)
        for symbol, event in latest.items():
            assert event["runId"] in backfill_run_ids
            meta = {m["label"]: m for m in event["metadataEntries"]}
            assert meta["fetch_path"]["text"] in ("range", "grouped")
            assert meta["dagster/partition_row_count"]["intValue"] == len(store.read_bars(symbol))
            assert len(store.read_bars(symbol)) <= meta["dagster/row_count"]["intValue"] <= store.count_rows()
            assert "requests" in meta and "rows_changed" in meta
        # ... and both checks per partition, passed, from the backfill's runs
        checks = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
        assert set(checks) == set(CHECKS)
        for name in CHECKS:
            statuses = checks[name]["partitionStatuses"]
            assert sorted(statuses["succeededPartitions"]) == sorted(ALL), name
            assert statuses["failedPartitions"] == [] and statuses["executionFailedPartitions"] == []
            for symbol in ALL:
                (execution,) = stack.graphql(CHECK_EXECUTIONS, {"key": KEY, "check": name, "partition": symbol})[
                    "assetCheckExecutions"
                ]
                assert execution["status"] == "SUCCEEDED" and execution["runId"] in backfill_run_ids
                assert execution["evaluation"]["success"] and execution["evaluation"]["partition"] == symbol
        # the backfill refreshed the stored windows only: no symbol was fetched from scratch again
        refreshed = sandbox.request_counts()
        assert refreshed["aggs_range"] - counts_after_sensor["aggs_range"] <= len(ALL)
        # symbol_stats follows the bars on its own (its automation sensor is on by default)
        stats = wait_for(
            lambda: stack.graphql(STATS_MATERIALIZATIONS)["assetNodeOrError"]["assetMaterializations"],
            150, "symbol_stats materialised by its automation condition", poll=2.0,
        )
        assert "table" in {entry["label"] for entry in stats[0]["metadataEntries"]}
        table = read_stats(get_engine(warehouse))
        assert sorted(row["symbol"] for row in table) == sorted(ALL) and all(row["record_count"] > 0 for row in table)
    finally:
        tree = descendants(leader)
        stack.stop()
    # 5. nothing of the stack is left running
    assert [p for p in tree + [leader] if _not_zombie(p)] == []
    assert group_members(leader) == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"
