"""tracked_symbols_sensor evaluated against a real instance and warehouse."""

from dagster import AddDynamicPartitionsRequest, DeleteDynamicPartitionsRequest, SensorResult, SkipReason, build_sensor_context

from market_pipeline.definitions import defs
from market_pipeline.partitions import MAX_PARTITIONS_PER_RUN, symbols_partitions
from market_pipeline.resources import WarehouseResource
from market_pipeline.sensors import tracked_symbols_sensor
from market_pipeline.warehouse import SymbolRegistry


def evaluate(instance, url):
    context = build_sensor_context(instance=instance, resources={"warehouse": WarehouseResource(url=url)})
    result = tracked_symbols_sensor(context)
    if isinstance(result, SensorResult):  # apply partition changes as the daemon does
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            elif isinstance(request, DeleteDynamicPartitionsRequest):
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
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


def test_large_additions_are_batched(instance, warehouse_url):
    symbols = [f"S{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(250)]
    SymbolRegistry(warehouse_url).add(symbols, "stock")
    requests = evaluate(instance, warehouse_url).run_requests
    assert len(requests) == 3  # 100 + 100 + 50
    assert len({r.run_key for r in requests}) == 3
    ordered = partitions(instance)
    spans = [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in requests]
    assert spans[0] == (ordered[0], ordered[MAX_PARTITIONS_PER_RUN - 1])
    assert spans[-1][1] == ordered[-1]


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
