"""initial schema: tracked_symbols, ohlcv_daily, symbol_stats

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracked_symbols",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("asset_class", sa.String(8), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("start_date", sa.Date, nullable=True),
        sa.Column("backfill_status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("backfill_error", sa.Text, nullable=True),
        sa.Column("last_backfill", sa.DateTime, nullable=True),
        sa.Column("last_run_id", sa.String(64), nullable=True),
        sa.Column("history_from", sa.Date, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.CheckConstraint(
            "asset_class IN ('stock', 'etf', 'crypto')", name="ck_tracked_symbols_asset_class"
        ),
        sa.CheckConstraint(
            "backfill_status IN ('pending', 'in_progress', 'completed', 'failed')",
            name="ck_tracked_symbols_backfill_status",
        ),
    )
    op.create_index("ix_tracked_symbols_active", "tracked_symbols", ["active", "asset_class"])
    op.create_table(
        "ohlcv_daily",
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
    op.create_table(
        "symbol_stats",
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


def downgrade() -> None:
    op.drop_table("symbol_stats")
    op.drop_table("ohlcv_daily")
    op.drop_index("ix_tracked_symbols_active", table_name="tracked_symbols")
    op.drop_table("tracked_symbols")
