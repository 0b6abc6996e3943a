"""`market-pipeline revisions SYMBOL [--since TIME] [--json]`: what changed in a symbol's stored
history and when: each revised bar (date, old and new values, when replaced, since when the old values
were held), each change of a split or dividend (old and new state), the names it was renamed from, and
how many bars were first stored in the period. Read-only."""

from __future__ import annotations

import datetime as dt
import json

from market_pipeline import settings
from market_pipeline.cli.errors import EXIT_OK, UsageError

BAR_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "transactions")


def add_parser(sub, parser_class) -> None:
    revisions = sub.add_parser(
        "revisions", help="what changed in a symbol's stored history and when: revised bars, corporate-action changes"
    )
    revisions.add_argument("symbol", metavar="SYMBOL", help="a stored symbol (or a name it was renamed from)")
    revisions.add_argument(
        "--since", metavar="TIME",
        help="only changes made at or after TIME: ISO 8601 such as 2025-06-02 or 2025-06-02T21:00:00-04:00 (UTC when it has no offset)",
    )
    revisions.add_argument("--json", action="store_true", help="print JSON")


def _time(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return format(v, ".10g")
    return str(v)


def _changes(old: dict, new: dict, keys) -> str:
    return "; ".join(f"{k} {_value(old.get(k))} -> {_value(new.get(k))}" for k in keys) or "(no value changed)"


def cmd_revisions(args) -> int:
    from market_pipeline.warehouse.point_in_time import parse_instant
    from market_pipeline.warehouse.reader import ReadError
    from market_pipeline.warehouse.revisions import RevisionStore
    from market_pipeline.warehouse.timestamps import utcnow

    symbol = args.symbol.strip().upper()
    since = None
    if args.since:
        try:
            since = parse_instant(args.since, "--since")
        except ReadError as exc:
            raise UsageError(str(exc)) from None
        if since > utcnow():
            raise UsageError(f"--since {args.since} is in the future: pass an instant that has passed, e.g. --since 2025-06-02")
    store = RevisionStore(settings.db_url())
    known = store.known(symbol)
    if known is None:
        raise UsageError(f"{symbol} has no stored bars or corporate actions: check the symbol (`market-pipeline symbols list`)")
    target, _ = known
    found = store.of_symbol(target, since)
    if args.json:
        print(json.dumps({
            "symbol": target,
            "asked": symbol,
            "since": since.isoformat() if since else None,
            "renamed_from": [{"symbol": old, "renamed_at": at.isoformat() if at else None} for old, at in found.renamed_from],
            "bars_first_stored": found.bars_first_stored,
            "bars": [
                {"date": b.date.isoformat(), "replaced_at": b.replaced_at.isoformat(),
                 "stored_at": b.stored_at.isoformat() if b.stored_at else None, "old": b.old, "new": b.new}
                for b in found.bars
            ],
            "corporate_actions": [
                {"kind": e.kind, "provider_id": e.provider_id, "changed_at": e.replaced_at.isoformat(),
                 "stored_at": e.stored_at.isoformat() if e.stored_at else None, "old": e.old or None, "new": e.new}
                for e in found.events
            ],
        }, indent=1))
        return EXIT_OK
    period = f" since {_time(since)} UTC" if since else ""
    head = f"{target}" + (f" (asked as {symbol})" if target != symbol else "")
    print(
        f"{head}: {len(found.bars)} revised bar(s), {len(found.events)} corporate-action change(s){period}; "
        f"{found.bars_first_stored} bar(s) first stored{period or ' (since the history kept began)'}"
    )
    for old, at in found.renamed_from:
        print(f"renamed from {old} at {_time(at)} UTC")
    if found.bars:
        print(f"\n{'DATE':<10}  {'REPLACED AT (UTC)':<19}  {'HELD SINCE (UTC)':<19}  CHANGED (old -> new)")
        for b in found.bars:
            print(f"{b.date.isoformat():<10}  {_time(b.replaced_at):<19}  {_time(b.stored_at):<19}  {_changes(b.old, b.new, b.changed)}")
    if found.events:
        print(f"\n{'KIND':<8}  {'DATE':<10}  {'CHANGED AT (UTC)':<19}  {'HELD SINCE (UTC)':<19}  {'ID':<24}  CHANGED (old -> new)")
        for e in found.events:
            state = e.old or e.new
            date = state.get("execution_date") or state.get("ex_dividend_date") or ""
            if e.old:
                what = _changes(e.old, e.new, e.changed)
            else:  # recorded after the symbol's first bars: a late listing
                what = "new: " + ", ".join(f"{k} {_value(v)}" for k, v in e.new.items() if v is not None)
            print(f"{e.kind:<8}  {date:<10}  {_time(e.replaced_at):<19}  {_time(e.stored_at):<19}  {e.provider_id:<24}  {what}")
    if not found.bars and not found.events:
        print(f"no bar or corporate action of {target} was revised{period}")
    return EXIT_OK
