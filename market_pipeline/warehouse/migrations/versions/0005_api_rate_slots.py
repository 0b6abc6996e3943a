"""api_rate_slots: the API plan's request budget shared by every process of a deployment

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_rate_slots",
        sa.Column("origin", sa.String(255), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("used_at", sa.Float(53), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_rate_slots")
