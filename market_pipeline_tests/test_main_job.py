"""The main job end to end: `market-pipeline run` against a given server and against the built-in
sandbox, `make run` from a fresh clone, and `dagster definitions validate`."""

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance

from market_pipeline import calendars, settings
from market_pipeline.cli.main import main
from market_pipeline.devtools.runner import DEMO_CORRECTED, DEMO_CORRECTION, DEMO_SYMBOLS
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline_tests.dagster_helpers import check_passed, latest_check_records, served
from market_pipeline_tests.waiting import scaled

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKET_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    yield tmp_path / "home"
    os.environ.pop("DAGSTER_HOME", None)  # ensure_dagster_home exported it


def test_run_stores_exactly_what_the_server_sends(polygon_env, fresh_home, warehouse_url, capsys):
    registry = SymbolRegistry(warehouse_url)
    registry.add(["AAPL", "BRK.B"], "stock", "2023-06-01")
    registry.add(["BTC-USD"], "crypto", "2023-06-01")
    registry.add(["QQQ"], "etf", "2023-06-01")
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" not in out and "4 of 4 symbol(s) completed" in out
    store = BarStore(warehouse_url)
    for symbol, asset_class in (("AAPL", "stock"), ("BRK.B", "stock"), ("BTCUSD", "crypto"), ("QQQ", "etf")):
        expected = served(symbol, asset_class, dt.date(2023, 6, 1))
        stored = store.read_bars(symbol)
        assert [d.date() for d in stored["date"]] == [d.date() for d in expected["date"]], symbol
        assert stored["open"].tolist() == expected["o"].tolist()
        assert stored["vwap"].tolist() == expected["vw"].tolist()
    assert polygon_env.request_counts()["aggs_range"] == 4  # one request per symbol for its whole history
    instance = DagsterInstance.get()
    for name in ("validation_rate", "date_gaps"):
        records = latest_check_records(instance, name)
        assert set(records) == {"AAPL", "BRK.B", "BTCUSD", "QQQ"} and all(map(check_passed, records.values()))

    assert main(["run", "aapl"]) == 0  # a chosen symbol; the re-fetch window only
    assert "1 of 1 symbol(s) completed" in capsys.readouterr().out
    assert polygon_env.request_counts()["aggs_range"] == 5

    assert main(["stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["BTCUSD"]["record_count"] == len(store.read_bars("BTCUSD"))
    assert set(stats["AAPL"]) == {"record_count", "date_range", "validation_rate", "gaps_detected", "asset_class", "status", "freshness", "checks"}
    assert stats["AAPL"]["validation_rate"] == 1.0 and stats["AAPL"]["gaps_detected"] == 0


def test_run_reports_failures_with_exit_code_1(polygon_env, fresh_home, warehouse_url, capsys):
    SymbolRegistry(warehouse_url).add(["AAPL"], "stock", "2000-01-03")
    polygon_env.history_limit_days = 365
    assert main(["run"]) == 1
    out = capsys.readouterr().out
    assert "AAPL" in out and "failed" in out and "NOT_AUTHORIZED" in out


def test_run_without_key_uses_the_sandbox_and_demo_set(fresh_home, capsys, monkeypatch):
    monkeypatch.delenv("MARKET_PIPELINE_DB_URL", raising=False)
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "demo set" in out
    store = BarStore(settings.db_url())
    summary = store.summary()
    demo = [s for group in DEMO_SYMBOLS.values() for s in group]
    assert sorted(summary) == sorted(demo) and all(n > 400 for n, _, _ in summary.values())
    assert str(fresh_home) in settings.db_url()
    assert "POLYGON_API_KEY" not in os.environ  # the sandbox's key does not leak into the caller
    # the demo's late correction: AAPL's last two sessions re-served higher, refreshed, the old values kept
    said = [line.strip() for line in out.splitlines() if line.startswith(("Late correction", "  What changed", "  As first stored"))]
    assert len(said) == 3 and said[0].startswith(f"Late correction (sandbox): {DEMO_CORRECTED}'s bars of "), out
    assert said[1] == f"What changed: market-pipeline revisions {DEMO_CORRECTED}"
    as_of = said[2].split("--as-of ")[1]
    now = store.read_bars(DEMO_CORRECTED)
    assert main(["revisions", DEMO_CORRECTED, "--json"]) == 0
    revised = json.loads(capsys.readouterr().out)["bars"]
    assert [r["date"] for r in revised] == [d.date().isoformat() for d in now["date"].iloc[-2:]]
    for r in revised:
        assert r["new"]["close"] == pytest.approx(r["old"]["close"] * DEMO_CORRECTION)
    assert main(["bars", DEMO_CORRECTED, "--as-of", as_of, "--json"]) == 0
    then = json.loads(capsys.readouterr().out)
    closes = [b["close"] for b in (then["bars"] if isinstance(then, dict) else then)]
    assert len(closes) == len(now)
    assert closes[-2:] == [r["old"]["close"] for r in revised] and closes[:-2] == now["close"].iloc[:-2].tolist()
    # a later run (a new sandbox) is an ordinary refresh: the corrected bars stay corrected
    assert main(["run"]) == 0
    assert "Late correction" not in capsys.readouterr().out
    assert main(["revisions", DEMO_CORRECTED, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["bars"]) == 2
    assert store.read_bars(DEMO_CORRECTED)["close"].tolist() == now["close"].tolist()


@pytest.mark.slow
def test_make_run_from_a_fresh_clone(tmp_path):
    if shutil.which("git") is None or shutil.which("make") is None or not (PROJECT / ".git").exists():
        pytest.skip("needs git, make and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT), str(clone)], check=True, timeout=scaled(120))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKET_PIPELINE_", "POLYGON_", "DAGSTER_HOME"))}
    env["PYTHONPATH"] = str(clone)  # the clone's code, with this suite's installed dependencies
    venv = VENV_BIN.parent
    before = dt.datetime.now(dt.timezone.utc)  # the run reads the clock itself: bracket it
    done = subprocess.run(
        ["make", "-o", f"{venv}/.installed-market-pipeline", "run", f"VENV={venv}"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=scaled(600),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 of 5 symbol(s) completed" in done.stdout
    with sqlite3.connect(clone / ".market_pipeline" / "data" / "warehouse.sqlite") as conn:
        rows = dict(conn.execute("SELECT symbol, count(*) FROM ohlcv_daily GROUP BY symbol").fetchall())
        dates = dict(conn.execute("SELECT symbol, max(date) FROM ohlcv_daily GROUP BY symbol").fetchall())
    after = dt.datetime.now(dt.timezone.utc)
    assert set(rows) == {"AAPL", "MSFT", "SPY", "BTCUSD", "ETHUSD"}
    # each asset class ends at its own market's latest completed session (XNYS for stocks and ETFs, the UTC
    # day for crypto), whatever the hour: between the stock close and midnight UTC the stocks' session of
    # the day is complete while crypto's day is not
    classes = {"AAPL": "stock", "MSFT": "stock", "SPY": "etf", "BTCUSD": "crypto", "ETHUSD": "crypto"}
    for symbol, asset_class in classes.items():
        low = calendars.latest_completed_session(asset_class, before)
        high = calendars.latest_completed_session(asset_class, after)
        assert low <= dt.date.fromisoformat(dates[symbol]) <= high, (symbol, dates[symbol], low, high)


@pytest.mark.slow
def test_dg_check_and_list_defs_without_an_api_key(tmp_path):
    """`dg check defs` and `dg list defs` (what `make validate` runs) load the defs folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYGON_", "MASSIVE_"))}
    env.update(DAGSTER_HOME=str(tmp_path), COLUMNS="250")
    listed = subprocess.run(
        [str(VENV_BIN / "dg"), "list", "defs", "--json"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=scaled(300)
    )
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    assert {"ohlcv_daily", "symbol_stats", "tracked_symbols"} <= {a["asset_key"] for a in defs["assets"]}
    assert {"validation_rate", "date_gaps"} <= {c["name"] for c in defs["asset_checks"]}
    assert {"stocks_daily_refresh", "crypto_daily_refresh"} <= {s["name"] for s in defs["schedules"]}
    assert "tracked_symbols_sensor" in {s["name"] for s in defs["sensors"]}
    # `make validate` itself (`dg check defs`, then `dg list defs`), from a shell without DAGSTER_HOME
    # (the project's dagster.yaml needs one)
    env.pop("DAGSTER_HOME")
    made = subprocess.run(
        ["make", "validate", f"VENV={VENV_BIN.parent}"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=scaled(300)
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "All definitions loaded successfully" in made.stdout and "ohlcv_daily" in made.stdout, made.stdout


def test_run_refreshes_many_symbols_with_one_grouped_request_per_date(polygon_env, instance, warehouse_url):
    """`market-pipeline run` over more symbols than a UI backfill puts in a run (100) still refreshes
    them in ONE in-process run, so each market's grouped-daily requests are made once: (missed sessions
    + re-fetch window) per market, whatever the number of symbols, as the schedules do."""
    from market_pipeline.devtools import runner
    from market_pipeline.refresh.planning import target_session
    from market_pipeline_tests.test_schedules import seed

    now = dt.datetime.now(dt.timezone.utc)
    targets = {"stock": target_session("stocks", now), "crypto": target_session("crypto", now)}
    symbols = {f"R{i // 26 % 26 + 65:c}{i % 26 + 65:c}": "stock" for i in range(120)}
    symbols.update({f"C{i // 26 % 26 + 65:c}{i % 26 + 65:c}USD": "crypto" for i in range(30)})
    polygon_env.add_to_universe([s for s, c in symbols.items() if c == "stock"])
    polygon_env.add_to_universe([s for s, c in symbols.items() if c == "crypto"], market="crypto")
    # history complete up to one session before each market's target (written as earlier runs would)
    for asset_class in ("stock", "crypto"):
        group = {s: c for s, c in symbols.items() if c == asset_class}
        seed(warehouse_url, instance, group, missed=1, history_start=targets[asset_class] - dt.timedelta(days=40),
             target=targets[asset_class])
    polygon_env.reset_counts()
    outcome = runner.materialize_symbols(instance, list(symbols))
    assert outcome.ok and len(outcome.run_ids) == 1
    counts = polygon_env.request_counts()
    assert counts["grouped_stocks"] == 1 + 3 and counts["grouped_crypto"] == 1 + 3  # missed + default window
    assert counts["aggs_range"] == 0  # no range request
    # and the corporate-action lists of the 120 stocks, read first: batches of 100 tickers per list
    assert counts["splits"] == 2 and counts["dividends"] == 2 and counts["total"] == 8 + 4
    summary = BarStore(warehouse_url).summary()
    assert {summary[s][2] for s, c in symbols.items() if c == "stock"} == {targets["stock"]}
    assert {summary[s][2] for s, c in symbols.items() if c == "crypto"} == {targets["crypto"]}


def test_a_run_started_with_sigint_ignored_can_still_be_stopped_with_sigterm(polygon_env, instance, warehouse_url):
    """A shell's background job (`nohup market-pipeline run &`, a cron script) starts with SIGINT
    ignored. Dagster's in-process run ends by giving SIGTERM SIGINT's handler, which would leave
    SIGTERM ignored too: `kill PID` could not stop the next run (the stats job, the next span). The
    runs of the CLI put SIGTERM's handler back."""
    import signal

    from market_pipeline.devtools import runner

    SymbolRegistry(warehouse_url).add(["AAPL"], "stock", "2024-01-02")
    runner.reconcile_partitions(instance, SymbolRegistry(warehouse_url))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert runner.materialize_symbols(instance, ["AAPL"]).ok
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert runner.materialize_stats(instance)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
