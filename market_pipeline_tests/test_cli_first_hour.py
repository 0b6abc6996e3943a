"""The command line a newcomer meets first: `--help` and the read-only commands load neither Dagster,
the code location nor the HTTP client (their start-up is measured in `make bench`, not here);
`symbols list` shows each symbol's bars and date range, its status and a name cut at a word
boundary; `symbols add --verify` refuses a symbol tracked as another class with what Polygon says;
moving a tracked symbol's start date says what changed; a closed pipe ends a listing quietly."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from market_pipeline.reference.records import ReferenceRecord
from market_pipeline.warehouse import BarStore, SymbolRegistry, get_engine
from market_pipeline.warehouse.reference import ReferenceStore
from market_pipeline.warehouse.stats_table import replace_stats
from market_pipeline_tests.test_registry_cli import cli, snapshot
from market_pipeline_tests.test_warehouse import bars
from market_pipeline_tests.waiting import scaled

HEAVY = ("dagster", "dagster_webserver", "market_pipeline.defs", "market_pipeline.definitions", "requests")
LONG_NAME = "Berkshire Hathaway Inc. Class B common stock (synthetic sandbox data)"


@pytest.fixture
def warehouse(monkeypatch, warehouse_url):
    """Two tracked stocks with bars, their symbol_stats rows and reference data."""
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", warehouse_url)
    registry, store = SymbolRegistry(warehouse_url), BarStore(warehouse_url)
    registry.add(["AAPL", "BRK.B"], "stock", "2024-01-02")
    store.upsert_bars("AAPL", bars("2024-01-02", 20))
    registry.mark_completed("AAPL", "run-1", history_from=dt.date(2024, 1, 2))
    refs = ReferenceStore(warehouse_url)
    refs.save(ReferenceRecord("BRK.B", "stock", "ok", ticker="BRK.B", name=LONG_NAME, type="CS"))
    summary = store.summary(["AAPL"])["AAPL"]
    replace_stats(get_engine(warehouse_url), [{
        "symbol": "AAPL", "asset_class": "stock", "record_count": summary[0], "first_date": summary[1],
        "last_date": summary[2], "validation_rate": 1.0, "gaps_detected": 0, "backfill_status": "completed",
        "last_backfill": None, "computed_at": dt.datetime(2024, 2, 1),
    }])
    return warehouse_url


def loaded(argv: list[str], prefixes: tuple[str, ...]) -> str:
    """Run the CLI with `argv` in a fresh interpreter: 'exit-code [the modules it loaded under prefixes]'."""
    probe = (
        "import sys\n"
        "from market_pipeline.cli.main import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r} or m.startswith({prefixes!r}))\n"
        "print('LOADED', code, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=scaled(120))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["symbols", "list"], ["symbols", "list", "--json"], ["stats"], ["stats", "--json"],
     ["bars", "AAPL"], ["db", "current"]],
    ids=lambda argv: " ".join(argv),
)
def test_read_only_commands_load_no_dagster_code_location_or_http_client(warehouse, argv):
    assert loaded(argv, HEAVY) == "LOADED 0 []"


@pytest.mark.parametrize("argv", [["symbols", "list"], ["symbols", "list", "--json"], ["db", "current"]], ids=" ".join)
def test_listing_commands_load_neither_pandas_nor_the_migrations(warehouse, argv):
    """`symbols list` and `db current` read a few rows: SQLAlchemy is all they need (pandas, pyarrow,
    the calendars and Alembic with its migration modules cost about half a second more)."""
    assert loaded(argv, ("pandas", "pyarrow", "exchange_calendars", "alembic", "market_pipeline.warehouse.columns")) == "LOADED 0 []"


def test_symbols_list_shows_bars_status_and_names_cut_at_a_word(warehouse, capsys):
    code, out, _ = cli(capsys, "symbols", "list")
    assert code == 0
    header, aapl, brk = out.splitlines()
    assert header.split()[:7] == ["SYMBOL", "CLASS", "ACTIVE", "STATUS", "BARS", "FIRST", "LAST"]
    assert "BASIS" in header.split()
    assert aapl.split()[:7] == ["AAPL", "stock", "yes", "completed", "20", "2024-01-02", "2024-01-29"]
    assert brk.split()[:7] == ["BRK.B", "stock", "yes", "pending", "-", "-", "-"]  # no bars counted yet
    assert "Berkshire Hathaway Inc. Class…" in brk and "Class B" not in brk  # a whole word, then …
    rows = {r["symbol"]: r for r in json.loads(cli(capsys, "symbols", "list", "--json")[1])}
    assert (rows["AAPL"]["record_count"], rows["AAPL"]["first_date"], rows["AAPL"]["last_date"]) == (20, "2024-01-02", "2024-01-29")
    assert rows["BRK.B"]["record_count"] is None and rows["BRK.B"]["reference"]["name"] == LONG_NAME


def test_verify_refuses_a_symbol_tracked_as_another_class_with_polygons_answer(polygon_env, warehouse_url, capsys):
    SymbolRegistry(warehouse_url).add(["SPY"], "etf")
    before = snapshot(warehouse_url)
    code, _, err = cli(capsys, "symbols", "add", "SPY", "--asset-class", "stock", "--verify")
    errors = [line for line in err.splitlines() if line.startswith("market-pipeline: error")]
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(
        "market-pipeline: error: Polygon types SPY as an ETF (type ETF), not a stock: track it with --asset-class etf"
    ) and "already tracked as etf" in errors[0]
    assert snapshot(warehouse_url) == before
    code, _, err = cli(capsys, "symbols", "add", "SPY", "--asset-class", "stock")  # no --verify: the class rule
    assert code == 2 and "already tracked as etf" in err and snapshot(warehouse_url) == before


def test_moving_a_tracked_symbols_start_date_says_what_changed(warehouse, capsys):
    code, out, _ = cli(capsys, "symbols", "add", "AAPL", "BRK.B", "--asset-class", "stock", "--start-date", "2020-01-02")
    assert code == 0
    assert ("AAPL: updated: start date now 2020-01-02 (was 2024-01-02); its bars start on 2024-01-02, so its next "
            "run fetches its whole history again from 2020-01-02") in out
    assert "BRK.B: updated: start date now 2020-01-02 (was 2024-01-02)\n" in out  # nothing stored yet
    code, out, _ = cli(capsys, "symbols", "add", "AAPL", "--asset-class", "stock", "--start-date", "2024-01-10")
    assert "AAPL: updated: start date now 2024-01-10 (was 2020-01-02); the bars stored before 2024-01-10 are kept" in out
    code, out, _ = cli(capsys, "symbols", "add", "AAPL", "--asset-class", "stock")
    assert out.strip() == "AAPL: unchanged"
    assert SymbolRegistry(warehouse).get("AAPL").start_date == dt.date(2024, 1, 10)


def test_a_listing_piped_into_head_ends_quietly(warehouse):
    BarStore(warehouse).upsert_bars("AAPL", bars("2000-01-03", 5000))  # a listing longer than a pipe's buffer
    process = subprocess.Popen(
        [sys.executable, "-m", "market_pipeline.cli.main", "bars", "AAPL", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )
    process.stdout.read(10)
    process.stdout.close()  # `| head -c 10`
    err = process.stderr.read().decode()
    process.wait(timeout=scaled(60))
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_the_latest_session_from_the_kept_closes_is_the_calendars(tmp_path, monkeypatch):
    """`stats` answers freshness from the sessions' closes kept in the home's cache/ (the calendar
    takes a quarter of a second to build): the same latest completed session as the calendar's,
    across early closes, holidays and weekends; a damaged cache file is rebuilt."""
    from market_pipeline import calendars

    monkeypatch.setenv("MARKET_PIPELINE_HOME", str(tmp_path))
    calendars._xnys_closes.cache_clear()
    assert calendars._xnys_closes() is not None
    (kept,) = (tmp_path / "cache").glob("xnys-closes-*.npy")
    moments = [dt.datetime(2024, 11, 29, 17, 59, tzinfo=dt.timezone.utc),  # the day after Thanksgiving closes 13:00 New York
               dt.datetime(2024, 11, 29, 18, 1, tzinfo=dt.timezone.utc), dt.datetime(2025, 1, 9, 23, tzinfo=dt.timezone.utc),
               dt.datetime(2025, 1, 10, 20, 59, tzinfo=dt.timezone.utc), dt.datetime(2026, 7, 5, 12, tzinfo=dt.timezone.utc)]
    moments += [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=h) for h in range(0, 24 * 400, 13)]
    for damaged in (False, True):
        if damaged:
            kept.write_bytes(b"not an array")
        calendars._xnys_closes.cache_clear()
        for now in moments:
            calendars._latest_completed_xnys_session.cache_clear()
            assert calendars._latest_completed_xnys_session(now) == calendars._latest_from_calendar(now), now
    assert kept.read_bytes().startswith(b"\x93NUMPY")  # rebuilt
    calendars._xnys_closes.cache_clear()
    calendars._latest_completed_xnys_session.cache_clear()
