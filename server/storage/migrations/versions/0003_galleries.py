"""Galleries, their items, labelled verification pairs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "galleries",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("index_kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "gallery_items",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("gallery", sa.String(128), primary_key=True),
        sa.Column("item_id", sa.String(4096), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant", "gallery"], ["galleries.tenant", "galleries.name"], ondelete="CASCADE"
        ),
    )
    op.create_table(
        "calibrations",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("a_model", sa.String(128), primary_key=True),
        sa.Column("b_model", sa.String(128), primary_key=True),
        sa.Column("a_version", sa.Integer, nullable=False),
        sa.Column("b_version", sa.Integer, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("a", sa.LargeBinary, nullable=False),
        sa.Column("b", sa.LargeBinary, nullable=False),
        sa.Column("same", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("calibrations")
    op.drop_table("gallery_items")
    op.drop_table("galleries")
