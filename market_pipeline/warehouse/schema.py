"""The warehouse tables, as SQLAlchemy Core metadata (the Alembic migrations create them)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

BACKFILL_STATUSES = ("pending", "in_progress", "completed", "failed")

tracked_symbols = sa.Table(
    "tracked_symbols",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("asset_class", sa.String(8), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("start_date", sa.Date, nullable=True),
    sa.Column("backfill_status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("backfill_error", sa.Text, nullable=True),
    sa.Column("last_backfill", sa.DateTime, nullable=True),
    # the run that last set the status (lets a run-status sensor mark a dead run's symbols failed)
    sa.Column("last_run_id", sa.String(64), nullable=True),
    # the earliest date a completed fetch covered; an earlier start_date triggers a full fetch again
    sa.Column("history_from", sa.Date, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # the last day the symbol traded, from Polygon's reference data (0004): no bar requests once
    # history up to it is stored
    sa.Column("delisted_on", sa.Date, nullable=True),
    # wire bars of the symbol's last completed fetch set aside in ohlcv_quarantine (migration 0002)
    sa.Column("quarantined_bars", sa.Integer, nullable=False, server_default="0"),
    # 0003: how the stored bars were fetched ('adjusted': before 0003, to be re-fetched as traded)
    sa.Column("bars_basis", sa.String(16), nullable=False, server_default="as_traded"),
    # 0003: the last read of the symbol's corporate-action lists ('ok' or 'failed' with the error)
    sa.Column("corporate_actions_status", sa.String(16), nullable=True),
    sa.Column("corporate_actions_error", sa.Text, nullable=True),
    sa.Column("corporate_actions_read_at", sa.DateTime, nullable=True),
    sa.CheckConstraint("asset_class IN ('stock', 'etf', 'crypto')", name="ck_tracked_symbols_asset_class"),
    sa.CheckConstraint(
        "backfill_status IN ('pending', 'in_progress', 'completed', 'failed')",
        name="ck_tracked_symbols_backfill_status",
    ),
)

ohlcv_daily = sa.Table(
    "ohlcv_daily",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("open", sa.Float(53), nullable=False),
    sa.Column("high", sa.Float(53), nullable=False),
    sa.Column("low", sa.Float(53), nullable=False),
    sa.Column("close", sa.Float(53), nullable=False),
    sa.Column("volume", sa.Float(53), nullable=False),
    sa.Column("vwap", sa.Float(53), nullable=True),
    sa.Column("transactions", sa.BigInteger, nullable=True),
    sa.Column("fetched_at", sa.DateTime, nullable=False),
)

symbol_stats = sa.Table(
    "symbol_stats",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("asset_class", sa.String(8), nullable=False),
    sa.Column("record_count", sa.Integer, nullable=False),
    sa.Column("first_date", sa.Date, nullable=True),
    sa.Column("last_date", sa.Date, nullable=True),
    sa.Column("validation_rate", sa.Float(53), nullable=True),
    sa.Column("gaps_detected", sa.Integer, nullable=False),
    sa.Column("backfill_status", sa.String(16), nullable=True),
    sa.Column("last_backfill", sa.DateTime, nullable=True),
    sa.Column("computed_at", sa.DateTime, nullable=False),
)

# Each symbol's statistics as last computed (0006), with what they were computed from: the bars'
# fingerprint (count, first and last date, latest fetched_at) and the basis (the sessions at the time,
# the thresholds, the delisting date, the rules' version). symbol_stats reuses an entry only when both
# still match, so a symbol whose bars did not change since its checks ran is not read again.
symbol_stats_cache = sa.Table(
    "symbol_stats_cache",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("basis", sa.Text, nullable=False),
    sa.Column("record_count", sa.Integer, nullable=False),
    sa.Column("first_date", sa.Date, nullable=True),
    sa.Column("last_date", sa.Date, nullable=True),
    sa.Column("validation_rate", sa.Float(53), nullable=True),
    sa.Column("gaps_detected", sa.Integer, nullable=False),
    sa.Column("computed_at", sa.DateTime, nullable=False),
)

# Each symbol's checks folded over its bars dated before `cut` (0007; market_pipeline.quality.checks_fold),
# with the fingerprint of those bars (count, first and last date, latest fetched_at) and the basis (rules,
# thresholds, split list). A refresh whose older bars still match reads only the bars from `cut` on.
symbol_check_state = sa.Table(
    "symbol_check_state",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("cut", sa.Date, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("basis", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("computed_at", sa.DateTime, nullable=False),
)

# the API plan's request budget shared by every process (market_pipeline.warehouse.rate_limit): one row
# per request a 60 s window allows, per API origin, with when it was last used (Unix seconds)
api_rate_slots = sa.Table(
    "api_rate_slots",
    metadata,
    sa.Column("origin", sa.String(255), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("used_at", sa.Float(53), nullable=False),
)

# What Polygon's reference endpoint says about each tracked symbol (0004), refreshed weekly.
symbol_reference = sa.Table(
    "symbol_reference",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("asset_class", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # see market_pipeline.reference.records
    sa.Column("status_text", sa.Text, nullable=True),
    sa.Column("ticker", sa.String(40), nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("market", sa.String(16), nullable=True),
    sa.Column("type", sa.String(16), nullable=True),
    sa.Column("primary_exchange", sa.String(16), nullable=True),
    sa.Column("composite_figi", sa.String(16), nullable=True),
    sa.Column("share_class_figi", sa.String(16), nullable=True),
    sa.Column("list_date", sa.Date, nullable=True),
    sa.Column("active", sa.Boolean, nullable=True),
    sa.Column("delisted_on", sa.Date, nullable=True),
    sa.Column("renamed_to", sa.String(32), nullable=True),
    sa.Column("fetched_at", sa.DateTime, nullable=False),
)

# Old names of renamed symbols (0004): FB -> META keeps a row (FB, META, figi, 2022-06-09).
symbol_aliases = sa.Table(
    "symbol_aliases",
    metadata,
    sa.Column("old_symbol", sa.String(32), primary_key=True),
    sa.Column("symbol", sa.String(32), nullable=False, index=True),
    sa.Column("composite_figi", sa.String(16), nullable=True),
    sa.Column("renamed_on", sa.Date, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

# wire bars that were not stored, with their raw values and the reason (migration 0002)
ohlcv_quarantine = sa.Table(
    "ohlcv_quarantine",
    metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("date", sa.Date, nullable=True),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("quarantined_at", sa.DateTime, nullable=False),
    sa.Index("ix_ohlcv_quarantine_symbol_date", "symbol", "date"),
)

BAR_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "transactions")

# ---- 0003: corporate actions -----------------------------------------------------------------------
EVENT_STATUSES = ("active", "duplicate", "withdrawn", "invalid")
_EVENT_STATUS_CHECK = "status IN ('active', 'duplicate', 'withdrawn', 'invalid')"

splits = sa.Table(
    "splits",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("provider_id", sa.String(128), primary_key=True),
    sa.Column("execution_date", sa.Date, nullable=True),
    sa.Column("split_from", sa.Float(53), nullable=True),
    sa.Column("split_to", sa.Float(53), nullable=True),
    sa.Column("adjustment_type", sa.String(32), nullable=True),
    sa.Column("historical_adjustment_factor", sa.Float(53), nullable=True),
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("last_seen", sa.DateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.CheckConstraint(_EVENT_STATUS_CHECK, name="ck_splits_status"),
)

dividends = sa.Table(
    "dividends",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("provider_id", sa.String(128), primary_key=True),
    sa.Column("ex_dividend_date", sa.Date, nullable=True),
    sa.Column("declaration_date", sa.Date, nullable=True),
    sa.Column("record_date", sa.Date, nullable=True),
    sa.Column("pay_date", sa.Date, nullable=True),
    sa.Column("cash_amount", sa.Float(53), nullable=True),
    sa.Column("currency", sa.String(8), nullable=True),
    sa.Column("distribution_type", sa.String(32), nullable=True),
    sa.Column("frequency", sa.Integer, nullable=True),
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("last_seen", sa.DateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.CheckConstraint(_EVENT_STATUS_CHECK, name="ck_dividends_status"),
)

# per symbol, the factors of the bars dated valid_from <= date < valid_to (none after the last event)
adjustment_factors = sa.Table(
    "adjustment_factors",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("valid_from", sa.Date, primary_key=True),
    sa.Column("valid_to", sa.Date, nullable=False),
    sa.Column("split_factor", sa.Float(53), nullable=False),
    sa.Column("total_return_factor", sa.Float(53), nullable=False),
)

# ---- 0008: column blocks (market_pipeline.warehouse.columns) ----------------------------------------
# Each symbol's rows dated through `column_seals.sealed_through`, per calendar year, as the bytes of an
# Arrow IPC stream (format `format`); written in the same transaction as the rows they cover. Triggers
# on the rows' table mark a block in `column_dirty` when a row it covers changes.
column_blocks = sa.Table(
    "column_blocks",
    metadata,
    sa.Column("dataset", sa.String(32), primary_key=True),  # the rows' table: "ohlcv_daily"
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("format", sa.Integer, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)

column_seals = sa.Table(
    "column_seals",
    metadata,
    sa.Column("dataset", sa.String(32), primary_key=True),
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("sealed_through", sa.Date, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),  # the rows in the symbol's blocks
    # SQLite: the highest rowid among them when sealed (a row inserted under the seal shows above it)
    sa.Column("row_mark", sa.BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

column_dirty = sa.Table(
    "column_dirty",
    metadata,
    sa.Column("dataset", sa.String(32), primary_key=True),
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
)

# ---- 0009: daily returns, their upkeep, the charts drawn, the checks' latest outcomes ---------------
# Each symbol's daily returns (market_pipeline.returns), one row per stored bar after its first: from
# the total-return close (simple and log) and the split-adjusted close, both on today's share basis.
daily_returns = sa.Table(
    "daily_returns",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("total_return", sa.Float(53), nullable=True),
    sa.Column("log_return", sa.Float(53), nullable=True),
    sa.Column("split_adjusted_return", sa.Float(53), nullable=True),
    sa.Column("computed_at", sa.DateTime, nullable=False),
)

# What a symbol's daily_returns rows were computed from: they are current through `current_through`
# (the last bar date), with the symbol's adjustment factors as `factors_print` says (a change means the
# whole history again); `outliers` (JSON) are its large returns no recorded event explains.
daily_returns_state = sa.Table(
    "daily_returns_state",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("current_through", sa.Date, nullable=True),
    sa.Column("factors_print", sa.Text, nullable=False),
    sa.Column("outliers", sa.Text, nullable=False),
    sa.Column("computed_at", sa.DateTime, nullable=False),
)

# The last chart drawn on each symbol's ohlcv_daily materialization: by which run, when, up to which bar
symbol_charts = sa.Table(
    "symbol_charts",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("through_date", sa.Date, nullable=True),
    sa.Column("drawn_at", sa.DateTime, nullable=False),
)

# The latest outcome of every asset check per symbol partition, as the run that evaluated it recorded
# it (what `market-pipeline stats` and `run` print without opening Dagster's event log)
check_outcomes = sa.Table(
    "check_outcomes",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("asset", sa.String(64), primary_key=True),
    sa.Column("check_name", sa.String(64), primary_key=True),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("severity", sa.String(8), nullable=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("evaluated_at", sa.DateTime, nullable=False),
)

# ---- 0010: the column blocks' SQLite watermark (daily_returns read through column blocks) ---------
# SQLite: each dataset's watermark (warehouse.columns): the rows at or under `row_mark` have been looked
# at by a write for rows inserted under a seal (-1: void, the row at it was deleted)
column_marks = sa.Table(
    "column_marks",
    metadata,
    sa.Column("dataset", sa.String(32), primary_key=True),
    sa.Column("row_mark", sa.BigInteger, nullable=False),
)

# ---- 0011: revisions (market_pipeline.warehouse.revisions): what the warehouse held at any past instant --
# Every value a bar held before a write replaced it, with the interval the warehouse held it: from
# `stored_at` (when the bar was stored with these values; NULL: before the history kept) to
# `replaced_at` (the `fetched_at` of the write that replaced them). Bars rewritten unchanged add nothing.
ohlcv_revisions = sa.Table(
    "ohlcv_revisions",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("replaced_at", sa.DateTime, primary_key=True),
    sa.Column("open", sa.Float(53), nullable=False),
    sa.Column("high", sa.Float(53), nullable=False),
    sa.Column("low", sa.Float(53), nullable=False),
    sa.Column("close", sa.Float(53), nullable=False),
    sa.Column("volume", sa.Float(53), nullable=False),
    sa.Column("vwap", sa.Float(53), nullable=True),
    sa.Column("transactions", sa.BigInteger, nullable=True),
    sa.Column("stored_at", sa.DateTime, nullable=True),
    sa.Index("ix_ohlcv_revisions_symbol_replaced_at", "symbol", "replaced_at"),
    sqlite_with_rowid=False,
)

# When bars were first stored: one row per write and run of dates the symbol did not have (no stored
# bar dated between first_date and last_date before `stored_at`); a daily refresh adds one per symbol.
ohlcv_insertions = sa.Table(
    "ohlcv_insertions",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("stored_at", sa.DateTime, primary_key=True),
    sa.Column("first_date", sa.Date, primary_key=True),
    sa.Column("last_date", sa.Date, nullable=False),
    sa.Column("bars", sa.Integer, nullable=False),
    sqlite_with_rowid=False,
)

# Every state a split or dividend held before a change replaced it (its fields, status and reason as
# JSON), with the interval: from `stored_at` (first_seen, or the change before) to `replaced_at`.
corporate_action_revisions = sa.Table(
    "corporate_action_revisions",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),  # split or dividend
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("provider_id", sa.String(128), primary_key=True),
    sa.Column("replaced_at", sa.DateTime, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("stored_at", sa.DateTime, nullable=True),
    sqlite_with_rowid=False,
)

# When a symbol's adjustment_factors changed, with the ranges the change replaced (`superseded`,
# revisions.encode_factors; NULL on a change recorded before it was kept): a point-in-time read takes
# each symbol's factors from the first change after its instant (or, when that holds none, rebuilds
# them from the events and bars known then)
adjustment_factor_changes = sa.Table(
    "adjustment_factor_changes",
    metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("changed_at", sa.DateTime, primary_key=True),
    sa.Column("superseded", sa.LargeBinary, nullable=True),  # a rowid table on SQLite: its ~1.5 KB stay in the row
)

# One row: the instants a point-in-time read can be asked for. `began_at`: the earliest (the
# warehouse's creation or first write; at an upgrade, the earliest `fetched_at` of the bars it held);
# `kept_from`: set by retention, the instant before which revisions were dropped (NULL: none were).
revision_history = sa.Table(
    "revision_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("began_at", sa.DateTime, nullable=False),
    sa.Column("upgraded_at", sa.DateTime, nullable=True),
    sa.Column("kept_from", sa.DateTime, nullable=True),
)
