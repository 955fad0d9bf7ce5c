"""Checksums on every stored vector block: a ``checksum`` column (CRC-32 of the bytes) on
``anchor_blocks``, ``gallery_blocks``, ``fit_arrays`` and ``calibrations``, and an
``ids_digest`` on the two block tables (the sum of ``blocks.slot_term`` over the ids that
point into the block), filled for every existing row from the data as it is now (one block
at a time: bounded memory).

A store damaged before this migration is summed as it is; ``convergent check`` still finds
damage that breaks the database's own structure or the counts.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import zlib

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# table -> (key columns, the byte columns summed in this order)
SUMMED = {
    "anchor_blocks": (("tenant", "anchor_set", "model", "block_id"), ("vectors",)),
    "gallery_blocks": (("tenant", "gallery", "block_id"), ("vectors",)),
    "fit_arrays": (("fit_id", "name"), ("data",)),
    "calibrations": (("tenant", "a_model", "b_model"), ("a", "b", "same")),
}
# block table -> (its id index, the index's id column, the column slot_term's seq comes from)
INDEXED = {
    "anchor_blocks": ("anchor_ids", "anchor_id", "written_version"),
    "gallery_blocks": ("gallery_item_ids", "item_id", "seq"),
}


def slot_term(item_id: str, slot: int, seq: int = 0) -> int:
    """As server/storage/blocks.py's slot_term when this was written."""
    return zlib.crc32(item_id.encode() + b"\0" + int(slot).to_bytes(8, "little", signed=True)
                      + int(seq).to_bytes(8, "little", signed=True))


def _where(table: sa.TableClause, key: tuple[str, ...], values: tuple) -> sa.ColumnElement:
    return sa.and_(*(table.c[c] == v for c, v in zip(key, values)))


def upgrade() -> None:
    conn = op.get_bind()
    for name, (key, data) in SUMMED.items():
        op.add_column(name, sa.Column("checksum", sa.BigInteger, nullable=True))
        table = sa.table(name, *(sa.column(c) for c in (*key, *data, "checksum")))
        for values in [tuple(r) for r in conn.execute(sa.select(*(table.c[c] for c in key)))]:
            parts = conn.execute(sa.select(*(table.c[c] for c in data)).where(_where(table, key, values))).one()
            total = zlib.crc32(b"".join(bytes(p) for p in parts))
            conn.execute(table.update().where(_where(table, key, values)).values(checksum=total))
    for name, (index_name, id_column, seq_column) in INDEXED.items():
        key = SUMMED[name][0]
        op.add_column(name, sa.Column("ids_digest", sa.BigInteger, nullable=True))
        blocks = sa.table(name, *(sa.column(c) for c in (*key, "ids_digest")))
        index = sa.table(index_name, *(sa.column(c) for c in (*key, id_column, "slot", seq_column)))
        seq = index.c[seq_column]
        digests: dict[tuple, int] = {}  # one pass over the id index (it has no index by block)
        for *block_key, item, slot, s in conn.execute(
            sa.select(*(index.c[c] for c in key), index.c[id_column], index.c.slot, seq)
        ):
            digests[tuple(block_key)] = digests.get(tuple(block_key), 0) + slot_term(item, slot, s)
        for values in [tuple(r) for r in conn.execute(sa.select(*(blocks.c[c] for c in key)))]:
            conn.execute(blocks.update().where(_where(blocks, key, values)).values(ids_digest=digests.get(values, 0)))


def downgrade() -> None:
    for name in INDEXED:  # SQLite >= 3.35 and PostgreSQL drop a column in place
        op.execute(f"ALTER TABLE {name} DROP COLUMN ids_digest")
    for name in SUMMED:
        op.execute(f"ALTER TABLE {name} DROP COLUMN checksum")
