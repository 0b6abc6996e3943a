"""corporate actions: splits, dividends, adjustment_factors, the adjusted views, bars as traded

Bars stored before this revision were fetched with adjusted=true; stock and ETF symbols that have
bars are marked bars_basis='adjusted' and re-fetched as traded by their next run (one request per
symbol; the mark is cleared only once the as-traded history is written).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from market_pipeline.warehouse.views import create_views, drop_views

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_STATUS = "status IN ('active', 'duplicate', 'withdrawn', 'invalid')"


def upgrade() -> None:
    with op.batch_alter_table("tracked_symbols") as batch:
        batch.add_column(sa.Column("bars_basis", sa.String(16), nullable=False, server_default="as_traded"))
        batch.add_column(sa.Column("corporate_actions_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("corporate_actions_error", sa.Text, nullable=True))
        batch.add_column(sa.Column("corporate_actions_read_at", sa.DateTime, nullable=True))
    op.execute(
        "UPDATE tracked_symbols SET bars_basis = 'adjusted' "
        "WHERE asset_class IN ('stock', 'etf') "
        "AND EXISTS (SELECT 1 FROM ohlcv_daily b WHERE b.symbol = tracked_symbols.symbol)"
    )
    op.create_table(
        "splits",
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
        sa.CheckConstraint(_STATUS, name="ck_splits_status"),
    )
    op.create_table(
        "dividends",
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
        sa.CheckConstraint(_STATUS, name="ck_dividends_status"),
    )
    op.create_table(
        "adjustment_factors",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("valid_from", sa.Date, primary_key=True),
        sa.Column("valid_to", sa.Date, nullable=False),
        sa.Column("split_factor", sa.Float(53), nullable=False),
        sa.Column("total_return_factor", sa.Float(53), nullable=False),
    )
    create_views(op.execute)


def downgrade() -> None:
    drop_views(op.execute)
    op.drop_table("adjustment_factors")
    op.drop_table("dividends")
    op.drop_table("splits")
    with op.batch_alter_table("tracked_symbols") as batch:
        batch.drop_column("corporate_actions_read_at")
        batch.drop_column("corporate_actions_error")
        batch.drop_column("corporate_actions_status")
        batch.drop_column("bars_basis")
