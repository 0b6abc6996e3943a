"""`market-pipeline bars SYMBOL... [--start] [--end] [--adjustment none|splits|total_return] [--as-of TIME] [--json | --csv FILE [--force]]`:
print or export stored bars, as traded or adjusted (the same numbers as read_bars and the views), or
as the warehouse held them at an earlier instant (`--as-of`).

`--csv FILE` never replaces an existing FILE unless `--force` is given; a missing folder, a folder
as FILE or a file that may not be written is one line, exit 2, checked before anything is read.
The CSV is written to a temporary file beside FILE and renamed onto it once complete: FILE is
either the whole export or untouched, never half-written."""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from pathlib import Path

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
    bars.add_argument(
        "--as-of", metavar="TIME",
        help="the bars as the warehouse held them at TIME (values then, events known then): ISO 8601 such as "
             "2025-06-02T21:00:00Z or 2025-06-02 (UTC when it has no offset)",
    )
    out = bars.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON records")
    out.add_argument("--csv", metavar="FILE", help="write CSV to FILE ('-' for standard output); never replaces a file without --force")
    bars.add_argument("--force", action="store_true", help="with --csv: replace FILE if it exists")


def cmd_bars(args) -> int:
    from market_pipeline.warehouse.reader import ReadError, read_bars  # pandas: only for this command

    if args.force and not args.csv:
        raise UsageError("--force only applies to --csv FILE (it allows replacing FILE)")
    target = _csv_target(args.csv, args.force) if args.csv and args.csv != "-" else None
    try:
        frame = read_bars(args.symbols, args.start, args.end, args.adjustment, url=settings.db_url(), as_of=args.as_of)
    except ReadError as exc:
        message = str(exc)
        raise UsageError("--as-of" + message[len("as_of"):] if message.startswith("as_of ") else message) from None
    found = set(frame.index.get_level_values("symbol"))
    missing = [s for s in dict.fromkeys(s.strip().upper() for s in args.symbols) if s not in found]
    if missing:
        when = f" as of {args.as_of}" if args.as_of else ""
        raise UsageError(
            f"no stored bars for {', '.join(missing)} in that date range{when}: check the symbol and dates "
            "(`market-pipeline symbols list`, `market-pipeline stats`)"
        )
    flat = frame.reset_index()
    flat["date"] = flat["date"].dt.strftime("%Y-%m-%d")
    flat = flat[["symbol", "date", *COLUMNS]]
    if args.csv == "-":
        flat.to_csv(sys.stdout, index=False)
        return EXIT_OK
    if args.csv:
        _write_csv(flat, target, args.force)
        print(f"{len(flat)} bar(s) of {len(found)} symbol(s) ({args.adjustment}) written to {args.csv}")
        return EXIT_OK
    if args.json:
        records = json.loads(flat.to_json(orient="records"))
        print(json.dumps({"adjustment": args.adjustment, **({"as_of": args.as_of} if args.as_of else {}), "bars": records}, indent=1))
        return EXIT_OK
    print(f"{'SYMBOL':<8} {'DATE':<10} {'OPEN':>12} {'HIGH':>12} {'LOW':>12} {'CLOSE':>12} {'VOLUME':>16} {'VWAP':>12} {'TRADES':>8}")
    for r in flat.itertuples(index=False):
        vwap = "" if r.vwap != r.vwap else f"{r.vwap:.4f}"
        trades = "" if r.transactions is None or str(r.transactions) == "<NA>" else str(r.transactions)
        print(
            f"{r.symbol:<8} {r.date:<10} {r.open:>12.4f} {r.high:>12.4f} {r.low:>12.4f} {r.close:>12.4f} "
            f"{r.volume:>16.3f} {vwap:>12} {trades:>8}"
        )
    print(f"{len(flat)} bar(s), adjustment: {args.adjustment}" + (f", as held at {args.as_of}" if args.as_of else ""))
    return EXIT_OK


def _csv_target(raw: str, force: bool) -> Path:
    """FILE, checked before anything is read: its folder exists, it is not a folder, and it does not
    exist unless `force`. Each problem is a UsageError naming FILE and what to do."""
    target = Path(raw).expanduser()
    folder = target.parent
    if target.is_dir():
        raise UsageError(f"--csv {raw}: that is a folder: name a file in it, e.g. --csv {target / 'bars.csv'}")
    if not folder.is_dir():
        raise UsageError(f"--csv {raw}: the folder {folder} does not exist: create it (mkdir -p {folder}) or choose another path")
    if os.path.lexists(target) and not force:
        raise UsageError(f"--csv {raw}: the file exists and was left as it is: add --force to replace it, or choose another name")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--csv {raw}: the folder {folder} may not be written (permission denied): choose another path")
    return target


def _write_csv(flat, target: Path, force: bool) -> None:
    """Write to a temporary file beside `target`, then put it in place: renamed over it with `force`,
    else linked to the name, which fails if something took that name meanwhile (never replaced)."""
    tmp = None
    try:
        handle = tempfile.NamedTemporaryFile(
            "w", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False, newline="", encoding="utf-8"
        )
        tmp = Path(handle.name)
        with handle:
            flat.to_csv(handle, index=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise UsageError(f"--csv {target}: the file exists and was left as it is: add --force to replace it") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                if os.path.lexists(target):  # a filesystem without hard links: check, then rename
                    raise UsageError(f"--csv {target}: the file exists and was left as it is: add --force to replace it") from None
                os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"--csv {target}: cannot write it ({exc.strerror or exc}); nothing was written") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
