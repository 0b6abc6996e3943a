"""The symbol registry and the `market-pipeline symbols` / `stats` commands: every bad input is a
one-line error with exit code 2 that changes nothing; adds are idempotent; deactivating keeps bars."""

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from market_pipeline.cli.main import main
from market_pipeline.polygon.tickers import SymbolError
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.engine import get_engine
from market_pipeline_tests.test_warehouse import bars
from market_pipeline_tests.waiting import scaled


@pytest.fixture
def db(monkeypatch, any_warehouse_url):
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", any_warehouse_url)
    return any_warehouse_url


def snapshot(url):
    with get_engine(url).connect() as conn:
        return conn.execute(sa.text("SELECT * FROM tracked_symbols ORDER BY symbol")).all()


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_idempotent_and_reactivate(db, capsys):
    assert cli(capsys, "symbols", "add", "aapl", "brk.b", "--asset-class", "stock")[0] == 0
    assert cli(capsys, "symbols", "add", "btc-usd", "X:ETHUSD", "--asset-class", "crypto", "--start-date", "2024-01-01")[0] == 0
    code, out, _ = cli(capsys, "symbols", "add", "AAPL", "--asset-class", "stock")
    assert code == 0 and "AAPL: unchanged" in out
    registry = SymbolRegistry(db)
    assert registry.active_symbols() == [("AAPL", "stock"), ("BRK.B", "stock"), ("BTCUSD", "crypto"), ("ETHUSD", "crypto")]
    assert registry.get("BTCUSD").start_date.isoformat() == "2024-01-01"
    assert all(r.backfill_status == "pending" for r in registry.list())

    assert cli(capsys, "symbols", "deactivate", "aapl")[0] == 0
    code, out, _ = cli(capsys, "symbols", "list", "--json")
    assert [r["symbol"] for r in json.loads(out)] == ["BRK.B", "BTCUSD", "ETHUSD"]
    code, out, _ = cli(capsys, "symbols", "list", "--all", "--json")
    assert {r["symbol"]: r["active"] for r in json.loads(out)}["AAPL"] is False
    code, out, _ = cli(capsys, "symbols", "add", "AAPL", "--asset-class", "stock")
    assert "AAPL: reactivated" in out and registry.get("AAPL").active


def test_empty_registry_is_normal(db, capsys):
    assert SymbolRegistry(db).active_symbols() == []
    code, out, _ = cli(capsys, "symbols", "list")
    assert code == 0 and "No symbols tracked" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["symbols", "add", "AAPL", "--asset-class", "bond"], "unknown asset class"),
        (["symbols", "add", "AAPL;DROP TABLE tracked_symbols", "--asset-class", "stock"], "invalid stock symbol"),
        (["symbols", "add", "MSFT", "AAPL'--", "--asset-class", "stock"], "invalid stock symbol"),
        (["symbols", "add", "BTC", "--asset-class", "crypto"], "invalid crypto symbol"),
        (["symbols", "add", "MSFT", "--asset-class", "stock", "--start-date", "2999-01-01"], "future"),
        (["symbols", "add", "MSFT", "--asset-class", "stock", "--start-date", "yesterday"], "YYYY-MM-DD"),
        (["symbols", "add", "MSFT"], "--asset-class"),
        (["symbols", "deactivate", "NOPE"], "not tracked"),
        (["stats", "NOPE"], "not tracked"),
        (["symbols", "add", "SPY", "--asset-class", "crypto"], "invalid crypto symbol"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(db, capsys, argv, needle):
    SymbolRegistry(db).add(["SPY"], "etf")
    before = snapshot(db)
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert snapshot(db) == before


def test_asset_class_cannot_change(db):
    registry = SymbolRegistry(db)
    registry.add(["BTCUSD"], "stock")
    with pytest.raises(SymbolError, match="already tracked as stock"):
        registry.add(["ETHUSD", "BTC-USD"], "crypto")
    assert registry.get("ETHUSD") is None


def test_deactivate_keeps_bars(db, capsys):
    SymbolRegistry(db).add(["QQQ"], "etf")
    BarStore(db).upsert_bars("QQQ", bars("2024-01-02", 5))
    assert cli(capsys, "symbols", "deactivate", "QQQ")[0] == 0
    assert BarStore(db).summary(["QQQ"])["QQQ"][0] == 5
    code, out, _ = cli(capsys, "stats", "QQQ", "--json")
    assert json.loads(out)["QQQ"]["record_count"] == 5


def test_console_script_exit_code(db):
    """The installed `market-pipeline` entry point, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "market_pipeline.cli.main", "symbols", "add", "A$B", "--asset-class", "stock"],
        capture_output=True, text=True, timeout=scaled(60),
    )
    assert done.returncode == 2
    assert done.stderr.startswith("market-pipeline: error: invalid stock symbol")


def test_verify_refuses_unknown_tickers_before_any_backfill(polygon_env, db, capsys):
    code, _, err = cli(capsys, "symbols", "add", "APPL", "--asset-class", "stock", "--verify")
    assert code == 2 and "Polygon does not know APPL" in err
    assert SymbolRegistry(db).get("APPL") is None
    assert cli(capsys, "symbols", "add", "AAPL", "--asset-class", "stock", "--verify")[0] == 0
    assert cli(capsys, "symbols", "add", "BTC-USD", "--asset-class", "crypto", "--verify")[0] == 0
    assert polygon_env.request_counts()["ticker_detail"] == 3
    assert polygon_env.request_counts()["aggs_range"] == 0


def test_unreachable_warehouse_is_one_line_exit_1(monkeypatch, capsys):
    from market_pipeline_tests.test_sandbox_cli import free_port

    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/warehouse")
    code, out, err = cli(capsys, "symbols", "list")
    assert code == 1
    assert err.startswith("market-pipeline: error: cannot reach the warehouse") and len(err.strip().splitlines()) == 1
