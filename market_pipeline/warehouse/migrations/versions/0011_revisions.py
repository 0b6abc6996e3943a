"""revisions: superseded bar values, when bars were first stored, corporate-action states, factor changes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-14

History begins at the upgrade: each bar already stored is known since its `fetched_at` (one row of
`ohlcv_insertions` per run of consecutive dates written at the same instant), each split and dividend
in its present state since its `first_seen`.
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ohlcv_revisions",
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
        sqlite_with_rowid=False,
    )
    op.create_index("ix_ohlcv_revisions_symbol_replaced_at", "ohlcv_revisions", ["symbol", "replaced_at"])
    op.create_table(
        "ohlcv_insertions",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("stored_at", sa.DateTime, primary_key=True),
        sa.Column("first_date", sa.Date, primary_key=True),
        sa.Column("last_date", sa.Date, nullable=False),
        sa.Column("bars", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "corporate_action_revisions",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("provider_id", sa.String(128), primary_key=True),
        sa.Column("replaced_at", sa.DateTime, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("stored_at", sa.DateTime, nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "adjustment_factor_changes",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("changed_at", sa.DateTime, primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "revision_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("began_at", sa.DateTime, nullable=False),
        sa.Column("upgraded_at", sa.DateTime, nullable=True),
        sa.Column("kept_from", sa.DateTime, nullable=True),
    )
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # the bars already stored: one insertion per run of consecutive dates of a symbol written at the
    # same instant (a first load is one run, each later day's bars another)
    stamp = (
        "CASE WHEN length(fetched_at) = 19 THEN replace(fetched_at, 'T', ' ') || '.000000' "
        "ELSE substr(replace(fetched_at, 'T', ' '), 1, 26) END"
        if sqlite else "fetched_at"
    )
    op.execute(
        "INSERT INTO ohlcv_insertions (symbol, stored_at, first_date, last_date, bars) "
        "WITH marked AS ("
        f"  SELECT symbol, date, {stamp} AS stamp, "
        f"         CASE WHEN lag({stamp}) OVER w = {stamp} THEN 0 ELSE 1 END AS starts "
        "  FROM ohlcv_daily WINDOW w AS (PARTITION BY symbol ORDER BY date)"
        "), runs AS ("
        "  SELECT symbol, date, stamp, sum(starts) OVER (PARTITION BY symbol ORDER BY date ROWS UNBOUNDED PRECEDING) AS run "
        "  FROM marked"
        ") SELECT symbol, min(stamp), min(date), max(date), count(*) FROM runs GROUP BY symbol, run"
    )
    from market_pipeline.warehouse.timestamps import utcnow

    now = utcnow()
    earliest = bind.exec_driver_sql(
        "SELECT min(t) FROM (SELECT min(stored_at) AS t FROM ohlcv_insertions "
        "UNION ALL SELECT min(first_seen) FROM splits UNION ALL SELECT min(first_seen) FROM dividends) e"
    ).scalar()
    if isinstance(earliest, str):
        earliest = dt.datetime.fromisoformat(earliest)
    began = min(earliest, now) if earliest is not None else now
    history = sa.table(
        "revision_history", sa.column("id", sa.Integer), sa.column("began_at", sa.DateTime),
        sa.column("upgraded_at", sa.DateTime), sa.column("kept_from", sa.DateTime),
    )
    op.bulk_insert(history, [{"id": 1, "began_at": began, "upgraded_at": now if earliest is not None else None, "kept_from": None}])


def downgrade() -> None:
    for name in ("revision_history", "adjustment_factor_changes", "corporate_action_revisions", "ohlcv_insertions"):
        op.drop_table(name)
    op.drop_index("ix_ohlcv_revisions_symbol_replaced_at", table_name="ohlcv_revisions")
    op.drop_table("ohlcv_revisions")
