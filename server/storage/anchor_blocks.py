"""Anchor vectors in blocks (``schema.anchor_blocks``) behind an id index (``schema.anchor_ids``).

An upload's vectors go to new blocks of at most :data:`~convergent.server.storage.blocks.BLOCK_BYTES`
(one row each: float32 (rows, dim) bytes); every id gets one small index row -> (block, slot).
Replacing, deleting or erasing an anchor releases its slot (:func:`blocks.release`: zeroed in
the same transaction). Anchor blocks are keyed by (tenant, anchor set, model) and carry the
data version that wrote them.

Every function takes the caller's connection: they run inside its transaction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import sqlalchemy as sa

from convergent.server.storage import blocks as _blocks
from convergent.server.storage.blocks import ID_BATCH, block_rows
from convergent.server.storage.schema import anchor_blocks, anchor_ids

ANCHOR_BLOCKS = _blocks.BlockTable(
    anchor_blocks, ("tenant", "anchor_set", "model"),
    lambda key: f"anchor set {key[1]!r}, model {key[2]!r} (tenant {key[0]!r})")

__all__ = ["ANCHOR_BLOCKS", "ID_BATCH", "BlockWriter", "StoredVectors", "block_rows", "delete_all", "delete_ids",
           "fetch_blocks", "gather", "model_vectors", "release_slots"]


def fetch_blocks(
    conn: sa.Connection, tenant: str, anchor_set: str, model: str, block_ids: Iterable[int]
) -> Iterator[tuple[int, bytes]]:
    """(block id, vector bytes) of the given blocks of one (set, model), those present."""
    return _blocks.fetch(conn, ANCHOR_BLOCKS, (tenant, anchor_set, model), block_ids)


def gather(
    conn: sa.Connection, tenant: str, anchor_set: str, model: str, dim: int,
    blocks: np.ndarray, slots: np.ndarray, out: np.ndarray | None = None,
) -> np.ndarray:
    """The vectors at (blocks[i], slots[i]) of one (set, model): :func:`blocks.gather`."""
    return _blocks.gather(conn, ANCHOR_BLOCKS, (tenant, anchor_set, model), dim, blocks, slots, out)


class BlockWriter:
    """Writes the vectors of one upload into new blocks of one (set, model), inside the
    caller's write transaction (which holds the write lock: block numbers stay unique)."""

    def __init__(self, conn: sa.Connection, tenant: str, anchor_set: str, model: str, dim: int, version: int) -> None:
        self.conn, self.key, self.dim, self.version = conn, (tenant, anchor_set, model), dim, version
        self.next_block = ANCHOR_BLOCKS.next_block(conn, self.key)
        self._sqlite = conn.dialect.name == "sqlite"

    def write(self, new_ids: Sequence[str], changed_ids: Sequence[str], data: bytes) -> None:
        """Store ``data`` (float32 bytes of len(new_ids) + len(changed_ids) rows, new ids first)
        in new blocks; index the new ids, re-point the changed ids (whose old slots the caller
        releases)."""
        tenant, anchor_set, model = self.key
        where = _blocks.insert(self.conn, ANCHOR_BLOCKS, self.key, self.next_block, self.dim, data,
                               [*new_ids, *changed_ids], [self.version] * (len(new_ids) + len(changed_ids)),
                               written_version=self.version)
        if len(where) != len(new_ids) + len(changed_ids):
            raise ValueError(f"{len(where)} vectors for {len(new_ids) + len(changed_ids)} ids")
        if where:
            self.next_block = where[-1][0] + 1
        inserts = [(tenant, anchor_set, model, anchor_id, block_id, slot, self.version)
                   for anchor_id, (block_id, slot) in zip(new_ids, where)]
        updates = [{"b_id": anchor_id, "b_block": block_id, "b_slot": slot}
                   for anchor_id, (block_id, slot) in zip(changed_ids, where[len(new_ids):])]
        if inserts:
            self._insert_index(inserts)
        if updates:
            c = anchor_ids.c
            self.conn.execute(
                anchor_ids.update()
                .where(c.tenant == tenant, c.anchor_set == anchor_set, c.model == model,
                       c.anchor_id == sa.bindparam("b_id"))
                .values(block_id=sa.bindparam("b_block"), slot=sa.bindparam("b_slot"), written_version=self.version),
                updates,
            )

    def _insert_index(self, rows: list[tuple]) -> None:
        """SQLite: one driver ``executemany`` of plain tuples (SQLAlchemy's per-row parameter
        processing costs more than SQLite's insert itself); other databases: SQLAlchemy Core."""
        if self._sqlite:
            self.conn.exec_driver_sql(
                f"INSERT INTO {anchor_ids.name} (tenant, anchor_set, model, anchor_id, block_id, slot, written_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows,
            )
            return
        names = ("tenant", "anchor_set", "model", "anchor_id", "block_id", "slot", "written_version")
        self.conn.execute(anchor_ids.insert(), [dict(zip(names, r)) for r in rows])


class StoredVectors:
    """Stored vectors of one (set, model) by id, for comparing an upload with what is stored;
    keeps the last few blocks it read."""

    def __init__(self, conn: sa.Connection, tenant: str, anchor_set: str, model: str, dim: int, keep: int = 16) -> None:
        self.conn, self.key, self.row_bytes, self.keep = conn, (tenant, anchor_set, model), dim * 4, keep
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def lookup(self, ids: Sequence[str]) -> dict[str, tuple[int, int, bytes, int]]:
        """id -> (block, slot, vector bytes, written version) of the ids that are stored (at most ID_BATCH ids)."""
        tenant, anchor_set, model = self.key
        c = anchor_ids.c
        slots = self.conn.execute(
            sa.select(c.anchor_id, c.block_id, c.slot, c.written_version).where(
                c.tenant == tenant, c.anchor_set == anchor_set, c.model == model, c.anchor_id.in_(list(ids))
            )
        ).all()
        missing = {int(b) for _, b, _, _ in slots if int(b) not in self._blocks}
        for block_id, data in fetch_blocks(self.conn, tenant, anchor_set, model, missing):
            self._blocks[block_id] = bytes(data)
        out = {}
        for anchor_id, block_id, slot, version in slots:
            data = self._blocks[int(block_id)]
            self._blocks.move_to_end(int(block_id))
            out[anchor_id] = (int(block_id), int(slot), data[slot * self.row_bytes : (slot + 1) * self.row_bytes], int(version))
        while len(self._blocks) > max(self.keep, len(missing)):
            self._blocks.popitem(last=False)
        return out


def release_slots(
    conn: sa.Connection, tenant: str, anchor_set: str, model: str, slots: Iterable[tuple[str, int, int, int]]
) -> None:
    """Zero the slots of the given (anchor id, block, slot, written version)s of one (set, model),
    whose ids were deleted or re-pointed already, and drop blocks left without a live slot
    (:func:`blocks.release`)."""
    _blocks.release(conn, ANCHOR_BLOCKS, (tenant, anchor_set, model),
                    [(block, slot, _blocks.slot_term(anchor_id, slot, version)) for anchor_id, block, slot, version in slots])


def delete_ids(conn: sa.Connection, tenant: str, anchor_set: str, model: str, ids: Sequence[str]) -> int:
    """Delete the given ids of one (set, model) and release their slots; returns how many were stored."""
    c = anchor_ids.c
    key = (c.tenant == tenant) & (c.anchor_set == anchor_set) & (c.model == model)
    deleted = 0
    for start in range(0, len(ids), ID_BATCH):
        chunk = list(ids[start : start + ID_BATCH])
        slots = conn.execute(
            sa.select(c.anchor_id, c.block_id, c.slot, c.written_version).where(key, c.anchor_id.in_(chunk))).all()
        if slots:
            conn.execute(anchor_ids.delete().where(key, c.anchor_id.in_(chunk)))
            release_slots(conn, tenant, anchor_set, model, slots)
            deleted += len(slots)
    return deleted


def delete_all(conn: sa.Connection, tenant: str, anchor_set: str | None, model: str) -> int:
    """Delete every anchor of ``model`` (in ``anchor_set``, or in every set); returns how many."""
    c, b = anchor_ids.c, anchor_blocks.c
    key, block_key = (c.tenant == tenant) & (c.model == model), (b.tenant == tenant) & (b.model == model)
    if anchor_set is not None:
        key, block_key = key & (c.anchor_set == anchor_set), block_key & (b.anchor_set == anchor_set)
    deleted = conn.execute(anchor_ids.delete().where(key)).rowcount
    conn.execute(anchor_blocks.delete().where(block_key))
    return int(deleted)


def model_vectors(conn: sa.Connection, tenant: str, anchor_set: str, model: str, dim: int) -> tuple[list[str], np.ndarray]:
    """Every stored anchor of one (set, model), sorted by id: (ids, float32 (n, dim))."""
    c = anchor_ids.c
    rows = conn.execute(
        sa.select(c.anchor_id, c.block_id, c.slot)
        .where(c.tenant == tenant, c.anchor_set == anchor_set, c.model == model)
        .order_by(c.anchor_id)
    ).all()
    return _blocks.gather_rows(conn, ANCHOR_BLOCKS, (tenant, anchor_set, model), dim, rows)
