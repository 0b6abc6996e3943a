"""The command line as documentation: every argument explains itself and shows its default, `db` names
its subcommands, and the read-only commands work on a warehouse the user may only read."""

from __future__ import annotations

import argparse
import json

import pytest
import sqlalchemy as sa

from market_pipeline.cli.main import build_parser, main
from market_pipeline.warehouse import SymbolRegistry
from market_pipeline.warehouse.engine import dispose_engine


def _parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_every_argument_has_help_and_shows_its_default():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = " ".join(path) + " " + (action.option_strings[0] if action.option_strings else action.dest)
            assert action.help, f"{name} has no help text"
            if action.default not in (None, False) and not action.required:
                assert str(action.default) in parser.format_help(), f"{name} does not show its default"


def test_db_lists_its_subcommands(capsys):
    assert main(["db"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "{upgrade,current}" in err
    with pytest.raises(SystemExit):
        main(["db", "--help"])
    out = capsys.readouterr().out
    assert "upgrade" in out and "current" in out


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_read_only_commands_work_on_a_read_only_warehouse(engine, tmp_path, monkeypatch, capsys, request):
    if engine == "sqlite":
        path = tmp_path / "warehouse.sqlite"
        writable = f"sqlite:///{path}"
        read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    else:
        writable = request.getfixturevalue("postgres_url")
        dbname = writable.rsplit("/", 1)[1]
        with sa.create_engine(writable).begin() as conn:
            conn.execute(sa.text(f"CREATE ROLE reader_{dbname} LOGIN"))
        read_only = sa.engine.make_url(writable).set(username=f"reader_{dbname}").render_as_string(hide_password=False)
    SymbolRegistry(writable).add(["AAPL", "MSFT"], "stock", "2024-01-02")
    if engine == "postgres":
        with sa.create_engine(writable).begin() as conn:
            conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader_{dbname}"))
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", read_only)
    try:
        assert main(["symbols", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert {row["symbol"] for row in listed} == {"AAPL", "MSFT"}
        assert main(["stats", "--json"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert set(stats) == {"AAPL", "MSFT"}
        assert main(["db", "current"]) == 0
        assert "up to date" in capsys.readouterr().out
        # a write is refused by the database, with one line and no change
        assert main(["symbols", "add", "NVDA", "--asset-class", "stock"]) != 0
        assert "NVDA" not in {row.symbol for row in SymbolRegistry(writable).list(include_inactive=True)}
    finally:
        dispose_engine(read_only)
