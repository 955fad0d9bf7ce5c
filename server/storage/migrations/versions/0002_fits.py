"""Fits and their arrays; anchor sets remember their last destructive change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The last data version that deleted or replaced anchors: statistics cached at a version
    # at or after it can be updated incrementally with the anchors written since.
    with op.batch_alter_table("anchor_sets") as batch:
        batch.add_column(sa.Column("rewritten_version", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "fits",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("requested_method", sa.String(64), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("source_version", sa.Integer, nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("target_version", sa.Integer, nullable=False),
        sa.Column("anchor_set", sa.String(128), nullable=False),
        sa.Column("data_version", sa.BigInteger, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("warnings", sa.Text, nullable=False),
        sa.Column("converged", sa.Boolean, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_fits_route", "fits", ["tenant", "source", "target", "created_at"])
    op.create_table(
        "fit_arrays",
        sa.Column("fit_id", sa.String(64), sa.ForeignKey("fits.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("shape", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fit_arrays")
    op.drop_index("ix_fits_route", table_name="fits")
    op.drop_table("fits")
    with op.batch_alter_table("anchor_sets") as batch:
        batch.drop_column("rewritten_version")
