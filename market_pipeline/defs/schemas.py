"""The column schemas of the warehouse-backed assets (`dagster/column_schema`, with `dagster/table_name`):
what the catalog's Columns tab shows. Units, basis (as traded or adjusted) and time zone are said
where they apply. ohlcv_daily's and daily_returns' schemas live with their assets."""

from __future__ import annotations

from dagster import TableColumn, TableSchema


def _schema(*columns: tuple[str, str, str]) -> TableSchema:
    return TableSchema(columns=[TableColumn(name, kind, description=text) for name, kind, text in columns])


def table_metadata(name: str, schema: TableSchema) -> dict:
    return {"dagster/table_name": name, "dagster/column_schema": schema}


TRACKED_SYMBOLS = _schema(
    ("symbol", "string", "the tracked symbol as the warehouse keys it (AAPL, BRK.B, BTCUSD)"),
    ("asset_class", "string", "stock, etf or crypto"),
    ("active", "bool", "tracked now (a partition of ohlcv_daily); inactive symbols keep their bars"),
    ("start_date", "date", "first date of history to fetch (null: two years back)"),
    ("backfill_status", "string", "pending, in_progress, completed or failed (with backfill_error)"),
    ("backfill_error", "string", "why the last fetch failed"),
    ("last_backfill", "timestamp", "when the last fetch completed (UTC)"),
    ("last_run_id", "string", "the Dagster run that last set the status"),
    ("history_from", "date", "the earliest date a completed fetch covered"),
    ("created_at", "timestamp", "UTC"),
    ("updated_at", "timestamp", "UTC"),
    ("delisted_on", "date", "the last day the symbol traded (Polygon's reference data)"),
    ("quarantined_bars", "int", "wire bars of the last completed fetch set aside in ohlcv_quarantine"),
    ("bars_basis", "string", "as_traded, or adjusted (stored before the as-traded upgrade: re-fetched)"),
    ("corporate_actions_status", "string", "ok or failed: the last read of its split and dividend lists"),
    ("corporate_actions_error", "string", "why that read failed"),
    ("corporate_actions_read_at", "timestamp", "when its lists were last read (UTC)"),
)

SYMBOL_REFERENCE = _schema(
    ("symbol", "string", "the tracked symbol"),
    ("asset_class", "string", "stock, etf or crypto (as tracked)"),
    ("status", "string", "ok, mismatch, renamed, not_found, incomplete, unknown_type or error"),
    ("status_text", "string", "what to do about a status other than ok"),
    ("ticker", "string", "Polygon's ticker (X:BTCUSD for crypto)"),
    ("name", "string", "the security's name"),
    ("market", "string", "stocks or crypto"),
    ("type", "string", "Polygon's type code (CS common stock, ETF, ...)"),
    ("primary_exchange", "string", "MIC of the primary listing (XNAS, XNYS, ...)"),
    ("composite_figi", "string", "composite FIGI (the security across renames)"),
    ("share_class_figi", "string", "share-class FIGI"),
    ("list_date", "date", "first listing date"),
    ("active", "bool", "whether Polygon lists the ticker as trading"),
    ("delisted_on", "date", "the delisting date, when inactive"),
    ("renamed_to", "string", "the ticker it trades under now, when renamed"),
    ("fetched_at", "timestamp", "when this row was fetched (UTC)"),
)

SYMBOL_STATS = _schema(
    ("symbol", "string", "the tracked symbol"),
    ("asset_class", "string", "stock, etf or crypto"),
    ("record_count", "int", "stored bars"),
    ("first_date", "date", "first stored session (New York for stocks/ETFs, UTC day for crypto)"),
    ("last_date", "date", "last stored session"),
    ("validation_rate", "float", "share of stored bars passing every hard rule, 0 to 1"),
    ("gaps_detected", "int", "expected sessions without a bar (XNYS sessions, or every UTC day for crypto)"),
    ("backfill_status", "string", "the registry's status"),
    ("last_backfill", "timestamp", "UTC"),
    ("computed_at", "timestamp", "when the row was computed (UTC)"),
)

CORPORATE_ACTIONS = _schema(
    ("splits.symbol", "string", "splits: the tracked symbol"),
    ("splits.provider_id", "string", "splits: the provider's id"),
    ("splits.execution_date", "date", "splits: the first session on the new share basis (New York)"),
    ("splits.split_from", "float", "splits: old shares"),
    ("splits.split_to", "float", "splits: new shares (price factor split_from / split_to)"),
    ("splits.status", "string", "splits: active, duplicate, withdrawn or invalid, with `reason`"),
    ("splits.first_seen", "timestamp", "splits: first read (UTC)"),
    ("splits.last_seen", "timestamp", "splits: last read (UTC)"),
    ("dividends.symbol", "string", "dividends: the tracked symbol"),
    ("dividends.provider_id", "string", "dividends: the provider's id"),
    ("dividends.ex_dividend_date", "date", "dividends: ex-dividend date (New York)"),
    ("dividends.cash_amount", "float", "dividends: cash per share as declared (not split-adjusted), in `currency`"),
    ("dividends.currency", "string", "dividends: ISO currency (USD)"),
    ("dividends.pay_date", "date", "dividends: payment date"),
    ("dividends.status", "string", "dividends: active, withdrawn or invalid, with `reason` (not applied, and why)"),
    ("adjustment_factors.symbol", "string", "adjustment_factors: the tracked symbol"),
    ("adjustment_factors.valid_from", "date", "adjustment_factors: first bar date the factors apply to"),
    ("adjustment_factors.valid_to", "date", "adjustment_factors: first bar date they no longer apply to (exclusive)"),
    ("adjustment_factors.split_factor", "float", "adjustment_factors: as-traded price x this = today's share basis"),
    ("adjustment_factors.total_return_factor", "float", "adjustment_factors: split factor x the dividends' (1 - cash / close before) after the bar"),
)
CORPORATE_ACTIONS_TABLES = "splits, dividends, adjustment_factors"


def adjusted_view(basis: str) -> TableSchema:
    """The columns of an adjusted view over ohlcv_daily (`basis` says how its prices are adjusted)."""
    return _schema(
        ("symbol", "string", "the tracked symbol"),
        ("date", "date", "the session date (New York for stocks/ETFs, UTC day for crypto)"),
        ("open", "float", f"USD, {basis}"),
        ("high", "float", f"USD, {basis}"),
        ("low", "float", f"USD, {basis}"),
        ("close", "float", f"USD, {basis}"),
        ("volume", "float", "shares on today's share basis (as traded / split factor)"),
        ("vwap", "float", f"USD, {basis} (may be null)"),
        ("transactions", "int", "trades in the session (may be null)"),
        ("fetched_at", "timestamp", "when the bar was last written (UTC)"),
    )
