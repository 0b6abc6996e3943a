"""The SQL warehouse: schema (Alembic-managed), bar store and symbol registry.

The names below are imported on first use, so a module of the package (the registry, the schema)
does not load pandas with the bar store: the command line's read-only commands stay quick.
"""

from importlib import import_module

_EXPORTS = {
    "BarStore": "market_pipeline.warehouse.store",
    "UpsertResult": "market_pipeline.warehouse.store",
    "SymbolRegistry": "market_pipeline.warehouse.registry",
    "TrackedSymbol": "market_pipeline.warehouse.registry",
    "get_engine": "market_pipeline.warehouse.engine",
    "upgrade": "market_pipeline.warehouse.engine",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
