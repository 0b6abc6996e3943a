"""daily_returns read through column blocks; the SQLite watermark of the column blocks

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

Builds the blocks of every daily return already stored (on SQLite about 5 s a million rows), and on
SQLite counts the rows of ohlcv_daily and daily_returns under each seal once (about 0.1 s a million)
before the watermark is set.
"""

import sqlalchemy as sa
from alembic import op

from market_pipeline.warehouse import columns

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "column_marks",
        sa.Column("dataset", sa.String(32), primary_key=True),
        sa.Column("row_mark", sa.BigInteger, nullable=False),
    )
    bind = op.get_bind()
    for statement in columns.trigger_sql(columns.RETURNS, bind.dialect.name):
        op.execute(statement)
    columns.rebuild_all(bind, columns.RETURNS)
    for dataset in (columns.OHLCV, columns.RETURNS):
        for statement in columns.mark_sql(dataset, bind.dialect.name):
            op.execute(statement)
        columns.reset_marks(bind, dataset)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for dataset in (columns.OHLCV, columns.RETURNS):
        for statement in columns.drop_mark_sql(dataset, dialect):
            op.execute(statement)
    for statement in columns.drop_trigger_sql(columns.RETURNS, dialect):
        op.execute(statement)
    for table in ("column_blocks", "column_seals", "column_dirty"):
        op.execute(sa.text(f"DELETE FROM {table} WHERE dataset = 'daily_returns'"))
    op.drop_table("column_marks")
