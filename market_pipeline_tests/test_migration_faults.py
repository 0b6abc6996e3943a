"""A first upgrade killed anywhere leaves nothing or a whole schema, and every command works after it;
a warehouse half-made by an older, non-transactional version is recognised and repaired; tables that
are not ours, and a file that is not a database, are refused naming the real cause."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from market_pipeline.cli.main import main
from market_pipeline.warehouse.engine import dispose_engine, first_revision_schema, head_revision
from market_pipeline_tests.waiting import scaled

HEAD_TABLES = None  # filled from a complete upgrade by `head_tables`


def head_tables(tmp_path: Path) -> set[str]:
    global HEAD_TABLES
    if HEAD_TABLES is None:
        url = f"sqlite:///{tmp_path / 'complete.sqlite'}"
        from market_pipeline.warehouse.engine import get_engine

        HEAD_TABLES = set(sa.inspect(get_engine(url)).get_table_names())
        dispose_engine(url)
    return HEAD_TABLES


def tables_of(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def revision_of(path: Path) -> str | None:
    with sqlite3.connect(path) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None
    return row[0] if row else None


def killer(folder: Path, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "market_pipeline_tests.migration_killer", str(folder), *args],
        capture_output=True, text=True, timeout=scaled(300), check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def every_command_works(capsys, monkeypatch, url: str) -> None:
    """The commands that use the warehouse, as a user would try them after the kill."""
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
    try:
        code, out, err = cli(capsys, "db", "current")
        assert code == 0, err
        assert cli(capsys, "symbols", "add", "AAPL", "MSFT", "--asset-class", "stock", "--start-date", "2025-06-02")[0] == 0
        code, out, err = cli(capsys, "symbols", "list", "--json")
        assert code == 0 and [row["symbol"] for row in json.loads(out)] == ["AAPL", "MSFT"], err
        assert cli(capsys, "symbols", "deactivate", "MSFT")[0] == 0
        assert cli(capsys, "symbols", "activate", "MSFT")[0] == 0
        code, out, err = cli(capsys, "stats", "--json")
        assert code == 0 and set(json.loads(out)) == {"AAPL", "MSFT"}, err
        code, _, err = cli(capsys, "bars", "AAPL")
        assert code == 2 and "no stored bars for AAPL" in err  # a clear answer: nothing fetched yet
        assert cli(capsys, "db", "upgrade")[0] == 0
        code, out, _ = cli(capsys, "db", "current")
        assert code == 0 and "up to date" in out
    finally:
        dispose_engine(url)


def test_a_first_upgrade_killed_at_every_statement_leaves_nothing_or_the_whole_schema(tmp_path, capsys, monkeypatch):
    # every one of the first 20 statements (the first revision's among them), then every second, then the commit
    sweep = killer(tmp_path, "sweep", "20", "2")
    outcomes, points = sweep["outcomes"], list(sweep["outcomes"])
    assert sweep["statements"] > 30 and len(points) > 25 and points[-1] == "commit"
    assert set(outcomes.values()) == {"killed"}, outcomes
    complete = head_tables(tmp_path)
    for point in points:
        path = tmp_path / f"killed-{point}.sqlite"
        tables = tables_of(path) if path.exists() else set()
        # all or nothing: no table at all (not even alembic_version), or every table at head
        assert tables in (set(), complete), (point, sorted(tables))
        assert revision_of(path) == (head_revision() if tables else None), point
        code, out, _ = cli_with(capsys, monkeypatch, path, "db", "current")
        assert code == 0 and "half-made" not in out
        every_command_works(capsys, monkeypatch, f"sqlite:///{path}")


def test_the_main_job_runs_on_a_warehouse_whose_first_upgrade_was_killed(tmp_path, capsys, monkeypatch, sandbox):
    from market_pipeline.sandbox import SANDBOX_API_KEY

    killer(tmp_path, "kill", "9")  # inside the first revision's CREATE TABLEs
    url = f"sqlite:///{tmp_path / 'killed-9.sqlite'}"
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_bytes((Path(__file__).parents[1] / "dagster.yaml").read_bytes())
    for name, value in {
        "MARKET_PIPELINE_DB_URL": url, "DAGSTER_HOME": str(home), "POLYGON_API_KEY": SANDBOX_API_KEY,
        "POLYGON_BASE_URL": sandbox.url, "POLYGON_REQUESTS_PER_MINUTE": "0",
    }.items():
        monkeypatch.setenv(name, value)
    try:
        assert cli(capsys, "symbols", "add", "SPY", "--asset-class", "etf", "--start-date", "2025-06-02")[0] == 0
        code, out, err = cli(capsys, "run")
        assert code == 0, out + err
        assert "1 of 1 symbol(s) completed" in out
    finally:
        dispose_engine(url)


# ---- warehouses an older version left half-made ---------------------------------------------------
def old_version_statements(tmp_path: Path) -> list[str]:
    """The DDL an upgrade sends up to its first revision's version row: what an older version ran
    without a transaction, each statement committed on its own."""
    sent: list[str] = []
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    sa.event.listen(engine, "before_cursor_execute", lambda c, cur, statement, *a: sent.append(statement))
    from market_pipeline.warehouse.engine import upgrade

    upgrade(engine)
    engine.dispose()
    ddl = []
    for statement in sent:
        if statement.lstrip().upper().startswith("INSERT INTO ALEMBIC_VERSION"):
            break
        if statement.lstrip().upper().startswith("CREATE"):
            ddl.append(statement)
    return ddl


def test_every_half_made_warehouse_of_an_older_version_is_repaired(tmp_path, capsys, monkeypatch):
    ddl = old_version_statements(tmp_path)
    assert ddl[0].lstrip().startswith("CREATE TABLE alembic_version") and len(ddl) == 5
    for done in range(1, len(ddl) + 1):  # killed after the first `done` statements
        path = tmp_path / f"old-{done}.sqlite"
        with sqlite3.connect(path, isolation_level=None) as conn:
            for statement in ddl[:done]:
                conn.execute(statement)
        if done > 1:
            code, out, _ = cli_with(capsys, monkeypatch, path, "db", "current")
            assert code == 0 and "half-made by an interrupted first upgrade" in out and "db upgrade` repairs it" in out
        every_command_works(capsys, monkeypatch, f"sqlite:///{path}")
        assert tables_of(path) == head_tables(tmp_path)


def cli_with(capsys, monkeypatch, path: Path, *argv: str):
    url = f"sqlite:///{path}"
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
    try:
        return cli(capsys, *argv)
    finally:
        dispose_engine(url)


def test_tables_that_are_not_ours_are_refused_naming_them_and_nothing_changes(tmp_path, capsys, monkeypatch):
    assert set(first_revision_schema()) == {"tracked_symbols", "ohlcv_daily", "symbol_stats"}
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE tracked_symbols (symbol TEXT PRIMARY KEY, note TEXT)")
    code, _, err = cli_with(capsys, monkeypatch, other, "symbols", "list")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "has a table tracked_symbols but no schema revision recorded" in err and "not made by market_pipeline" in err
    assert tables_of(other) == {"tracked_symbols"}  # nothing created, nothing dropped

    filled = tmp_path / "filled.sqlite"
    ddl = old_version_statements(tmp_path)
    with sqlite3.connect(filled, isolation_level=None) as conn:
        for statement in ddl:
            conn.execute(statement)
        conn.execute("INSERT INTO ohlcv_daily VALUES ('AAPL', '2025-01-02', 1, 1, 1, 1, 1, NULL, NULL, '2025-01-03')")
    code, _, err = cli_with(capsys, monkeypatch, filled, "symbols", "list")
    assert code == 1 and "has a table ohlcv_daily with 1 row(s) but no schema revision recorded" in err
    with sqlite3.connect(filled) as conn:
        assert conn.execute("SELECT count(*) FROM ohlcv_daily").fetchone() == (1,)


def test_a_file_that_is_not_a_database_is_named_as_such(tmp_path, capsys, monkeypatch):
    path = tmp_path / "warehouse.sqlite"
    path.write_bytes(b"these are not the bytes of a SQLite database\n" * 100)
    code, _, err = cli_with(capsys, monkeypatch, path, "symbols", "list")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "the warehouse's file is not a SQLite database" in err and "cannot reach" not in err


@pytest.mark.parametrize("url_kind", ["sqlite", "postgres"])
def test_a_complete_upgrade_is_one_transaction_that_a_failure_rolls_back(url_kind, tmp_path, request):
    """The whole chain fails at its very last statement (recording the head revision): the schema is
    as it was before, on both databases."""
    from market_pipeline.warehouse import engine as engines

    url = f"sqlite:///{tmp_path / 'w.sqlite'}" if url_kind == "sqlite" else request.getfixturevalue("postgres_url")
    engine = engines.open_engine(url)

    def fail_at_the_head(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE alembic_version") and head_revision() in f"{statement} {parameters}":
            raise RuntimeError("the last statement of the upgrade fails")

    sa.event.listen(engine, "before_cursor_execute", fail_at_the_head)
    try:
        with pytest.raises(RuntimeError, match="the last statement of the upgrade fails"):
            engines.upgrade(engine)
        sa.event.remove(engine, "before_cursor_execute", fail_at_the_head)
        assert engines.current_revision(engine) is None
        assert set(sa.inspect(engine).get_table_names()) - {"alembic_version"} == set()
    finally:
        dispose_engine(url)
