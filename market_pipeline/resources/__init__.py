from market_pipeline.resources.polygon import PolygonResource
from market_pipeline.resources.warehouse import WarehouseResource

__all__ = ["PolygonResource", "WarehouseResource"]
