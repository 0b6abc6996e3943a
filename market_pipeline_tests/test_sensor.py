"""tracked_symbols_sensor evaluated against a real instance and warehouse."""

from dagster import DagsterRunStatus, SensorResult, SkipReason, build_sensor_context

from market_pipeline.definitions import defs
from market_pipeline.defs.bars.partitions import MAX_PARTITIONS_PER_RUN, symbols_partitions
from market_pipeline.defs.resources import WarehouseResource
from market_pipeline.defs.bars.sensors import MAX_WAITING_BACKFILL_RUNS, tracked_symbols_sensor
from market_pipeline.warehouse import SymbolRegistry

_cursors: dict[int, str | None] = {}


def evaluate(instance, url):
    """One tick, keeping the sensor's cursor between ticks as the daemon does."""
    context = build_sensor_context(
        instance=instance, cursor=_cursors.get(id(instance)), resources={"warehouse": WarehouseResource(url=url)}
    )
    result = tracked_symbols_sensor(context)
    if isinstance(result, SensorResult):
        assert not result.dynamic_partitions_requests  # the sensor changes partitions itself, in one call
        if result.cursor is not None:
            _cursors[id(instance)] = result.cursor
    return result


def partitions(instance):
    return instance.get_dynamic_partitions(symbols_partitions.name)


def test_empty_registry_skips(instance, warehouse_url):
    assert isinstance(evaluate(instance, warehouse_url), SkipReason)


def test_adds_partitions_and_requests_backfills(instance, warehouse_url):
    registry = SymbolRegistry(warehouse_url)
    registry.add(["AAPL", "MSFT"], "stock")
    registry.add(["BTCUSD"], "crypto")
    result = evaluate(instance, warehouse_url)
    assert partitions(instance) == ["AAPL", "BTCUSD", "MSFT"]
    (request,) = result.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "AAPL"
    assert request.tags["dagster/asset_partition_range_end"] == "MSFT"
    assert isinstance(evaluate(instance, warehouse_url), SkipReason)  # nothing new: no second request

    registry.add(["SPY"], "etf")
    (single,) = evaluate(instance, warehouse_url).run_requests
    assert single.partition_key == "SPY"


def test_deactivate_deletes_partition_and_reactivation_backfills_again(instance, warehouse_url):
    registry = SymbolRegistry(warehouse_url)
    registry.add(["AAPL", "SPY"], "etf")
    first = evaluate(instance, warehouse_url).run_requests[0].run_key
    registry.set_active(["SPY"], False)
    result = evaluate(instance, warehouse_url)
    assert result.run_requests == [] and partitions(instance) == ["AAPL"]
    registry.set_active(["SPY"], True)
    (again,) = evaluate(instance, warehouse_url).run_requests
    assert again.partition_key == "SPY" and again.run_key != first
    assert partitions(instance) == ["AAPL", "SPY"]


def _tickers(first: str, count: int) -> list[str]:
    """`count` distinct stock tickers starting with `first` (at most 26 ** 3)."""
    return [f"{first}{chr(65 + i // 676)}{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}" for i in range(count)]


def test_large_additions_are_batched_over_ticks(instance, warehouse_url):
    symbols = _tickers("S", 2 * MAX_PARTITIONS_PER_RUN + MAX_PARTITIONS_PER_RUN // 2)
    SymbolRegistry(warehouse_url).add(symbols, "stock")
    first = evaluate(instance, warehouse_url).run_requests
    assert partitions(instance) == sorted(symbols)  # every partition at once
    assert len(first) == MAX_WAITING_BACKFILL_RUNS == 2  # two full runs now; the last half run on a later tick
    (last,) = evaluate(instance, warehouse_url).run_requests
    requests = first + [last]
    assert len({r.run_key for r in requests}) == 3
    ordered = partitions(instance)
    spans = [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in requests]
    assert spans == [
        (ordered[0], ordered[MAX_PARTITIONS_PER_RUN - 1]),
        (ordered[MAX_PARTITIONS_PER_RUN], ordered[2 * MAX_PARTITIONS_PER_RUN - 1]),
        (ordered[2 * MAX_PARTITIONS_PER_RUN], ordered[-1]),
    ]
    assert isinstance(evaluate(instance, warehouse_url), SkipReason)  # every symbol requested once


def test_waits_while_its_runs_are_queued(instance, warehouse_url):
    """Backpressure: no more than two of the sensor's backfill runs wait in the queue; the rest of the
    new symbols stay in the cursor until those runs start, and a deactivated one drops out."""
    symbols = _tickers("Q", MAX_PARTITIONS_PER_RUN + MAX_PARTITIONS_PER_RUN // 2)
    SymbolRegistry(warehouse_url).add(symbols, "stock")
    job = defs.resolve_job_def("ohlcv_daily_job")
    runs = []
    for request in evaluate(instance, warehouse_url).run_requests:  # a full run + a half: both created, not started yet
        run = instance.create_run_for_job(job_def=job, tags=request.tags, status=DagsterRunStatus.NOT_STARTED)
        runs.append(run)
    SymbolRegistry(warehouse_url).add(["ZZZ"], "stock")
    SymbolRegistry(warehouse_url).add(["ZZY"], "stock")
    blocked = evaluate(instance, warehouse_url)
    assert blocked.run_requests == [] and "wait" in blocked.skip_reason.skip_message
    assert partitions(instance)[-2:] == ["ZZY", "ZZZ"]  # partitions are added even while runs wait
    SymbolRegistry(warehouse_url).set_active(["ZZY"], False)
    instance.report_run_failed(runs[0])  # the queue moves: one of the two waiting runs ends
    (request,) = evaluate(instance, warehouse_url).run_requests
    assert request.partition_key == "ZZZ"


def test_requested_run_materialises(polygon_env, instance, warehouse_url):
    registry = SymbolRegistry(warehouse_url)
    registry.add(["AAPL"], "stock", "2025-01-02")
    registry.add(["BTCUSD"], "crypto", "2025-01-02")
    (request,) = evaluate(instance, warehouse_url).run_requests
    result = defs.resolve_job_def(request.job_name or "ohlcv_daily_job").execute_in_process(
        instance=instance, tags=request.tags, raise_on_error=False
    )
    assert result.success
    assert {r.symbol: r.backfill_status for r in registry.list()} == {"AAPL": "completed", "BTCUSD": "completed"}
