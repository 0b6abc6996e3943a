"""`market-pipeline returns SYMBOL... [--start] [--end] [--json | --csv FILE [--force]]`: print or
export stored daily returns (the numbers of read_returns and the `daily_returns` table). `--csv FILE`
is written as `bars` writes it (never replaces FILE without --force, never half-written)."""

from __future__ import annotations

import json
import sys

from market_pipeline import settings
from market_pipeline.cli.bars import _csv_target, _write_csv
from market_pipeline.cli.errors import EXIT_OK, UsageError

COLUMNS = ("total_return", "log_return", "split_adjusted_return")


def add_parser(sub, parser_class) -> None:
    returns = sub.add_parser(
        "returns", help="print or export stored daily returns of symbols (total, log, split-adjusted close)"
    )
    returns.add_argument("symbols", nargs="+", metavar="SYMBOL", help="stored symbols (AAPL, BRK.B, BTCUSD)")
    returns.add_argument("--start", help="first date, YYYY-MM-DD (default: the first stored)")
    returns.add_argument("--end", help="last date, YYYY-MM-DD (default: the last stored)")
    out = returns.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON records")
    out.add_argument("--csv", metavar="FILE", help="write CSV to FILE ('-' for standard output)")
    returns.add_argument("--force", action="store_true", help="with --csv FILE: replace FILE if it exists")


def cmd_returns(args) -> int:
    from market_pipeline.returns.read import read_returns  # pandas: only for this command
    from market_pipeline.warehouse.reader import ReadError

    if args.force and not args.csv:
        raise UsageError("--force only applies to --csv FILE (it allows replacing FILE)")
    target = _csv_target(args.csv, args.force) if args.csv and args.csv != "-" else None
    try:
        frame = read_returns(args.symbols, args.start, args.end, url=settings.db_url())
    except ReadError as exc:
        raise UsageError(str(exc)) from None
    found = set(frame.index.get_level_values("symbol"))
    missing = [s for s in dict.fromkeys(s.strip().upper() for s in args.symbols) if s not in found]
    if missing:
        raise UsageError(
            f"no stored returns for {', '.join(missing)} in that date range: check the symbol and dates "
            "(`market-pipeline symbols list`); a symbol's returns are computed by the run that stores its bars"
        )
    flat = frame.reset_index()
    flat["date"] = flat["date"].dt.strftime("%Y-%m-%d")
    if args.csv == "-":
        flat.to_csv(sys.stdout, index=False)
        return EXIT_OK
    if args.csv:
        _write_csv(flat, target, args.force)
        print(f"{len(flat)} return(s) of {len(found)} symbol(s) written to {args.csv}")
        return EXIT_OK
    if args.json:
        print(json.dumps({"returns": json.loads(flat.to_json(orient="records"))}, indent=1))
        return EXIT_OK
    print(f"{'SYMBOL':<8} {'DATE':<10} {'TOTAL':>12} {'LOG':>12} {'SPLIT-ADJ':>12}")
    for r in flat.itertuples(index=False):
        cells = ["" if v != v else f"{v:>12.6f}" for v in (r.total_return, r.log_return, r.split_adjusted_return)]
        print(f"{r.symbol:<8} {r.date:<10} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12}")
    print(f"{len(flat)} return(s) (fractions: 0.01 is 1%; a return dated D is from the previous stored bar's close to D's)")
    return EXIT_OK
