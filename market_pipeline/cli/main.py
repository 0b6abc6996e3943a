"""`market-pipeline`: manage tracked symbols, run the main job headless, serve the sandbox, print stats.

Exit codes: 0 success; 1 a run or symbol failed; 2 bad input (nothing was changed); 3 a check failed
(`run --fail-on-check`).
Every command works from the project folder without DAGSTER_HOME set (it then uses the project's
git-ignored home folder, as `make` does) and honours DAGSTER_HOME and MARKET_PIPELINE_DB_URL.

Start-up stays light: this module imports only the standard library and the settings; each command
imports what it uses when it runs (Dagster and the code location only for `run` and `daemon`, which
run them), so `--help` and the read-only commands answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from market_pipeline import settings
from market_pipeline.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows `(default: X)` for every option that has a value by default (flags and unset options say
    what happens without them in their own help)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.required or action.default in (None, False, argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """One-line errors (exit 2), and every option's default shown in its help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, exit 2, like every other input error
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _subcommands(parser: argparse.ArgumentParser, dest: str, title: str):
    return parser.add_subparsers(dest=dest, required=True, parser_class=_Parser, title=title)


def _name_subcommands(parser: argparse.ArgumentParser) -> None:
    """Missing or unknown subcommands are reported with the list of them (`db` -> {upgrade,current})."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.metavar = "{" + ",".join(action.choices) + "}"
            for child in action.choices.values():
                _name_subcommands(child)


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port: use 1-65535, or 0 for any free port (e.g. --port 8765)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="market-pipeline", description=__doc__.splitlines()[0])
    sub = _subcommands(parser, "command", "commands")

    symbols = sub.add_parser("symbols", help="add, list, activate and deactivate tracked symbols")
    ssub = _subcommands(symbols, "action", "actions")
    add = ssub.add_parser("add", help="track symbols (idempotent; reactivates inactive ones)")
    add.add_argument("symbols", nargs="+", metavar="SYMBOL", help="tickers such as AAPL, BRK.B or BTCUSD (BTC-USD, X:BTCUSD)")
    add.add_argument("--asset-class", required=True, help="asset class of every SYMBOL: stock, etf or crypto")
    add.add_argument("--start-date", default=None, help="first date of history to fetch, YYYY-MM-DD (default: two years back)")
    add.add_argument("--verify", action="store_true", help="ask Polygon's reference endpoint first: refuse unknown tickers, asset-class mismatches and inactive pairs")
    lst = ssub.add_parser("list", help="list tracked symbols with their backfill status")
    lst.add_argument("--all", action="store_true", help="include inactive symbols")
    lst.add_argument("--json", action="store_true", help="print JSON")
    show = ssub.add_parser("show", help="one symbol with Polygon's reference data (name, type, FIGI, listing, delisting)")
    show.add_argument("symbol", metavar="SYMBOL", help="a tracked symbol")
    show.add_argument("--json", action="store_true", help="print JSON")
    ren = ssub.add_parser("rename", help="move a renamed symbol's history to its new ticker (same security only)")
    ren.add_argument("old", metavar="OLD", help="the tracked symbol's old ticker, e.g. FB")
    ren.add_argument("new", metavar="NEW", help="the ticker the same security trades under now, e.g. META")
    for name, text in (("deactivate", "stop tracking (bars are kept)"), ("activate", "track again (the sensor backfills it)")):
        p = ssub.add_parser(name, help=text)
        p.add_argument("symbols", nargs="+", metavar="SYMBOL", help="tracked symbols")

    run = sub.add_parser("run", help="the main job: fetch and store bars for symbols (default: all active)")
    run.add_argument("symbols", nargs="*", metavar="SYMBOL", help="tracked symbols to run (none: every active symbol)")
    run.add_argument("--verbose", action="store_true", help="also print Dagster's events and stack traces on stderr")
    from market_pipeline.cli.checks import add_fail_on_check

    add_fail_on_check(run)

    sandbox = sub.add_parser("sandbox", help="run the Polygon-compatible sandbox server in the foreground")
    sandbox.add_argument("--port", type=_port, default=8765, help="port to listen on, 1-65535 (0: any free port)")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sandbox.add_argument("--rate-limit", type=int, default=None, help="requests per minute before 429s (default: no limit)")
    sandbox.add_argument(
        "--latency-ms", type=float, default=0.0,
        help="milliseconds added to every answer, to measure at the real API's 100-300 ms",
    )

    stats = sub.add_parser("stats", help="per-symbol record count, date range, validation rate and gaps")
    stats.add_argument("symbols", nargs="*", metavar="SYMBOL", help="tracked symbols (none: every tracked symbol)")
    stats.add_argument("--json", action="store_true", help="print JSON")

    from market_pipeline.cli import bars as bars_command

    bars_command.add_parser(sub, _Parser)
    from market_pipeline.cli import returns as returns_command

    returns_command.add_parser(sub, _Parser)
    from market_pipeline.cli import revisions as revisions_command

    revisions_command.add_parser(sub, _Parser)

    sub.add_parser(
        "daemon", add_help=False,
        help="Dagster's daemon (`dagster-daemon run` and its options) with backfills iterating every "
             "MARKET_PIPELINE_BACKFILL_INTERVAL_SECONDS (2 s) instead of 30 s: run this instead of dagster-daemon",
    )

    db = sub.add_parser("db", help="warehouse schema: upgrade, current")
    dsub = _subcommands(db, "action", "actions")
    dsub.add_parser("upgrade", help="apply the Alembic migrations up to head")
    dsub.add_parser("current", help="print the warehouse's schema revision and the head revision (read-only)")
    _name_subcommands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="dagster")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["daemon"]:  # every further argument is dagster-daemon's
        from market_pipeline.devtools import daemon

        return daemon.main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
        settings.validate()  # every setting, once, before anything is fetched or written
        from market_pipeline.cli import commands

        handler = getattr(commands, f"cmd_{args.command}")
        return handler(args)
    except (UsageError, settings.SettingsError) as exc:
        print(f"market-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `market-pipeline symbols list | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        known = _known_error(exc)
        if known is None:
            raise
        code, message = known
        print(f"market-pipeline: error: {message}", file=sys.stderr)
        return code


def _raised(exc: Exception, module: str, name: str) -> bool:
    """`exc` is `module.name`: a class of a module a command imported (none raised what was never imported)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))


def _known_error(exc: Exception) -> tuple[int, str] | None:
    """The exit code and one-line message of an error a command reports, else None (a bug: a traceback)."""
    if _raised(exc, "market_pipeline.polygon.tickers", "SymbolError") or _raised(
        exc, "market_pipeline.warehouse.engine", "WarehouseConfigError"
    ):
        return EXIT_USAGE, str(exc)
    if _raised(exc, "market_pipeline.devtools.instance", "DagsterStorageError"):
        return EXIT_FAILED, str(exc)
    if _raised(exc, "market_pipeline.polygon.client", "PolygonError"):  # e.g. `symbols add --verify` offline
        return EXIT_FAILED, f"Polygon did not answer: {exc}; nothing was changed"
    if _raised(exc, "market_pipeline.warehouse.engine", "WarehouseSchemaError"):
        return EXIT_FAILED, str(exc)
    if _raised(exc, "sqlalchemy.exc", "DBAPIError"):
        from market_pipeline.warehouse.faults import cli_message  # full disk, read-only, unreachable, ...

        return EXIT_FAILED, cli_message(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
