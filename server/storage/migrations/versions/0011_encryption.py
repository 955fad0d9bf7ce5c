"""Envelope encryption at rest: ``data_keys`` (wrapped per-tenant data keys), ``store_settings``
(whether the store is encrypted, and the fingerprint of its key-encryption key), and a
``key_version`` column on every table of sealed bytes (NULL: in clear, as every existing row
is; ``convergent encrypt`` seals them).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SEALED_TABLES = ("anchor_blocks", "gallery_blocks", "fit_arrays", "pair_stats", "calibrations")


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("kek_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("retired_at", sa.Float, nullable=True),
    )
    op.create_table(
        "store_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    for table in SEALED_TABLES:
        op.add_column(table, sa.Column("key_version", sa.Integer, nullable=True))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM store_settings WHERE name = 'encryption'")).scalar():
        raise RuntimeError("this store is encrypted: an earlier convergent cannot read it (decrypt it first)")
    for table in SEALED_TABLES:  # SQLite >= 3.35 and PostgreSQL drop a column in place
        op.execute(f"ALTER TABLE {table} DROP COLUMN key_version")
    op.drop_table("store_settings")
    op.drop_table("data_keys")
