"""Issue 15 at the command line: settings checked before anything runs (exit 2, one line, nothing
created), Polygon unreachable and failed runs reported in one line per problem, SIGTERM stops a
run, and two first runs on a brand-new DAGSTER_HOME both succeed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from market_pipeline.cli.main import main
from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline_tests.waiting import scaled, wait_for

CLI = str(Path(sys.executable).with_name("market-pipeline"))


@pytest.mark.parametrize(
    "name, value, argv",
    [
        ("POLYGON_REQUESTS_PER_MINUTE", "abc", ["run"]),
        ("POLYGON_REQUESTS_PER_MINUTE", "-5", ["run"]),
        ("POLYGON_REQUESTS_PER_MINUTE", "1e3", ["symbols", "list"]),
        ("POLYGON_MAX_IN_FLIGHT", "abc", ["run"]),
        ("POLYGON_MAX_IN_FLIGHT", "0", ["run"]),
        ("POLYGON_MAX_IN_FLIGHT", "-3", ["symbols", "add", "AAPL", "--asset-class", "stock"]),
        ("POLYGON_DECODE_PROCESSES", "abc", ["run"]),
        ("POLYGON_DECODE_PROCESSES", "-1", ["symbols", "list"]),
        ("MARKET_PIPELINE_STEP_RETRY_DELAY", "abc", ["run"]),
        ("MARKET_PIPELINE_STEP_RETRY_DELAY", "-1", ["run"]),
        ("DAGSTER_HOME", "relative/dagster", ["run"]),
        ("POLYGON_BASE_URL", "not-a-url", ["run"]),
        ("POLYGON_BASE_URL", "ftp://api.massive.com", ["symbols", "add", "AAPL", "--asset-class", "stock", "--verify"]),
        ("MARKET_PIPELINE_DB_URL", "sqlite:///{tmp}/no/such/folder/warehouse.sqlite", ["symbols", "add", "AAPL", "--asset-class", "stock"]),
        ("MARKET_PIPELINE_DB_URL", "mysql://u@h/db", ["run"]),
    ],
)
def test_bad_settings_stop_everything_with_one_line_and_exit_2(monkeypatch, capsys, tmp_path, name, value, argv):
    home = tmp_path / "home"
    monkeypatch.setenv("MARKET_PIPELINE_HOME", str(home))
    monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"market-pipeline: error: {name}")
    assert "set" in err[0] or "create it" in err[0]  # a valid value or the fix
    assert not home.exists() and not (tmp_path / "no").exists()  # nothing fetched, written or created


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_sandbox_port_out_of_range_is_refused(capsys, port):
    assert main(["sandbox", "--port", port]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is not a port: use 1-65535, or 0 for any free port" in line


def test_verify_with_polygon_unreachable_is_one_line_exit_1(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", f"sqlite:///{tmp_path / 'w.sqlite'}")
    monkeypatch.setenv("POLYGON_API_KEY", "some-key-123")
    monkeypatch.setenv("POLYGON_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("POLYGON_REQUESTS_PER_MINUTE", "0")
    assert main(["symbols", "add", "IBM", "--asset-class", "stock", "--verify"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("Using Polygon")]
    assert len(err) == 1 and err[0].startswith("market-pipeline: error: Polygon did not answer: could not verify IBM")
    assert "nothing was changed" in err[0] and "some-key-123" not in err[0]
    assert SymbolRegistry(f"sqlite:///{tmp_path / 'w.sqlite'}").list(include_inactive=True) == []


PROJECT_YAML = Path(__file__).resolve().parent.parent / "dagster.yaml"


def cli_env(tmp_path: Path, sandbox, dagster_home: Path | None, **extra) -> dict:
    if dagster_home is not None:
        dagster_home.mkdir(parents=True, exist_ok=True)
        (dagster_home / "dagster.yaml").write_bytes(PROJECT_YAML.read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return {
        **env,
        **({"DAGSTER_HOME": str(dagster_home)} if dagster_home is not None else {}),
        "MARKET_PIPELINE_HOME": str(tmp_path / "home"),
        "MARKET_PIPELINE_DB_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "POLYGON_API_KEY": SANDBOX_API_KEY,
        "POLYGON_BASE_URL": sandbox.url,
        "POLYGON_REQUESTS_PER_MINUTE": "0",
        "MARKET_PIPELINE_STEP_RETRY_DELAY": "0.2",
        "PYTHONWARNINGS": "ignore",
        **extra,
    }


def test_a_failed_run_prints_one_line_per_failed_symbol_and_no_trace(tmp_path, sandbox):
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    registry = SymbolRegistry(url)
    registry.add(["AAPL", "MSFT", "SPY"], "stock", "2025-01-02")
    sandbox.serve_empty("MSFT")  # a new symbol with no bars at all: failed, final
    sandbox.paginate_badly("SPY", "self_loop")  # final too
    env = cli_env(tmp_path, sandbox, tmp_path / "dagster")
    quiet = subprocess.run([CLI, "run"], env=env, capture_output=True, text=True, timeout=scaled(180))
    assert quiet.returncode == 1
    err = quiet.stderr.strip().splitlines()
    assert len(err) == 2, quiet.stderr
    assert err[0].startswith("market-pipeline: MSFT failed: no bars from Polygon for MSFT 2025-01-02..")
    assert err[1].startswith("market-pipeline: SPY failed: SPY: pagination did not end")
    assert "Traceback" not in quiet.stderr and "dagster" not in quiet.stderr.lower()
    assert "2 of 3" not in quiet.stdout and "1 of 3 symbol(s) completed" in quiet.stdout
    verbose = subprocess.run([CLI, "run", "--verbose", "SPY"], env=env, capture_output=True, text=True, timeout=scaled(180))
    assert verbose.returncode == 1
    assert "STEP_FAILURE" in verbose.stderr and "pagination did not end" in verbose.stderr


def test_sigterm_stops_a_run_at_once_without_retry(tmp_path, sandbox):
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    registry = SymbolRegistry(url)
    symbols = ["AAPL", "MSFT", "SPY", "IBM"]
    registry.add(symbols, "stock", "2025-01-02")
    sandbox.latency_ms = 3000  # each answer takes 3 s: the signal lands while a request is in flight
    # two range requests in flight at once: both are on the wire when the signal lands
    env = cli_env(tmp_path, sandbox, tmp_path / "dagster", POLYGON_MAX_IN_FLIGHT="2")
    process = subprocess.Popen([CLI, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # both range requests on the wire (each answer takes 3 s), whatever the machine's load
        wait_for(lambda: process.poll() is not None or sandbox.request_counts()["aggs_range"] >= 2, 120,
                 "the run's two range requests", poll=0.1)
        assert process.poll() is None, "the run ended before its requests were answered"
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, err = process.communicate(timeout=scaled(60))
    finally:
        if process.poll() is None:
            process.kill()
    stopped_after = time.monotonic() - signalled
    # at once: seconds, not the minutes of retries and answers left (a loaded machine stretches the seconds)
    assert process.returncode != 0 and stopped_after < scaled(10), (process.returncode, stopped_after, err)
    # the process is gone: what the sandbox counted is all it will ever send
    assert sandbox.request_counts()["aggs_range"] == 2  # nothing sent after the signal, no retry
    for row in registry.get_many(symbols):
        assert row.backfill_status == "failed" and "interrupted" in row.backfill_error, row
    assert BarStore(url).summary(symbols) == {}  # nothing half-written
    assert "interrupted" in err and "Traceback" not in err


def test_two_first_runs_on_a_new_dagster_home_both_succeed(tmp_path, sandbox):
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    registry = SymbolRegistry(url)
    registry.add(["AAPL"], "stock", "2025-06-02")
    registry.add(["BTCUSD"], "crypto", "2025-06-02")
    # DAGSTER_HOME unset and a new project home: both processes create <home>/dagster at once
    env = cli_env(tmp_path, sandbox, None)
    processes = [
        subprocess.Popen([CLI, "run", symbol], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for symbol in ("AAPL", "BTCUSD")
    ]
    results = [(p.wait(timeout=scaled(180)), *p.communicate()) for p in processes]
    for code, out, err in results:
        assert code == 0, err
        assert "warehouse" not in err
    assert {r.backfill_status for r in registry.list()} == {"completed"}
    assert (tmp_path / "home" / "dagster" / "dagster.yaml").read_bytes() == PROJECT_YAML.read_bytes()
