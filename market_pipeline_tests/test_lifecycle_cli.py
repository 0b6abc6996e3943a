"""`symbols add --verify` against the sandbox's reference data, `symbols show`, `symbols list` and
`symbols rename` (FB -> META with every bar kept; a reused ticker refused), on SQLite and PostgreSQL."""

import datetime as dt
import json

import pytest

from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.reference import ReferenceStore
from market_pipeline_tests.test_registry_cli import cli, snapshot
from market_pipeline_tests.test_warehouse import bars


@pytest.fixture
def warehouse_url(any_warehouse_url):
    return any_warehouse_url


def errors(err):
    return [line for line in err.splitlines() if line.startswith("market-pipeline: error")]


def test_verify_refuses_spy_as_a_stock_naming_what_polygon_says(polygon_env, warehouse_url, capsys):
    before = snapshot(warehouse_url)
    code, out, err = cli(capsys, "symbols", "add", "SPY", "--asset-class", "stock", "--verify")
    assert code == 2 and len(errors(err)) == 1
    assert "SPY" in err and "ETF" in err and "--asset-class etf" in err
    assert snapshot(warehouse_url) == before
    code, out, err = cli(capsys, "symbols", "add", "AAPL", "--asset-class", "etf", "--verify")
    assert code == 2 and "common stock" in err
    polygon_env.delist("X:DOGEUSD", "2024-01-01")
    polygon_env.add_to_universe(["DOGEUSD"], market="crypto")
    code, out, err = cli(capsys, "symbols", "add", "DOGEUSD", "--asset-class", "crypto", "--verify")
    assert code == 2 and "inactive" in err
    assert snapshot(warehouse_url) == before
    # accepted: the answer is stored as the symbol's reference (no second request on its first run)
    assert cli(capsys, "symbols", "add", "SPY", "--asset-class", "etf", "--verify")[0] == 0
    code, out, _ = cli(capsys, "symbols", "show", "SPY", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["reference"]["type"] == "ETF" and shown["reference"]["status"] == "ok"
    assert len(shown["reference"]["composite_figi"]) == 12 and shown["reference"]["list_date"]
    code, out, _ = cli(capsys, "symbols", "list", "--json")
    (row,) = json.loads(out)
    assert row["symbol"] == "SPY" and row["reference"]["type"] == "ETF" and row["status"] == "pending"


def test_rename_fb_to_meta_keeps_every_bar_and_refuses_a_reused_ticker(polygon_env, warehouse_url, capsys):
    code, _, err = cli(capsys, "symbols", "add", "FB", "--asset-class", "stock", "--start-date", "2022-01-03", "--verify")
    assert code == 0, err
    refs = ReferenceStore(warehouse_url)
    fb = refs.get("FB").record
    assert fb.status == "renamed" and fb.renamed_to == "META" and "symbols rename FB META" in fb.status_text
    store = BarStore(warehouse_url)
    store.upsert_bars("FB", bars("2022-01-03", 110))
    before = store.read_bars("FB")
    code, out, _ = cli(capsys, "symbols", "list")
    assert code == 0 and "FB" in out and "renamed" in out and "META" in out

    code, out, err = cli(capsys, "symbols", "rename", "FB", "META")
    assert code == 0, err
    assert "110 bar(s) moved" in out
    assert store.read_bars("META").equals(before) and store.read_bars("FB").empty
    registry = SymbolRegistry(warehouse_url)
    assert registry.get("FB") is None and registry.get("META").start_date == dt.date(2022, 1, 3)
    assert refs.aliases() == {"FB": "META"}
    assert json.loads(cli(capsys, "symbols", "show", "META", "--json")[1])["previous_symbols"] == ["FB"]

    # RUSE is another security (another composite FIGI): never merged, nothing changed
    state = snapshot(warehouse_url)
    code, out, err = cli(capsys, "symbols", "rename", "META", "RUSE")
    assert code == 2 and "reused ticker" in err and len(errors(err)) == 1
    assert snapshot(warehouse_url) == state and store.read_bars("META").equals(before)
    code, _, err = cli(capsys, "symbols", "rename", "NOPE", "META")
    assert code == 2 and "not tracked" in err
    code, _, err = cli(capsys, "symbols", "rename", "META", "NOPEX")  # a ticker Polygon does not know
    assert code == 2 and "Polygon does not know NOPEX" in err and snapshot(warehouse_url) == state
    code, _, err = cli(capsys, "stats", "FB")
    assert code == 2 and "FB was renamed to META: use META" in err
