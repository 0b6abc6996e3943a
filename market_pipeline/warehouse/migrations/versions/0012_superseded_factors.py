"""superseded factors: each adjustment_factor_changes row keeps the factor ranges its change replaced

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Changes recorded before the upgrade keep none (NULL): a point-in-time read before them rebuilds the
factors from the events and bars known then, as it did.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("adjustment_factor_changes", sa.Column("superseded", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN on both (SQLite 3.35+): a batch copy would lose WITHOUT ROWID
    op.execute("ALTER TABLE adjustment_factor_changes DROP COLUMN superseded")
