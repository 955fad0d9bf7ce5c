"""Galleries keep their item count and last enrolment number, so identify and enroll no longer
count or scan a gallery's items (O(items) per call on large galleries).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("galleries") as batch:
        batch.add_column(sa.Column("size", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"))
    op.execute(
        "UPDATE galleries SET "
        "size = (SELECT COUNT(*) FROM gallery_items i WHERE i.tenant = galleries.tenant AND i.gallery = galleries.name), "
        "last_seq = (SELECT COALESCE(MAX(i.seq), 0) FROM gallery_items i "
        "WHERE i.tenant = galleries.tenant AND i.gallery = galleries.name)"
    )


def downgrade() -> None:
    with op.batch_alter_table("galleries") as batch:
        batch.drop_column("last_seq")
        batch.drop_column("size")
