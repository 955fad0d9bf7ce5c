"""Models, model versions, anchor sets and anchors.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("normalize", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("last_version", sa.Integer, nullable=False),
    )
    op.create_table(
        "anchor_sets",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("data_version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "anchors",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("anchor_set", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("anchor_id", sa.String(4096), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("written_version", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant", "model"], ["models.tenant", "models.name"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant", "anchor_set"],
            ["anchor_sets.tenant", "anchor_sets.name"],
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_anchors_model", "anchors", ["tenant", "model", "anchor_set"])


def downgrade() -> None:
    op.drop_index("ix_anchors_model", table_name="anchors")
    op.drop_table("anchors")
    op.drop_table("anchor_sets")
    op.drop_table("model_versions")
    op.drop_table("models")
