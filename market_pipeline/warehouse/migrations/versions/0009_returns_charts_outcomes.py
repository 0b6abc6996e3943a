"""daily_returns and their upkeep state, the charts drawn per symbol, the checks' latest outcomes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_returns",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("date", sa.Date, primary_key=True),
        sa.Column("total_return", sa.Float(53), nullable=True),
        sa.Column("log_return", sa.Float(53), nullable=True),
        sa.Column("split_adjusted_return", sa.Float(53), nullable=True),
        sa.Column("computed_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "daily_returns_state",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("current_through", sa.Date, nullable=True),
        sa.Column("factors_print", sa.Text, nullable=False),
        sa.Column("outliers", sa.Text, nullable=False),
        sa.Column("computed_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "symbol_charts",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("through_date", sa.Date, nullable=True),
        sa.Column("drawn_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "check_outcomes",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("asset", sa.String(64), primary_key=True),
        sa.Column("check_name", sa.String(64), primary_key=True),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("severity", sa.String(8), nullable=True),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("evaluated_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for name in ("check_outcomes", "symbol_charts", "daily_returns_state", "daily_returns"):
        op.drop_table(name)
