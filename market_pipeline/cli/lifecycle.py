"""The symbol-lifecycle commands: `symbols add --verify`, `symbols show`, `symbols rename`."""

from __future__ import annotations

import json
import logging
import sys

from market_pipeline import settings
from market_pipeline.cli.errors import EXIT_OK, UsageError
from market_pipeline.polygon.client import PolygonError
from market_pipeline.reference.records import ReferenceRecord
from market_pipeline.warehouse.reference import ReferenceStore
from market_pipeline.warehouse.registry import SymbolRegistry


def _client():
    from market_pipeline.defs.resources import PolygonResource

    return PolygonResource().get_client()


def _verify_client():
    """An interactive check: a few quick attempts and no retry chatter (one line when Polygon cannot
    be reached), not a run's patient retries."""
    from market_pipeline.defs.resources import PolygonResource

    quiet = logging.getLogger("market_pipeline.polygon.verify")
    quiet.setLevel(logging.ERROR)
    resource = PolygonResource(max_attempts=3, backoff_base_seconds=0.3, backoff_max_seconds=1.0, max_retry_wait_seconds=5.0)
    return resource.get_client(logger=quiet)


def _refuse_tracked_as_another_class(registry: SymbolRegistry, symbols, asset_class: str, verify) -> None:
    """A symbol tracked under another asset class is refused either way (a class cannot change); with
    --verify the refusal says first what Polygon says (`SPY` asked as a stock: Polygon types it as an ETF)."""
    from market_pipeline.cli.commands import stored_forms
    from market_pipeline.polygon.tickers import SymbolError

    for row in registry.get_many(stored_forms(symbols, asset_class)):  # bad input: registry.add refuses it
        if row.asset_class == asset_class:
            continue
        answer = verify(row.symbol, asset_class)
        said = answer if isinstance(answer, str) else f"Polygon does not know {row.symbol} as {asset_class}" if answer is False else None
        if said:
            raise SymbolError(f"{said} ({row.symbol} is already tracked as {row.asset_class})")


def verified_add(registry: SymbolRegistry, symbols, asset_class: str, start_date):
    """Add after asking Polygon about each new symbol: unknown tickers, asset-class mismatches (SPY
    is an ETF), inactive crypto pairs and unreadable answers are refused in one line, nothing added.
    The answers are stored as the symbols' reference (no second request on their first run)."""
    from market_pipeline.polygon.reference import lookup
    from market_pipeline.reference.mismatch import verify_message
    from market_pipeline.devtools.runner import polygon_endpoint

    records: dict[str, ReferenceRecord] = {}

    def verify(symbol: str, cls: str):
        record = records[symbol] = lookup(client, symbol, cls)
        if record.status == "not_found":
            return False
        if record.status == "error":  # Polygon unreachable or refusing: exit 1, nothing added
            raise PolygonError(f"could not verify {symbol}: {record.status_text}")
        return verify_message(record)

    with polygon_endpoint(out=sys.stderr):
        with _verify_client() as client:
            _refuse_tracked_as_another_class(registry, symbols, asset_class, verify)
            outcomes = registry.add(symbols, asset_class, start_date, verify=verify)
    refs = ReferenceStore(registry.url)
    for record in records.values():
        refs.save(record)
    return outcomes


def show(args) -> int:
    registry = SymbolRegistry(settings.db_url())
    (row,) = registry.resolve([args.symbol])
    refs = ReferenceStore(registry.url)
    stored = refs.get(row.symbol)
    out = {**row.as_dict(), "status": row.status, "previous_symbols": refs.previous_symbols(row.symbol)}
    out["reference"] = {**stored.record.as_dict(), "fetched_at": stored.fetched_at.isoformat()} if stored else None
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    ref = out["reference"] or {}
    print(f"{row.symbol} ({row.asset_class}), {'active' if row.active else 'inactive'}, {row.status}")
    for key in ("name", "type", "primary_exchange", "composite_figi", "share_class_figi", "list_date", "active",
                "delisted_on", "renamed_to", "status", "status_text", "fetched_at"):
        if ref.get(key) not in (None, ""):
            print(f"  {key:<17} {ref[key]}")
    if not stored:
        print("  reference         not fetched yet (fetched on its first run and weekly)")
    if out["previous_symbols"]:
        print(f"  previously        {', '.join(out['previous_symbols'])}")
    return EXIT_OK


def rename(args) -> int:
    """Move OLD's history to NEW after confirming with Polygon that both are one security."""
    from market_pipeline.polygon.reference import lookup, ticker_events
    from market_pipeline.reference.events import RenameRefused, plan_rename
    from market_pipeline.devtools.runner import polygon_endpoint
    from market_pipeline.polygon.tickers import normalize_symbol

    registry = SymbolRegistry(settings.db_url())
    (row,) = registry.resolve([args.old])
    if row.asset_class == "crypto":
        raise UsageError(f"{row.symbol} is a crypto pair: pairs are not renamed")
    new = normalize_symbol(args.new, row.asset_class)
    if registry.get(new) is not None:
        raise UsageError(f"{new} is already tracked: its own history and {row.symbol}'s would mix; nothing was changed")
    refs = ReferenceStore(registry.url)
    stored = refs.get(row.symbol)
    with polygon_endpoint(out=sys.stderr):
        with _client() as client:
            new_record = lookup(client, new, row.asset_class)
            if new_record.status in ("not_found", "error", "invalid"):
                raise UsageError(f"cannot rename {row.symbol} to {new}: {new_record.status_text}")
            old_figi = stored.record.composite_figi if stored else None
            events = None
            if not old_figi or not new_record.composite_figi:
                events = ticker_events(client, new_record.composite_figi or new)
    try:
        plan = plan_rename(row.symbol, new, old_figi=old_figi, new_figi=new_record.composite_figi, new_events=events)
    except RenameRefused as exc:
        raise UsageError(str(exc)) from None
    renamed_on = None
    if events is not None:
        renamed_on = next((c.date for c in events.changes if c.ticker == new), None)
    outcome = refs.rename(plan, renamed_on=renamed_on, new_record=new_record)
    bars = outcome.moved.get("ohlcv_daily", 0)
    print(f"{row.symbol} -> {new}: {bars} bar(s) moved ({plan.evidence}); {row.symbol} is remembered as a previous name of {new}.")
    print(f"The {new} partition replaces {row.symbol}'s on the next sensor tick or `market-pipeline run`.")
    return EXIT_OK
