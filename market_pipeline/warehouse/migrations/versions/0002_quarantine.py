"""quarantine: ohlcv_quarantine (wire bars set aside with a reason), tracked_symbols.quarantined_bars

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ohlcv_quarantine",
        # sha256 of symbol, raw values and reason: the same bad bar seen again is one row, refreshed
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("date", sa.Date, nullable=True),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("quarantined_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_ohlcv_quarantine_symbol_date", "ohlcv_quarantine", ["symbol", "date"])
    with op.batch_alter_table("tracked_symbols") as batch:
        batch.add_column(sa.Column("quarantined_bars", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("tracked_symbols") as batch:
        batch.drop_column("quarantined_bars")
    op.drop_index("ix_ohlcv_quarantine_symbol_date", table_name="ohlcv_quarantine")
    op.drop_table("ohlcv_quarantine")
