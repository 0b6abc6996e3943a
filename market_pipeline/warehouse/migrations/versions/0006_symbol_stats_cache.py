"""symbol_stats_cache: each symbol's statistics as last computed, and what they were computed from

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "symbol_stats_cache",
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


def downgrade() -> None:
    op.drop_table("symbol_stats_cache")
