"""The symbol lifecycle tables on SQLite and PostgreSQL: reference rows, delistings, the rename
transaction (FB -> META with every bar kept; interrupted at any step, the old state stays)."""

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from market_pipeline.reference import RenameRefused, parse_ticker_details, plan_rename
from market_pipeline.reference.records import error_record, not_found_record
from market_pipeline.polygon.tickers import SymbolError
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.engine import get_engine
from market_pipeline.warehouse.reference import ReferenceStore
from market_pipeline.warehouse.schema import metadata
from market_pipeline.warehouse.stats_table import replace_stats
from market_pipeline_tests.test_warehouse import bars

FIGI = "BBG000MM2P62"


def fb_record(symbol="FB", figi=FIGI, **fields):
    body = {"results": {"ticker": symbol, "name": "Meta Platforms", "market": "stocks", "type": "CS",
                        "primary_exchange": "XNAS", "active": True, "composite_figi": figi,
                        "share_class_figi": "BBG001SQCQD3", "list_date": "2012-05-18", **fields}, "status": "OK"}
    return parse_ticker_details(body, symbol, "stock")


def snapshot(url):
    """Every row of every table, as sets (to compare states)."""
    engine = get_engine(url)
    with engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr) for t in metadata.sorted_tables}


def test_schema_matches_the_migrations(any_warehouse_url):
    with get_engine(any_warehouse_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    ours = [d for d in diff if "symbol_reference" in repr(d) or "symbol_aliases" in repr(d) or "delisted_on" in repr(d)]
    assert ours == []


def test_reference_rows_and_delisting_reach_the_registry(any_warehouse_url):
    registry, refs = SymbolRegistry(any_warehouse_url), ReferenceStore(any_warehouse_url)
    registry.add(["AAPL", "DLST"], "stock")
    assert refs.missing(["AAPL", "DLST"]) == ["AAPL", "DLST"]
    refs.save(fb_record("AAPL", "BBG000B9XRY4"))
    refs.save(fb_record("DLST", "BBG000DLST01", active=False, delisted_utc="2023-01-06T00:00:00Z"))
    assert refs.missing(["AAPL", "DLST"]) == []
    stored = refs.get("AAPL")
    assert stored.record.composite_figi == "BBG000B9XRY4" and stored.record.list_date == dt.date(2012, 5, 18)
    assert registry.get("AAPL").delisted_on is None
    assert registry.get("DLST").delisted_on == dt.date(2023, 1, 6)
    registry.mark_completed("DLST", None, None)
    assert registry.get("DLST").status == "delisted" and registry.get("AAPL").status == "pending"
    # a failed refresh keeps what was known and says why
    refs.save(error_record("AAPL", "stock", "HTTP 503"))
    stored = refs.get("AAPL").record
    assert stored.status == "error" and "503" in stored.status_text and stored.composite_figi == "BBG000B9XRY4"
    refs.save(not_found_record("DLST", "stock"))
    assert registry.get("DLST").delisted_on == dt.date(2023, 1, 6)  # a 404 changes no identity


def _track_fb(url):
    registry, store, refs = SymbolRegistry(url), BarStore(url), ReferenceStore(url)
    registry.add(["FB"], "stock", "2022-01-03")
    store.upsert_bars("FB", bars("2022-01-03", 100))
    registry.mark_completed("FB", "run-1", dt.date(2022, 1, 3))
    refs.save(fb_record())
    replace_stats(get_engine(url), [{"symbol": "FB", "asset_class": "stock", "record_count": 100, "first_date": None, "last_date": None,
                       "validation_rate": 1.0, "gaps_detected": 0, "backfill_status": "completed",
                       "last_backfill": None, "computed_at": dt.datetime(2026, 1, 1)}])
    return registry, store, refs


def test_rename_moves_every_bar_and_remembers_the_old_name(any_warehouse_url):
    registry, store, refs = _track_fb(any_warehouse_url)
    before = store.read_bars("FB")
    plan = plan_rename("FB", "META", old_figi=refs.get("FB").record.composite_figi, new_figi=fb_record("META").composite_figi)
    outcome = refs.rename(plan, renamed_on=dt.date(2022, 6, 9), new_record=fb_record("META"))
    assert outcome.moved["ohlcv_daily"] == 100 and outcome.moved["symbol_stats"] == 1
    after = store.read_bars("META")
    assert after.drop(columns=[]).equals(before) and store.read_bars("FB").empty
    assert registry.get("FB") is None
    meta = registry.get("META")
    assert meta.backfill_status == "completed" and meta.history_from == dt.date(2022, 1, 3) and meta.start_date == dt.date(2022, 1, 3)
    assert refs.aliases() == {"FB": "META"} and refs.previous_symbols("META") == ["FB"]
    assert refs.get("META").record.composite_figi == FIGI and refs.get("FB") is None


def test_reused_ticker_is_never_merged(any_warehouse_url):
    registry, store, refs = _track_fb(any_warehouse_url)
    state = snapshot(any_warehouse_url)
    with pytest.raises(RenameRefused, match="reused ticker"):
        plan_rename("FB", "META", old_figi=refs.get("FB").record.composite_figi, new_figi="BBG00REUSED1")
    assert snapshot(any_warehouse_url) == state


def test_rename_refuses_a_tracked_target_and_changes_nothing(any_warehouse_url):
    registry, store, refs = _track_fb(any_warehouse_url)
    registry.add(["META"], "stock")
    state = snapshot(any_warehouse_url)
    with pytest.raises(SymbolError, match="already tracked"):
        refs.rename(plan_rename("FB", "META", old_figi=FIGI, new_figi=FIGI))
    assert snapshot(any_warehouse_url) == state


@pytest.mark.parametrize("step", ["tracked_symbols", "ohlcv_daily", "symbol_stats", "symbol_reference", "symbol_aliases", "done"])
def test_rename_interrupted_at_any_step_leaves_the_old_state(any_warehouse_url, step):
    _track_fb(any_warehouse_url)
    state = snapshot(any_warehouse_url)

    def interrupt(name):
        if name == step:
            raise KeyboardInterrupt(f"killed after {name}")

    with pytest.raises(KeyboardInterrupt):
        ReferenceStore(any_warehouse_url).rename(
            plan_rename("FB", "META", old_figi=FIGI, new_figi=FIGI), new_record=fb_record("META"), checkpoint=interrupt
        )
    assert snapshot(any_warehouse_url) == state
