"""`market-pipeline bars SYMBOL... [--start] [--end] [--adjustment none|splits|total_return] [--json | --csv FILE]`:
print or export stored bars, as traded or adjusted (the same numbers as read_bars and the views)."""

from __future__ import annotations

import json
import sys

from market_pipeline import settings
from market_pipeline.cli.errors import EXIT_OK, UsageError
ADJUSTMENTS = ("none", "splits", "total_return")  # market_pipeline.warehouse.reader.ADJUSTMENTS
COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "transactions")


def add_parser(sub, parser_class) -> None:
    bars = sub.add_parser("bars", help="print or export stored bars of symbols, as traded or adjusted")
    bars.add_argument("symbols", nargs="+", metavar="SYMBOL", help="stored symbols (AAPL, BRK.B, BTCUSD)")
    bars.add_argument("--start", help="first date, YYYY-MM-DD (default: the first stored)")
    bars.add_argument("--end", help="last date, YYYY-MM-DD (default: the last stored)")
    bars.add_argument(
        "--adjustment", default="none", choices=ADJUSTMENTS,
        help="none: as traded; splits: split-adjusted to today's shares; total_return: splits and dividends",
    )
    out = bars.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON records")
    out.add_argument("--csv", metavar="FILE", help="write CSV to FILE ('-' for standard output)")


def cmd_bars(args) -> int:
    from market_pipeline.warehouse.reader import ReadError, read_bars  # pandas: only for this command

    try:
        frame = read_bars(args.symbols, args.start, args.end, args.adjustment, url=settings.db_url())
    except ReadError as exc:
        raise UsageError(str(exc)) from None
    found = set(frame.index.get_level_values("symbol"))
    missing = [s for s in dict.fromkeys(s.strip().upper() for s in args.symbols) if s not in found]
    if missing:
        raise UsageError(
            f"no stored bars for {', '.join(missing)} in that date range: check the symbol and dates "
            "(`market-pipeline symbols list`, `market-pipeline stats`)"
        )
    flat = frame.reset_index()
    flat["date"] = flat["date"].dt.strftime("%Y-%m-%d")
    flat = flat[["symbol", "date", *COLUMNS]]
    if args.csv:
        target = sys.stdout if args.csv == "-" else args.csv
        flat.to_csv(target, index=False)
        if args.csv != "-":
            print(f"{len(flat)} bar(s) of {len(found)} symbol(s) ({args.adjustment}) written to {args.csv}")
        return EXIT_OK
    if args.json:
        records = json.loads(flat.to_json(orient="records"))
        print(json.dumps({"adjustment": args.adjustment, "bars": records}, indent=1))
        return EXIT_OK
    print(f"{'SYMBOL':<8} {'DATE':<10} {'OPEN':>12} {'HIGH':>12} {'LOW':>12} {'CLOSE':>12} {'VOLUME':>16} {'VWAP':>12} {'TRADES':>8}")
    for r in flat.itertuples(index=False):
        vwap = "" if r.vwap != r.vwap else f"{r.vwap:.4f}"
        trades = "" if r.transactions is None or str(r.transactions) == "<NA>" else str(r.transactions)
        print(
            f"{r.symbol:<8} {r.date:<10} {r.open:>12.4f} {r.high:>12.4f} {r.low:>12.4f} {r.close:>12.4f} "
            f"{r.volume:>16.3f} {vwap:>12} {trades:>8}"
        )
    print(f"{len(flat)} bar(s), adjustment: {args.adjustment}")
    return EXIT_OK
