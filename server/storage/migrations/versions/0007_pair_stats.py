"""Statistics of an anchor set's pairs are stored, so a restart or another replica starts warm.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pair_stats",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("anchor_set", sa.String(128), primary_key=True),
        sa.Column("source", sa.String(128), primary_key=True),
        sa.Column("source_version", sa.Integer, primary_key=True),
        sa.Column("target", sa.String(128), primary_key=True),
        sa.Column("target_version", sa.Integer, primary_key=True),
        sa.Column("data_version", sa.BigInteger, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("arrays", sa.LargeBinary, nullable=False),
        sa.Column("saved_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant", "anchor_set"], ["anchor_sets.tenant", "anchor_sets.name"], ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("pair_stats")
