"""Runs keep each symbol's checks folded over its older bars (symbol_check_state) and, while those bars
are unchanged, read only the newer ones; the checks they record are exactly those of the whole history.
A late correction of an old bar, a split listed late or twice, or a month going by are all covered."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from market_pipeline.defs.bars.checks import CHECK_KEYS, SPLIT_CHECK, evaluations
from market_pipeline.defs.corporate_actions.checks import split_evaluation
from market_pipeline.quality.report import CheckThresholds, compute_stats
from market_pipeline.warehouse import BarStore
from market_pipeline.warehouse.check_state import CheckStateStore
from market_pipeline.warehouse.corporate_actions import CorporateActionStore
from market_pipeline.warehouse.engine import get_engine
from market_pipeline_tests.dagster_helpers import check_metadata, latest_check_records
from market_pipeline_tests.test_assets import run, track

UTC = dt.timezone.utc
SYMBOLS = {"AAPL": "stock", "INTC": "stock", "BTCUSD": "crypto"}


@pytest.fixture
def warehouse_url(any_warehouse_url):
    return any_warehouse_url


def _run(instance, as_of: dt.datetime):
    config = {"ops": {"ohlcv_daily": {"config": {"as_of": as_of.isoformat()}}}}
    result = run(instance, list(SYMBOLS), run_config=config)
    assert result.success
    return result


def _checks_line(instance, result) -> str:
    (line,) = [e.message for e in instance.all_logs(result.run_id) if e.message and e.message.startswith("checks: ")]
    return line


def _reads(monkeypatch) -> list[dict]:
    """Each read_bars_many call from here on: symbol -> the date it read from (None: all its bars)."""
    calls: list[dict] = []
    original = BarStore.read_bars_many

    def spy(self, symbols, since=None):
        calls.append({s: (since or {}).get(s) for s in symbols})
        return original(self, symbols, since)

    monkeypatch.setattr(BarStore, "read_bars_many", spy)
    return calls


def _assert_checks_are_those_of_the_whole_history(instance, url, as_of):
    store, actions = BarStore(url), CorporateActionStore(url)
    for symbol, asset_class in SYMBOLS.items():
        bars = store.read_bars(symbol)
        stats = compute_stats(symbol, asset_class, bars, CheckThresholds(), as_of)
        expected = {e.check_name: e for e in evaluations(stats, CHECK_KEYS, now=as_of, target=None)}
        expected[SPLIT_CHECK] = split_evaluation(symbol, asset_class, bars, actions.splits(symbol) if asset_class != "crypto" else [])
        for name, evaluation in expected.items():
            record = latest_check_records(instance, name)[symbol]
            recorded = {k: v for k, v in check_metadata(record).items() if k != "days_chart"}  # a failed check's chart
            assert recorded == {k: v.value for k, v in evaluation.metadata.items()}, (symbol, name)
            assert record.event.dagster_event.event_specific_data.passed == evaluation.passed, (symbol, name)


def test_a_refresh_reads_only_the_bars_after_the_kept_state_and_checks_the_whole_history(
    polygon_env, instance, warehouse_url, monkeypatch
):
    track(warehouse_url, instance, SYMBOLS, start="2023-01-03")
    states = CheckStateStore(warehouse_url)

    # the first run holds every bar in memory: it reads none and keeps a state cut at the first of
    # the month 35 days before the latest session
    t1 = dt.datetime(2024, 6, 3, 23, 0, tzinfo=UTC)
    reads = _reads(monkeypatch)
    _run(instance, t1)
    assert reads == []
    kept = states.get_many(list(SYMBOLS))
    assert {s: state.cut for s, state in kept.items()} == {s: dt.date(2024, 4, 1) for s in SYMBOLS}
    _assert_checks_are_those_of_the_whole_history(instance, warehouse_url, t1)

    # the next day's refresh re-fetches its window: each symbol is read from the state's cut on
    t2 = t1 + dt.timedelta(days=1)
    result = _run(instance, t2)
    assert reads == [{s: dt.date(2024, 4, 1) for s in SYMBOLS}]
    assert _checks_line(instance, result).startswith(
        "checks: 0 symbol(s) from the bars just stored, 3 from their kept state and the bars after its cut, 0 read whole"
    )
    assert states.get_many(list(SYMBOLS)) == kept  # same cut: nothing rewritten
    _assert_checks_are_those_of_the_whole_history(instance, warehouse_url, t2)

    # a late correction of an old AAPL bar (high under low): AAPL's state no longer fits, AAPL is
    # read whole and the bad bar is counted; a split of INTC listed twice changes its basis: read whole
    store = BarStore(warehouse_url)
    old = store.read_bars("AAPL", dt.date(2023, 6, 1), dt.date(2023, 6, 1))
    old.loc[0, "high"] = old.loc[0, "low"] - 1.0
    store.upsert_bars("AAPL", old)
    intc_split = CorporateActionStore(warehouse_url).splits("INTC")[0].execution_date
    polygon_env.duplicate_split("INTC", intc_split, intc_split + dt.timedelta(days=7))
    reads.clear()
    t3 = t2 + dt.timedelta(days=1)
    _run(instance, t3)
    assert reads == [{"AAPL": None, "INTC": None, "BTCUSD": dt.date(2024, 4, 1)}]
    _assert_checks_are_those_of_the_whole_history(instance, warehouse_url, t3)
    validation = check_metadata(latest_check_records(instance, "validation_rate")["AAPL"])
    failures, examples = ({r.data["name"]: r.data["value"] for r in validation[k].records} for k in ("failures", "examples"))
    assert failures["high_ge_low"] == 1 and "2023-06-01" in examples["high_ge_low"]
    assert check_metadata(latest_check_records(instance, SPLIT_CHECK)["INTC"])["duplicates"]

    # two months on: each state is extended to the new cut
    reads.clear()
    t4 = dt.datetime(2024, 8, 5, 23, 0, tzinfo=UTC)
    _run(instance, t4)
    # (AAPL's and INTC's states were kept afresh at 2024-06-05: cut at 2024-05-01)
    assert reads == [{"AAPL": dt.date(2024, 5, 1), "INTC": dt.date(2024, 5, 1), "BTCUSD": dt.date(2024, 4, 1)}]
    cuts = {s: state.cut for s, state in states.get_many(list(SYMBOLS)).items()}
    # 35 days before the latest session (2024-08-05 in New York, 2024-08-04 the last whole UTC day)
    assert cuts == {"AAPL": dt.date(2024, 7, 1), "INTC": dt.date(2024, 7, 1), "BTCUSD": dt.date(2024, 6, 1)}
    _assert_checks_are_those_of_the_whole_history(instance, warehouse_url, t4)


def test_a_deleted_old_bar_or_an_unreadable_state_means_the_whole_history_is_read(polygon_env, instance, warehouse_url, monkeypatch):
    track(warehouse_url, instance, SYMBOLS, start="2023-01-03")
    t1 = dt.datetime(2024, 6, 3, 23, 0, tzinfo=UTC)
    _run(instance, t1)
    with get_engine(warehouse_url).begin() as conn:
        conn.execute(sa.text("DELETE FROM ohlcv_daily WHERE symbol = 'BTCUSD' AND date = '2023-05-05'"))
        conn.execute(sa.text("UPDATE symbol_check_state SET state = '{not json' WHERE symbol = 'INTC'"))
    reads = _reads(monkeypatch)
    t2 = t1 + dt.timedelta(days=1)
    result = _run(instance, t2)
    assert reads[0]["BTCUSD"] is None and reads[0]["AAPL"] == dt.date(2024, 4, 1)
    assert "1 from their kept state and the bars after its cut, 2 read whole" in _checks_line(instance, result)
    _assert_checks_are_those_of_the_whole_history(instance, warehouse_url, t2)
    gaps = check_metadata(latest_check_records(instance, "date_gaps")["BTCUSD"])
    assert gaps["gaps_detected"] == "1"
    # INTC's unreadable state was replaced by a good one
    assert CheckStateStore(warehouse_url).get_many(["INTC"])["INTC"].state.startswith("{\"version\"")


def test_the_fingerprints_before_a_cut_and_of_all_bars_match_the_stats_cache(any_warehouse_url):
    """The whole history's fingerprint is put together from the bars before and after a cut: it must
    read exactly as symbol_stats computes it, wherever the cut falls, or symbol_stats would re-read."""
    from market_pipeline.warehouse.stats_cache import NO_BARS, StatsCache
    from market_pipeline_tests.test_warehouse import bars

    store = BarStore(any_warehouse_url)
    store.upsert_bars("AAA", bars("2024-01-02", 43))
    later = bars("2024-01-02", 43).iloc[20:].copy()
    later["close"] = later["close"] + 1.0
    store.upsert_bars("AAA", later)  # a later fetched_at on the newer bars
    whole = StatsCache(any_warehouse_url).fingerprints(["AAA"])["AAA"]
    states = CheckStateStore(any_warehouse_url)
    for cut in (dt.date(2023, 12, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 20), dt.date(2024, 2, 29), dt.date(2024, 3, 1), dt.date(2025, 1, 1)):
        prints = states.prints({"AAA": [cut], "NONE": [cut]})
        assert prints["AAA"].full == whole, cut
        assert prints["NONE"].full == prints["NONE"].before[cut] == NO_BARS
        head = store.read_bars("AAA", end=cut - dt.timedelta(days=1))
        assert prints["AAA"].before[cut].split("|")[:3] == (
            [str(len(head)), str(head["date"].min().date()), str(head["date"].max().date())] if len(head) else ["0", "", ""]
        )
    assert states.prints({"AAA": [dt.date(2024, 1, 20), dt.date(2024, 2, 1)]})["AAA"].full == whole


def test_a_checks_only_run_uses_the_kept_states_too(polygon_env, instance, warehouse_url, monkeypatch):
    from market_pipeline.definitions import defs
    from market_pipeline.defs.bars.reconcile import range_tags

    track(warehouse_url, instance, SYMBOLS, start="2023-01-03")
    t1 = dt.datetime(2024, 6, 3, 23, 0, tzinfo=UTC)
    _run(instance, t1)
    reads = _reads(monkeypatch)
    polygon_env.reset_counts()
    checks_only = defs.resolve_job_def("ohlcv_daily_job").get_subset(
        asset_check_selection=set(CHECK_KEYS), asset_selection=set()
    )
    config = {"ops": {"ohlcv_daily": {"config": {"as_of": t1.isoformat()}}}}
    result = checks_only.execute_in_process(instance=instance, tags=range_tags(["AAPL", "BTCUSD"]), run_config=config, raise_on_error=False)
    assert result.success and polygon_env.request_counts()["total"] == 0
    assert reads == [{"AAPL": dt.date(2024, 4, 1), "BTCUSD": dt.date(2024, 4, 1), "INTC": dt.date(2024, 4, 1)}]
    _assert_checks_are_those_of_the_whole_history(instance, warehouse_url, t1)
    assert "3 from their kept state" in _checks_line(instance, result)


def test_symbol_stats_on_a_day_without_a_run_reads_only_the_bars_after_the_kept_states(polygon_env, instance, warehouse_url, monkeypatch):
    """symbol_stats' cache no longer fits once the sessions move on (a weekend's crypto-only refresh):
    each symbol is then computed from its kept state, with the same numbers as its whole history."""
    from market_pipeline.quality.report import all_table_rows
    from market_pipeline.warehouse import SymbolRegistry

    track(warehouse_url, instance, SYMBOLS, start="2023-01-03")
    _run(instance, dt.datetime(2024, 6, 3, 23, 0, tzinfo=UTC))
    reads = _reads(monkeypatch)
    later = dt.datetime(2024, 6, 9, 12, 0, tzinfo=UTC)  # Sunday: new sessions expected, no bar stored since
    rows = {r["symbol"]: r for r in all_table_rows(SymbolRegistry(warehouse_url), BarStore(warehouse_url), now=later)}
    assert reads == [{s: dt.date(2024, 4, 1) for s in SYMBOLS}]
    store = BarStore(warehouse_url)
    for symbol, asset_class in SYMBOLS.items():
        full = compute_stats(symbol, asset_class, store.read_bars(symbol), CheckThresholds(), later)
        assert (rows[symbol]["validation_rate"], rows[symbol]["gaps_detected"], rows[symbol]["record_count"]) == (
            full.validation_rate, full.gaps_detected, full.record_count,
        )
        assert full.gaps_detected > 0  # the sessions since the run are missing

    # `market-pipeline stats` (stats_for) reads from the states symbol_stats kept, and writes nothing
    from market_pipeline.quality.report import stats_for

    kept = CheckStateStore(warehouse_url).get_many(list(SYMBOLS))
    reads.clear()
    listed = stats_for(SymbolRegistry(warehouse_url).list(include_inactive=True), store, now=later)
    assert reads == [{s: kept[s].cut for s in SYMBOLS}]
    for row, stats in listed:
        assert stats == compute_stats(row.symbol, row.asset_class, store.read_bars(row.symbol), CheckThresholds(), later)
    assert CheckStateStore(warehouse_url).get_many(list(SYMBOLS)) == kept
