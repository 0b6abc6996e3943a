"""symbol_check_state: each symbol's checks folded over its older bars, so a refresh reads only the new ones

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "symbol_check_state",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("cut", sa.Date, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("basis", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("computed_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("symbol_check_state")
