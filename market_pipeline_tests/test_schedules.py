"""The daily refresh schedules, evaluated against a real instance and warehouse, and the runs they
request executed in-process against the sandbox over HTTP: one run per asset class, the grouped-daily
path when it needs fewer requests (counted by the sandbox), late corrections, failures."""

import datetime as dt
import zoneinfo

import pandas as pd
import pytest
from dagster import DefaultScheduleStatus, build_schedule_context

from market_pipeline.polygon.bars import BAR_COLUMNS
from market_pipeline.definitions import defs
from market_pipeline.defs.bars.partitions import symbols_partitions
from market_pipeline.refresh.planning import session_dates
from market_pipeline.defs.resources import WarehouseResource
from market_pipeline.sandbox import as_traded_bars
from market_pipeline.warehouse import BarStore, SymbolRegistry
from market_pipeline_tests.dagster_helpers import OHLCV, materialization_metadata, materializations

NY = zoneinfo.ZoneInfo("America/New_York")
UTC = dt.timezone.utc
STOCK_TICK = dt.datetime(2025, 3, 5, 18, 30, tzinfo=NY)  # a Wednesday evening
CRYPTO_TICK = dt.datetime(2025, 3, 6, 0, 15, tzinfo=UTC)
TARGET = dt.date(2025, 3, 5)  # what both ticks refresh up to
HISTORY_START = dt.date(2025, 1, 2)
# insertion order interleaves the classes, as `symbols add` in any order does
INTERLEAVED = {"AAPL": "stock", "BTCUSD": "crypto", "MSFT": "stock", "ETHUSD": "crypto", "SPY": "etf", "QQQ": "etf", "IWM": "etf"}


def ticker(symbol: str, asset_class: str) -> str:
    return f"X:{symbol}" if asset_class == "crypto" else symbol


def served(symbol: str, asset_class: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """What the sandbox serves for the symbol, as a bar frame."""
    raw = as_traded_bars(ticker(symbol, asset_class), start, end)
    frame = raw.rename(columns={"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap", "n": "transactions"})
    frame["transactions"] = frame["transactions"].astype("Int64")
    return frame[list(BAR_COLUMNS)].reset_index(drop=True)


def last_session(asset_class: str, missed: int, target: dt.date = TARGET) -> dt.date:
    """The last stored session of a symbol `missed` sessions behind `target`."""
    market = "crypto" if asset_class == "crypto" else "stocks"
    return session_dates(market, target - dt.timedelta(days=30), target)[-1 - missed]


def seed(url, instance, symbols: dict, missed: int = 1, history_start: dt.date = HISTORY_START, target: dt.date = TARGET):
    """Track `symbols` (in this order) with complete stored history ending `missed` sessions before
    `target`, written straight into the warehouse: what earlier runs would have left."""
    registry, store = SymbolRegistry(url), BarStore(url)
    by_class: dict[str, list[str]] = {}
    for symbol, asset_class in symbols.items():
        by_class.setdefault(asset_class, []).append(symbol)
    for asset_class, names in by_class.items():
        registry.add(names, asset_class, history_start)
    instance.add_dynamic_partitions(symbols_partitions.name, list(symbols))
    for symbol, asset_class in symbols.items():
        store.upsert_bars(symbol, served(symbol, asset_class, history_start, last_session(asset_class, missed, target)))
        registry.mark_completed(symbol, "seed", history_from=history_start)
    return registry, store


def evaluate(name, instance, url, tick):
    repository = defs.get_repository_def()
    schedule = repository.get_schedule_def(name)
    with build_schedule_context(
        instance=instance,
        scheduled_execution_time=tick,
        resources={"warehouse": WarehouseResource(url=url)},
        repository_def=repository,
    ) as context:
        return schedule.evaluate_tick(context)


def the_request(name, instance, url, tick):
    data = evaluate(name, instance, url, tick)
    assert data.skip_message is None, data.skip_message
    (request,) = data.run_requests
    return request


def execute(instance, request, **op_config):
    """Run what the schedule requested, as the daemon would launch it (tags, partition, config)."""
    config = {"ops": {"ohlcv_daily": {"config": {**request.run_config["ops"]["ohlcv_daily"]["config"], **op_config}}}}
    kwargs = {"partition_key": request.partition_key} if request.partition_key else {}
    return defs.resolve_job_def("ohlcv_daily_job").execute_in_process(
        instance=instance, tags=request.tags, run_config=config, raise_on_error=False, **kwargs
    )


def run_partitions(instance, run_id) -> set:
    return {m.partition_key for m in materializations(instance) if m.run_id == run_id}


def test_schedules_are_on_by_default_and_target_the_bars_job():
    repository = defs.get_repository_def()
    stocks, crypto = (repository.get_schedule_def(n) for n in ("stocks_daily_refresh", "crypto_daily_refresh"))
    assert stocks.cron_schedule == "30 18 * * 1-5" and stocks.execution_timezone == "America/New_York"
    assert crypto.cron_schedule == "15 0 * * *" and crypto.execution_timezone == "UTC"
    for schedule in (stocks, crypto):
        assert schedule.default_status == DefaultScheduleStatus.RUNNING
        assert schedule.job_name == "ohlcv_daily_job"


def test_one_run_per_class_spanning_interleaved_partitions(instance, warehouse_url):
    seed(warehouse_url, instance, INTERLEAVED)
    stocks = the_request("stocks_daily_refresh", instance, warehouse_url, STOCK_TICK)
    assert stocks.tags["dagster/asset_partition_range_start"] == "AAPL"
    assert stocks.tags["dagster/asset_partition_range_end"] == "IWM"
    assert stocks.run_config["ops"]["ohlcv_daily"]["config"] == {
        "asset_classes": ["stock", "etf"], "target_date": "2025-03-05", "corporate_actions": "recent"}
    crypto = the_request("crypto_daily_refresh", instance, warehouse_url, CRYPTO_TICK)
    assert (crypto.tags["dagster/asset_partition_range_start"], crypto.tags["dagster/asset_partition_range_end"]) == ("BTCUSD", "ETHUSD")
    assert crypto.run_config["ops"]["ohlcv_daily"]["config"] == {
        "asset_classes": ["crypto"], "target_date": "2025-03-05", "corporate_actions": "recent"}
    # a tick evaluated twice asks for the same run key (the daemon launches it once); the next tick differs
    assert the_request("stocks_daily_refresh", instance, warehouse_url, STOCK_TICK).run_key == stocks.run_key
    next_day = the_request("stocks_daily_refresh", instance, warehouse_url, STOCK_TICK + dt.timedelta(days=1))
    assert next_day.run_key != stocks.run_key
    assert next_day.run_config["ops"]["ohlcv_daily"]["config"]["target_date"] == "2025-03-06"
    assert crypto.run_key != stocks.run_key


def test_nothing_to_refresh_skips_and_one_symbol_uses_its_partition(instance, warehouse_url):
    assert evaluate("crypto_daily_refresh", instance, warehouse_url, CRYPTO_TICK).skip_message
    registry, _ = seed(warehouse_url, instance, {"AAPL": "stock", "BTCUSD": "crypto", "MSFT": "stock"})
    SymbolRegistry(warehouse_url).add(["ETHUSD"], "crypto")  # tracked but no partition yet: the sensor's job
    crypto = the_request("crypto_daily_refresh", instance, warehouse_url, CRYPTO_TICK)
    assert crypto.partition_key == "BTCUSD"
    registry.set_active(["MSFT"], False)  # an inactive symbol is not refreshed
    stocks = the_request("stocks_daily_refresh", instance, warehouse_url, STOCK_TICK)
    assert stocks.partition_key == "AAPL"


def test_scheduled_run_refreshes_only_its_class_from_grouped_daily_bars(polygon_env, instance, warehouse_url):
    registry, store = seed(warehouse_url, instance, INTERLEAVED, missed=1)
    crypto_before = {s: store.summary([s])[s] for s in ("BTCUSD", "ETHUSD")}
    corrected = last_session("stock", 2)  # inside the re-fetch window of 3 stored sessions
    polygon_env.revise_bars("AAPL", [corrected], 1.01)
    polygon_env.reset_counts()

    result = execute(instance, the_request("stocks_daily_refresh", instance, warehouse_url, STOCK_TICK))
    assert result.success
    counts = polygon_env.request_counts()
    assert counts["grouped_stocks"] == 4  # the default window of 3 stored sessions + the missed one
    assert counts["aggs_range"] == 0 and counts["grouped_crypto"] == 0
    stocks = [s for s, c in INTERLEAVED.items() if c != "crypto"]
    assert run_partitions(instance, result.run_id) == set(stocks)
    for symbol in stocks:
        expected = served(symbol, INTERLEAVED[symbol], HISTORY_START, TARGET)
        stored = store.read_bars(symbol)
        assert stored["date"].tolist() == expected["date"].tolist()
        if symbol != "AAPL":
            pd.testing.assert_frame_equal(stored, expected, check_dtype=False)
        meta = materialization_metadata(instance, symbol)
        assert meta["fetch_path"] == "grouped" and meta["requests"] == 4 and meta["requests_shared"] is True
        assert meta["rows_fetched"] == 4 and meta["rows_inserted"] == 1
        assert meta["fetch_from"] == last_session("stock", 3).isoformat() and meta["fetch_to"] == "2025-03-05"
        row = registry.get(symbol)
        assert row.backfill_status == "completed" and row.last_run_id == result.run_id
    # the late correction landed, and was counted
    assert materialization_metadata(instance, "AAPL")["rows_changed"] == 1
    aapl = store.read_bars("AAPL", corrected, corrected)
    original = served("AAPL", "stock", corrected, corrected)
    assert aapl["close"].iloc[0] == pytest.approx(original["close"].iloc[0] * 1.01, rel=1e-4)
    # crypto inside the partition range was not touched
    for symbol in ("BTCUSD", "ETHUSD"):
        assert store.summary([symbol])[symbol] == crypto_before[symbol]
        assert registry.get(symbol).last_run_id == "seed"

    # crypto: two pairs cost 2 range requests against 4 grouped ones, so the range path wins
    polygon_env.reset_counts()
    result = execute(instance, the_request("crypto_daily_refresh", instance, warehouse_url, CRYPTO_TICK))
    assert result.success
    assert polygon_env.request_counts()["aggs_range"] == 2 and polygon_env.request_counts()["grouped_crypto"] == 0
    assert run_partitions(instance, result.run_id) == {"BTCUSD", "ETHUSD"}
    for symbol in ("BTCUSD", "ETHUSD"):
        assert materialization_metadata(instance, symbol)["fetch_path"] == "range"
        pd.testing.assert_frame_equal(store.read_bars(symbol), served(symbol, "crypto", HISTORY_START, TARGET), check_dtype=False)


def test_crypto_grouped_bars_land_on_their_utc_dates(polygon_env, instance, warehouse_url):
    pairs = [f"Q{chr(65 + i)}USD" for i in range(6)]
    polygon_env.add_to_universe(pairs, market="crypto")
    seed(warehouse_url, instance, {p: "crypto" for p in pairs}, missed=2)
    polygon_env.reset_counts()
    result = execute(instance, the_request("crypto_daily_refresh", instance, warehouse_url, CRYPTO_TICK), refetch_sessions=1)
    assert result.success
    assert polygon_env.request_counts()["grouped_crypto"] == 3 and polygon_env.request_counts()["aggs_range"] == 0
    store = BarStore(warehouse_url)
    for pair in pairs:  # 23:59:59.999 UTC stamps land on their own UTC date, weekends included
        pd.testing.assert_frame_equal(store.read_bars(pair), served(pair, "crypto", HISTORY_START, TARGET), check_dtype=False)


def test_symbol_missing_from_grouped_bars_falls_back_to_range(polygon_env, instance, warehouse_url):
    symbols = {"AAPL": "stock", "MSFT": "stock", "SPY": "etf", "QQQ": "etf", "ZZNEW": "stock"}  # ZZNEW: not listed
    seed(warehouse_url, instance, symbols, missed=1)
    polygon_env.reset_counts()
    result = execute(instance, the_request("stocks_daily_refresh", instance, warehouse_url, STOCK_TICK))
    assert result.success
    counts = polygon_env.request_counts()
    assert counts["grouped_stocks"] == 4 and counts["aggs_range"] == 1  # 5: what five range requests cost
    meta = materialization_metadata(instance, "ZZNEW")
    assert meta["fetch_path"] == "range" and "absent from the grouped-daily" in meta["note"]
    pd.testing.assert_frame_equal(BarStore(warehouse_url).read_bars("ZZNEW"), served("ZZNEW", "stock", HISTORY_START, TARGET), check_dtype=False)


def test_failed_grouped_request_marks_symbols_failed_and_the_next_refresh_retries(polygon_env, instance, warehouse_url):
    symbols = {"AAPL": "stock", "MSFT": "stock", "SPY": "etf", "QQQ": "etf", "IWM": "etf"}
    registry, store = seed(warehouse_url, instance, symbols, missed=1)
    body = '{"status":"NOT_AUTHORIZED","request_id":"x","message":"You are not entitled to this data."}'
    # final: neither the client nor Dagster retries it. The run's first request (the corporate-actions
    # read, which is logged and does not fail the run) takes the first, the grouped request the second
    polygon_env.fail_next(2, status=403, body=body)
    request = the_request("stocks_daily_refresh", instance, warehouse_url, STOCK_TICK)
    failed = execute(instance, request)
    assert not failed.success
    for symbol in symbols:
        row = registry.get(symbol)
        assert row.backfill_status == "failed" and row.last_run_id == failed.run_id
        assert "grouped daily bars" in row.backfill_error and "403" in row.backfill_error
    assert run_partitions(instance, failed.run_id) == set()
    assert store.summary(["AAPL"])["AAPL"][2] == last_session("stock", 1)

    retried = execute(instance, request)  # the next refresh tries every symbol again
    assert retried.success
    for symbol in symbols:
        assert registry.get(symbol).backfill_status == "completed"
        assert store.summary([symbol])[symbol][2] == TARGET


def test_thousand_stocks_cost_window_plus_missed_requests(polygon_env, instance, warehouse_url):
    """The target: refreshing 1,000 tracked stocks costs (missed sessions + re-fetch window) requests,
    whatever the number of symbols. Day 1 with a window of 1 and one missed session: 2 requests. Day 2
    (the next tick) with the default window of 3 stored sessions and the day's new session: 4.

    The requested runs execute without the two asset checks: 2,000 check evaluations per run in the
    test's SQLite event log would triple the test's time and tell nothing about requests (the other
    tests run the checks)."""
    symbols = [f"T{i // 26 // 26 % 26 + 65:c}{i // 26 % 26 + 65:c}{i % 26 + 65:c}" for i in range(1000)]
    polygon_env.add_to_universe(symbols)
    start = dt.date(2025, 2, 3)
    seed(warehouse_url, instance, dict.fromkeys(symbols, "stock"), missed=1, history_start=start)
    job = defs.resolve_job_def("ohlcv_daily_job").get_subset(asset_selection={OHLCV}, asset_check_selection=set())
    store = BarStore(warehouse_url)
    for tick, target, window, expected_requests in (
        (STOCK_TICK, TARGET, 1, 2),
        (STOCK_TICK + dt.timedelta(days=1), dt.date(2025, 3, 6), None, 4),
    ):
        polygon_env.reset_counts()
        request = the_request("stocks_daily_refresh", instance, warehouse_url, tick)
        assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (symbols[0], symbols[-1])
        config = request.run_config["ops"]["ohlcv_daily"]["config"]
        if window is not None:
            config = {**config, "refetch_sessions": window}
        result = job.execute_in_process(
            instance=instance, tags=request.tags, run_config={"ops": {"ohlcv_daily": {"config": config}}}, raise_on_error=False
        )
        assert result.success
        counts = polygon_env.request_counts()
        assert counts["grouped_stocks"] == expected_requests
        # not one range request; the corporate actions of every ticker's last 60 days: one request per list
        assert counts["splits"] == 1 and counts["dividends"] == 1
        assert counts["total"] == expected_requests + 2
        summary = store.summary()
        assert len(summary) == 1000 and {v[2] for v in summary.values()} == {target}
        assert {v[0] for v in summary.values()} == {len(session_dates("stocks", start, target))}
        for symbol in symbols[::97]:
            pd.testing.assert_frame_equal(
                store.read_bars(symbol, dt.date(2025, 2, 20)), served(symbol, "stock", dt.date(2025, 2, 20), target), check_dtype=False
            )
        assert len(run_partitions(instance, result.run_id)) == 1000
        meta = materialization_metadata(instance, symbols[500])
        assert meta["fetch_path"] == "grouped" and meta["requests"] == expected_requests and meta["rows_inserted"] == 1
