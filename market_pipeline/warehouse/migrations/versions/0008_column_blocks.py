"""column blocks: each symbol's older bars per year as Arrow IPC bytes, kept in step by triggers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10

Builds the blocks of every bar already stored (every symbol sealed through its last bar): on SQLite
about 5 s a million bars, once.
"""

import sqlalchemy as sa
from alembic import op

from market_pipeline.warehouse import columns

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "column_blocks",
        sa.Column("dataset", sa.String(32), primary_key=True),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("year", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("format", sa.Integer, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "column_seals",
        sa.Column("dataset", sa.String(32), primary_key=True),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("sealed_through", sa.Date, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("row_mark", sa.BigInteger, nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "column_dirty",
        sa.Column("dataset", sa.String(32), primary_key=True),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("year", sa.Integer, primary_key=True, autoincrement=False),
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # incompressible bytes: stored out of line without a compression attempt
        op.execute("ALTER TABLE column_blocks ALTER COLUMN payload SET STORAGE EXTERNAL")
    for statement in columns.trigger_sql(columns.OHLCV, bind.dialect.name):
        op.execute(statement)
    columns.rebuild_all(bind, columns.OHLCV)


def downgrade() -> None:
    for statement in columns.drop_trigger_sql(columns.OHLCV, op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("column_dirty")
    op.drop_table("column_seals")
    op.drop_table("column_blocks")
