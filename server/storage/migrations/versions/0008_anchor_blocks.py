"""Anchors in blocks: one row per block of vectors (``anchor_blocks``) and an id index
(``anchor_ids``: id -> block, slot) instead of one row per anchor with its vector (``anchors``,
now a read-only view of the previous shape). Stored pair statistics get a ``products`` column.

The rows of each (tenant, set, model) are copied in one pass in primary-key order (pages of
4,096, bounded memory), grouped into blocks by the data version that wrote them, so
``written_after`` reads and every ``written_version`` stay as they were; the bytes of every
vector are copied unchanged.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BLOCK_BYTES = 2 * 1024 * 1024  # as server/storage/anchor_blocks.py when this was written
PAGE = 4096
PENDING_BYTES = 64 * 1024 * 1024  # partial blocks buffered across written versions, at most
# The previous shape, one row per anchor with its vector, as a read-only view (schema.py).
ANCHORS_VIEW_SQL = (
    "CREATE VIEW anchors AS SELECT i.tenant, i.anchor_set, i.model, i.anchor_id, "
    "substr(b.vectors, i.slot * (length(b.vectors) / b.rows) + 1, length(b.vectors) / b.rows) AS vector, "
    "i.written_version FROM anchor_ids i JOIN anchor_blocks b ON b.tenant = i.tenant "
    "AND b.anchor_set = i.anchor_set AND b.model = i.model AND b.block_id = i.block_id"
)


def _fks() -> list:
    return [
        sa.ForeignKeyConstraint(["tenant", "model"], ["models.tenant", "models.name"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["tenant", "anchor_set"], ["anchor_sets.tenant", "anchor_sets.name"], ondelete="CASCADE"
        ),
    ]


def _key_columns() -> list:
    return [sa.Column(name, sa.String(128), primary_key=True) for name in ("tenant", "anchor_set", "model")]


def _groups(conn: sa.Connection, table: str) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in conn.execute(sa.text(
        f"SELECT DISTINCT tenant, anchor_set, model FROM {table} ORDER BY tenant, anchor_set, model"
    ))]


def upgrade() -> None:
    # Stored pair statistics say which products they hold (full, or cross for unit matching).
    with op.batch_alter_table("pair_stats") as batch:
        batch.add_column(sa.Column("products", sa.String(8), nullable=False, server_default="full"))
    op.create_table(
        "anchor_blocks",
        *_key_columns(),
        sa.Column("block_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("written_version", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("live", sa.Integer, nullable=False),
        sa.Column("vectors", sa.LargeBinary, nullable=False),
        *_fks(),
    )
    op.create_index("ix_anchor_blocks_model", "anchor_blocks", ["tenant", "model", "anchor_set"])
    op.create_table(
        "anchor_ids",
        *_key_columns(),
        sa.Column("anchor_id", sa.String(4096), primary_key=True),
        sa.Column("block_id", sa.BigInteger, nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("written_version", sa.BigInteger, nullable=False),
        *_fks(),
        sa.ForeignKeyConstraint(
            ["tenant", "anchor_set", "model", "block_id"],
            ["anchor_blocks.tenant", "anchor_blocks.anchor_set", "anchor_blocks.model", "anchor_blocks.block_id"],
        ),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    blocks = sa.table(
        "anchor_blocks", *(sa.column(c) for c in (
            "tenant", "anchor_set", "model", "block_id", "written_version", "rows", "live", "vectors"))
    )
    index = sa.table(
        "anchor_ids", *(sa.column(c) for c in (
            "tenant", "anchor_set", "model", "anchor_id", "block_id", "slot", "written_version"))
    )
    # One pass per (tenant, set, model) in primary-key order (keyset pages: no sort), rows
    # buffered per written version until a block is full; at most PENDING_BYTES buffered.
    page_query = sa.text(
        "SELECT anchor_id, vector, written_version FROM anchors "
        "WHERE tenant = :t AND anchor_set = :s AND model = :m AND anchor_id > :i "
        "ORDER BY anchor_id LIMIT :n"
    )
    for tenant, anchor_set, model in _groups(conn, "anchors"):
        block_id, last = 0, ""
        pending: dict[int, list[tuple[str, bytes]]] = {}

        def flush(version: int) -> None:
            nonlocal block_id
            part = pending.pop(version)
            block_id += 1
            conn.execute(blocks.insert().values(
                tenant=tenant, anchor_set=anchor_set, model=model, block_id=block_id, written_version=version,
                rows=len(part), live=len(part), vectors=b"".join(v for _, v in part),
            ))
            conn.execute(index.insert(), [
                {"tenant": tenant, "anchor_set": anchor_set, "model": model, "anchor_id": anchor_id,
                 "block_id": block_id, "slot": slot, "written_version": version}
                for slot, (anchor_id, _) in enumerate(part)
            ])

        while rows := conn.execute(page_query, {"t": tenant, "s": anchor_set, "m": model, "i": last, "n": PAGE}).all():
            last = rows[-1][0]
            for anchor_id, vector, version in rows:
                vector = bytes(vector)
                pending.setdefault(int(version), []).append((anchor_id, vector))
                if len(pending[int(version)]) >= max(1, BLOCK_BYTES // max(1, len(vector))):
                    flush(int(version))
            while sum(len(p) * len(p[0][1]) for p in pending.values()) > PENDING_BYTES:
                flush(max(pending, key=lambda v: len(pending[v])))
        for version in sorted(pending):
            flush(version)
    op.drop_index("ix_anchors_model", table_name="anchors")
    op.drop_table("anchors")
    op.execute(ANCHORS_VIEW_SQL)


def downgrade() -> None:
    op.create_table(
        "anchors_rows",
        *_key_columns(),
        sa.Column("anchor_id", sa.String(4096), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("written_version", sa.BigInteger, nullable=False),
        *_fks(),
    )
    conn = op.get_bind()
    op.execute("DROP VIEW anchors")
    rows_table = sa.table("anchors_rows", *(sa.column(c) for c in (
        "tenant", "anchor_set", "model", "anchor_id", "vector", "written_version")))
    for tenant, anchor_set, model in _groups(conn, "anchor_blocks"):
        key = {"t": tenant, "s": anchor_set, "m": model}
        slots: dict[int, list[tuple]] = {}
        for anchor_id, block_id, slot, version in conn.execute(sa.text(
            "SELECT anchor_id, block_id, slot, written_version FROM anchor_ids "
            "WHERE tenant = :t AND anchor_set = :s AND model = :m"), key):
            slots.setdefault(int(block_id), []).append((anchor_id, int(slot), version))
        for block_id, ids in sorted(slots.items()):
            data, count = conn.execute(sa.text(
                "SELECT vectors, rows FROM anchor_blocks WHERE tenant = :t AND anchor_set = :s AND model = :m "
                "AND block_id = :b"), {**key, "b": block_id}).one()
            row_bytes = len(data) // count
            conn.execute(rows_table.insert(), [
                {"tenant": tenant, "anchor_set": anchor_set, "model": model, "anchor_id": i,
                 "vector": bytes(data[slot * row_bytes : (slot + 1) * row_bytes]), "written_version": v}
                for i, slot, v in ids
            ])
    op.drop_table("anchor_ids")
    op.drop_index("ix_anchor_blocks_model", table_name="anchor_blocks")
    op.drop_table("anchor_blocks")
    op.rename_table("anchors_rows", "anchors")
    op.create_index("ix_anchors_model", "anchors", ["tenant", "model", "anchor_set"])
    with op.batch_alter_table("pair_stats") as batch:
        batch.drop_column("products")
