"""`market-pipeline`: manage tracked symbols, run the main job headless, serve the sandbox, print stats.

Exit codes: 0 success; 1 a run or symbol failed; 2 bad input (nothing was changed).
Every command works from the project folder without DAGSTER_HOME set (it then uses the project's
git-ignored home folder, as `make` does) and honours DAGSTER_HOME and MARKET_PIPELINE_DB_URL.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

import sqlalchemy as sa

from market_pipeline.polygon.tickers import SymbolError
from market_pipeline.warehouse.engine import WarehouseConfigError

from market_pipeline.cli.errors import EXIT_FAILED, EXIT_USAGE, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other input error
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="market-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    symbols = sub.add_parser("symbols", help="add, list, activate and deactivate tracked symbols")
    ssub = symbols.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = ssub.add_parser("add", help="track symbols (idempotent; reactivates inactive ones)")
    add.add_argument("symbols", nargs="+", metavar="SYMBOL")
    add.add_argument("--asset-class", required=True, help="stock, etf or crypto")
    add.add_argument("--start-date", help="first date of history to fetch, YYYY-MM-DD (default: two years back)")
    add.add_argument("--verify", action="store_true", help="ask Polygon's reference endpoint that each ticker exists")
    lst = ssub.add_parser("list", help="list tracked symbols with their backfill status")
    lst.add_argument("--all", action="store_true", help="include inactive symbols")
    lst.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (("deactivate", "stop tracking (bars are kept)"), ("activate", "track again")):
        p = ssub.add_parser(name, help=text)
        p.add_argument("symbols", nargs="+", metavar="SYMBOL")

    run = sub.add_parser("run", help="the main job: fetch and store bars for symbols (default: all active)")
    run.add_argument("symbols", nargs="*", metavar="SYMBOL")

    sandbox = sub.add_parser("sandbox", help="run the Polygon-compatible sandbox server in the foreground")
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--rate-limit", type=int, default=None, help="requests per minute before 429 (default: none)")

    stats = sub.add_parser("stats", help="per-symbol record count, date range, validation rate and gaps")
    stats.add_argument("symbols", nargs="*", metavar="SYMBOL")
    stats.add_argument("--json", action="store_true", help="print JSON")

    db = sub.add_parser("db", help="warehouse schema")
    dsub = db.add_subparsers(dest="action", required=True, parser_class=_Parser)
    dsub.add_parser("upgrade", help="apply the Alembic migrations up to head")
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="dagster")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        from market_pipeline.cli import commands

        handler = getattr(commands, f"cmd_{args.command}")
        return handler(args)
    except (UsageError, SymbolError, WarehouseConfigError) as exc:
        print(f"market-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except sa.exc.OperationalError as exc:  # the warehouse server is down or unreachable
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        print(f"market-pipeline: error: cannot reach the warehouse ({reason}); check MARKET_PIPELINE_DB_URL", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
