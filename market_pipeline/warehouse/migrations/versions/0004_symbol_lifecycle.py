"""symbol lifecycle: symbol_reference, symbol_aliases, tracked_symbols.delisted_on

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "symbol_reference",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("asset_class", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
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
    op.create_table(
        "symbol_aliases",
        sa.Column("old_symbol", sa.String(32), primary_key=True),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("composite_figi", sa.String(16), nullable=True),
        sa.Column("renamed_on", sa.Date, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_symbol_aliases_symbol", "symbol_aliases", ["symbol"])
    op.add_column("tracked_symbols", sa.Column("delisted_on", sa.Date, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tracked_symbols") as batch:
        batch.drop_column("delisted_on")
    op.drop_index("ix_symbol_aliases_symbol", table_name="symbol_aliases")
    op.drop_table("symbol_aliases")
    op.drop_table("symbol_reference")
