"""symbol_stats reuses the stats the checks computed (symbol_stats_cache) exactly as long as the bars
and the basis they came from are unchanged; anything else is recomputed from the bars."""

import datetime as dt

import numpy as np

from market_pipeline.quality.report import CheckThresholds, all_table_rows, compute_stats
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline.warehouse.stats_cache import StatsCache
from market_pipeline_tests.test_assets import run, track
from market_pipeline_tests.test_warehouse import bars

NOW = dt.datetime(2024, 3, 1, 23, 0, tzinfo=dt.timezone.utc)  # after the close of Friday 2024-03-01


def _reads(monkeypatch) -> list[str]:
    """The symbols whose bars are read from here on (one entry per read)."""
    seen: list[str] = []
    read_bars, read_many = BarStore.read_bars, BarStore.read_bars_many

    def counting(self, symbol, *args, **kwargs):
        seen.append(symbol)
        return read_bars(self, symbol, *args, **kwargs)

    def counting_many(self, symbols, *args, **kwargs):
        seen.extend(symbols)
        return read_many(self, symbols, *args, **kwargs)

    monkeypatch.setattr(BarStore, "read_bars", counting)
    monkeypatch.setattr(BarStore, "read_bars_many", counting_many)
    return seen


def test_cached_stats_are_reused_until_the_bars_or_the_sessions_change(any_warehouse_url, monkeypatch):
    warehouse_url = any_warehouse_url
    registry, store = SymbolRegistry(warehouse_url), BarStore(warehouse_url)
    registry.add(["AAA", "BBB"], "stock", dt.date(2024, 1, 2))
    frame = bars("2024-01-02", 43)  # business days 2024-01-02 .. 2024-02-29
    store.upsert_bars("AAA", frame)
    store.upsert_bars("BBB", frame)
    reads = _reads(monkeypatch)

    first = {r["symbol"]: r for r in all_table_rows(registry, store, now=NOW)}
    assert sorted(reads) == ["AAA", "BBB"]  # nothing cached yet
    assert set(StatsCache(warehouse_url).get_many()) == {"AAA", "BBB"}

    reads.clear()
    again = {r["symbol"]: r for r in all_table_rows(registry, store, now=NOW)}
    assert reads == []  # same bars, same sessions: nothing read
    for symbol in ("AAA", "BBB"):
        assert {k: v for k, v in again[symbol].items() if k != "computed_at"} == {
            k: v for k, v in first[symbol].items() if k != "computed_at"
        }

    # a late correction makes one of AAA's bars invalid (high below low): AAA alone is read again
    revised = frame.copy()
    revised.loc[10, "high"] = revised.loc[10, "low"] - 1.0
    store.upsert_bars("AAA", revised)
    reads.clear()
    corrected = {r["symbol"]: r for r in all_table_rows(registry, store, now=NOW)}
    assert reads == ["AAA"]
    assert corrected["AAA"]["validation_rate"] < corrected["BBB"]["validation_rate"] == first["BBB"]["validation_rate"]
    fresh = compute_stats("AAA", "stock", store.read_bars("AAA"), CheckThresholds(), NOW)
    assert corrected["AAA"]["validation_rate"] == fresh.validation_rate

    # a deleted bar changes the count: recomputed
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ohlcv_daily WHERE symbol = 'BBB' AND date = '2024-01-10'")
    reads.clear()
    gone = {r["symbol"]: r for r in all_table_rows(registry, store, now=NOW)}
    assert reads == ["BBB"] and gone["BBB"]["record_count"] == 42 and gone["BBB"]["gaps_detected"] == first["BBB"]["gaps_detected"] + 1

    # a week later, with no new bar: every symbol misses more sessions, so everything is recomputed
    reads.clear()
    later = {r["symbol"]: r for r in all_table_rows(registry, store, now=NOW + dt.timedelta(days=7))}
    assert sorted(reads) == ["AAA", "BBB"]
    assert later["BBB"]["gaps_detected"] == gone["BBB"]["gaps_detected"] + 5

    # other thresholds are another basis too
    reads.clear()
    all_table_rows(registry, store, CheckThresholds(large_move=0.1), now=NOW)
    assert sorted(reads) == ["AAA", "BBB"]


def test_the_checks_fill_the_cache_and_symbol_stats_reads_no_bar(polygon_env, instance, warehouse_url, monkeypatch):
    """A run's checks cache each symbol's stats; symbol_stats at the same instant reads no bar and has
    the numbers the checks reported."""
    from market_pipeline_tests.dagster_helpers import check_metadata, latest_check_records

    as_of = dt.datetime(2024, 6, 3, 23, 0, tzinfo=dt.timezone.utc)  # injected: no wall clock
    track(warehouse_url, instance, {"AAPL": "stock", "BTCUSD": "crypto"})
    polygon_env.corrupt_bars("X:BTCUSD", [dt.date(2024, 2, 3)], "negative_volume")
    config = {"ops": {"ohlcv_daily": {"config": {"as_of": as_of.isoformat()}}}}
    assert run(instance, ["AAPL", "BTCUSD"], run_config=config).success
    assert set(StatsCache(warehouse_url).get_many()) == {"AAPL", "BTCUSD"}
    reads = _reads(monkeypatch)
    registry, store = SymbolRegistry(warehouse_url), BarStore(warehouse_url)
    table = {row["symbol"]: row for row in all_table_rows(registry, store, now=as_of)}
    assert reads == []
    rates = latest_check_records(instance, "validation_rate")
    gaps = latest_check_records(instance, "date_gaps")
    for symbol in ("AAPL", "BTCUSD"):
        assert np.isclose(table[symbol]["validation_rate"], float(check_metadata(rates[symbol])["validation_rate"]), atol=1e-6)
        assert table[symbol]["gaps_detected"] == int(check_metadata(gaps[symbol])["gaps_detected"])
    assert table["BTCUSD"]["validation_rate"] < 1.0
    fresh = compute_stats("BTCUSD", "crypto", store.read_bars("BTCUSD"), CheckThresholds(), as_of)
    assert table["BTCUSD"]["validation_rate"] == fresh.validation_rate
