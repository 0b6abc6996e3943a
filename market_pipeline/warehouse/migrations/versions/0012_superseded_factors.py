"""superseded factors: each adjustment_factor_changes row keeps the factor ranges its change replaced

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Changes recorded before the upgrade keep none (NULL): a point-in-time read before them rebuilds the
factors from the events and bars known then, as it did. On SQLite the table becomes a rowid table:
in a WITHOUT ROWID table a payload over about 1,000 bytes spills to overflow pages, which took 2.2x
the bytes (19.5 MB against 8.9 MB for a year of 1,000 symbols' changes).
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _recreate(with_superseded: bool) -> None:
    """SQLite: the table again, with or without `superseded` (a rowid table with it), its rows copied."""
    columns = [sa.Column("symbol", sa.String(32), primary_key=True), sa.Column("changed_at", sa.DateTime, primary_key=True)]
    if with_superseded:
        columns.append(sa.Column("superseded", sa.LargeBinary, nullable=True))
    op.create_table("adjustment_factor_changes_new", *columns, **({} if with_superseded else {"sqlite_with_rowid": False}))
    op.execute(
        "INSERT INTO adjustment_factor_changes_new (symbol, changed_at) SELECT symbol, changed_at FROM adjustment_factor_changes"
    )
    op.drop_table("adjustment_factor_changes")
    op.rename_table("adjustment_factor_changes_new", "adjustment_factor_changes")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _recreate(with_superseded=True)
    else:
        op.add_column("adjustment_factor_changes", sa.Column("superseded", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _recreate(with_superseded=False)
    else:
        op.drop_column("adjustment_factor_changes", "superseded")
