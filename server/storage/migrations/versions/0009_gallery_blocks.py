"""Gallery vectors in blocks: one row per block of enrolled vectors (``gallery_blocks``) and an
id index (``gallery_item_ids``: item -> enrolment number, block, slot) instead of one row per
item with its vector (``gallery_items``, now a read-only view of the previous shape).

The items of each gallery are copied in one pass in primary-key order (pages of 4,096,
bounded memory) into blocks of at most 2 MiB; enrolment numbers are kept, so enrolment order
(ties in search) and every gallery's ``last_seq`` stay as they were; the bytes of every vector
are copied unchanged.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BLOCK_BYTES = 2 * 1024 * 1024  # as server/storage/blocks.py when this was written
PAGE = 4096
# The previous shape, one row per item with its vector, as a read-only view (schema.py).
GALLERY_ITEMS_VIEW_SQL = (
    "CREATE VIEW gallery_items AS SELECT i.tenant, i.gallery, i.item_id, i.seq, "
    "substr(b.vectors, i.slot * (length(b.vectors) / b.rows) + 1, length(b.vectors) / b.rows) AS vector "
    "FROM gallery_item_ids i JOIN gallery_blocks b ON b.tenant = i.tenant "
    "AND b.gallery = i.gallery AND b.block_id = i.block_id"
)


def _gallery_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["tenant", "gallery"], ["galleries.tenant", "galleries.name"], ondelete="CASCADE")


def _key_columns() -> list:
    return [sa.Column(name, sa.String(128), primary_key=True) for name in ("tenant", "gallery")]


def upgrade() -> None:
    op.create_table(
        "gallery_blocks",
        *_key_columns(),
        sa.Column("block_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("live", sa.Integer, nullable=False),
        sa.Column("vectors", sa.LargeBinary, nullable=False),
        _gallery_fk(),
    )
    op.create_table(
        "gallery_item_ids",
        *_key_columns(),
        sa.Column("item_id", sa.String(4096), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("block_id", sa.BigInteger, nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        _gallery_fk(),
        sa.ForeignKeyConstraint(
            ["tenant", "gallery", "block_id"],
            ["gallery_blocks.tenant", "gallery_blocks.gallery", "gallery_blocks.block_id"],
        ),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    blocks = sa.table("gallery_blocks", *(sa.column(c) for c in ("tenant", "gallery", "block_id", "rows", "live", "vectors")))
    index = sa.table("gallery_item_ids", *(sa.column(c) for c in ("tenant", "gallery", "item_id", "seq", "block_id", "slot")))
    page_query = sa.text(
        "SELECT item_id, seq, vector FROM gallery_items WHERE tenant = :t AND gallery = :g AND item_id > :i "
        "ORDER BY item_id LIMIT :n"
    )
    galleries = [tuple(r) for r in conn.execute(sa.text(
        "SELECT DISTINCT tenant, gallery FROM gallery_items ORDER BY tenant, gallery"))]
    for tenant, gallery in galleries:
        block_id, last = 0, ""
        pending: list[tuple[str, int, bytes]] = []

        def flush() -> None:
            nonlocal block_id, pending
            block_id += 1
            conn.execute(blocks.insert().values(
                tenant=tenant, gallery=gallery, block_id=block_id, rows=len(pending), live=len(pending),
                vectors=b"".join(v for _, _, v in pending),
            ))
            conn.execute(index.insert(), [
                {"tenant": tenant, "gallery": gallery, "item_id": item, "seq": seq, "block_id": block_id, "slot": slot}
                for slot, (item, seq, _) in enumerate(pending)
            ])
            pending = []

        while rows := conn.execute(page_query, {"t": tenant, "g": gallery, "i": last, "n": PAGE}).all():
            last = rows[-1][0]
            for item, seq, vector in rows:
                vector = bytes(vector)
                if pending and len(pending[0][2]) != len(vector):
                    raise RuntimeError(f"gallery {gallery!r} of {tenant!r} holds vectors of two sizes")
                pending.append((item, int(seq), vector))
                if len(pending) >= max(1, BLOCK_BYTES // max(1, len(vector))):
                    flush()
        if pending:
            flush()
    op.drop_table("gallery_items")
    op.execute(GALLERY_ITEMS_VIEW_SQL)


def downgrade() -> None:
    op.create_table(
        "gallery_items_rows",
        *_key_columns(),
        sa.Column("item_id", sa.String(4096), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        _gallery_fk(),
    )
    op.execute(
        "INSERT INTO gallery_items_rows (tenant, gallery, item_id, seq, vector) "
        "SELECT tenant, gallery, item_id, seq, vector FROM gallery_items"
    )
    op.execute("DROP VIEW gallery_items")
    op.drop_table("gallery_item_ids")
    op.drop_table("gallery_blocks")
    op.rename_table("gallery_items_rows", "gallery_items")
