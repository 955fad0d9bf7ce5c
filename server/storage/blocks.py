"""Vectors in blocks: one row holds the float32 vectors of many items behind a per-item id index.

A block row has key columns (which scope its ``block_id``; the first is the tenant), ``rows``
slots, ``live`` of them in use, ``vectors``: little-endian float32 (rows, dim) bytes (in an
encrypted store sealed by :mod:`~convergent.server.storage.envelope`, ``key_version`` naming the
data key), and ``checksum``: the CRC-32 of the stored bytes, written in the same statement and
verified on every read (a mismatch, or a sealed block that fails its tag, is :class:`DataLoss`
naming the object, never a silently different vector). ``ids_digest`` is the
sum of :func:`slot_term` over the block's live slots (the id each slot belongs to, and for
gallery items their enrolment number): kept by every insert and release, so a damaged id index
(an id, block or slot that changed on disk) shows as a block whose ids no longer add up
(:mod:`~convergent.server.storage.integrity`). Anchors (:mod:`anchor_blocks`)
and gallery items (:mod:`gallery_store`) are stored this way. Removing an item *releases* its
slot: the slot's bytes are zeroed in the block in the same transaction (so a removed or erased
vector is gone from the row, not only unreachable) and ``live`` drops; a block with no live
slot left is deleted.

Every function takes the caller's connection: they run inside its transaction.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from convergent.server.errors import DataLoss
from convergent.server.storage import envelope

BLOCK_BYTES = 2 * 1024 * 1024  # vector bytes per block row at most (one row: 1 slot at least)
ID_BATCH = 500  # ids / block ids per SELECT ... IN (...): far below every database's limit


def block_rows(dim: int) -> int:
    """Slots per block for vectors of ``dim`` float32 values."""
    return max(1, BLOCK_BYTES // (4 * int(dim)))


def checksum(data: bytes) -> int:
    """CRC-32 of a block's vector bytes (unsigned, < 2**32)."""
    return zlib.crc32(data)


def slot_term(item_id: str, slot: int, seq: int) -> int:
    """One slot's share of its block's ``ids_digest``: CRC-32 of (id, slot, ``seq``: the
    anchor's written version, or the gallery item's enrolment number)."""
    return zlib.crc32(item_id.encode() + b"\0" + int(slot).to_bytes(8, "little", signed=True)
                      + int(seq).to_bytes(8, "little", signed=True))


@dataclass(frozen=True)
class BlockTable:
    """A table of blocks, the names of its key columns (block ids are unique per key) and how a
    key names its object to a caller (``describe``)."""

    table: sa.Table
    key: tuple[str, ...]
    describe: Callable[[Sequence[object]], str]

    def damaged(self, key: Sequence[object], detail: str) -> DataLoss:
        """The :class:`DataLoss` of the object ``key`` names, with what is wrong and what to do."""
        return DataLoss(f"{self.describe(key)} is damaged: {detail}; it is not served. The operator should run "
                        "`convergent check --data-dir DIR` and restore from a backup")

    def verified(self, key: Sequence[object], block_id: int, data: bytes, stored: int | None) -> bytes:
        """``data`` if its CRC-32 is ``stored``; :class:`DataLoss` naming the object otherwise."""
        if stored is None or checksum(data) != int(stored):
            raise self.damaged(key, f"its vector block {block_id} "
                               + ("has no checksum" if stored is None else "fails its checksum")
                               + " (the stored bytes changed after they were written)")
        return data

    def place(self, key: Sequence[object], block_id: int) -> envelope.Place:
        """Where a block belongs, for the associated data of its sealed bytes (the tenant apart)."""
        return (self.table.name, *key[1:], int(block_id))

    def opened(self, conn: sa.Connection, key: Sequence[object], block_id: int, data: bytes, stored: int | None,
               key_version: int | None) -> bytes:
        """The clear vector bytes of a block read as (``data``, ``checksum``, ``key_version``)."""
        data = self.verified(key, block_id, data, stored)
        return envelope.of(conn).open(conn, str(key[0]), self.place(key, block_id), data, key_version,
                                      lambda detail: self.damaged(key, f"its vector block {block_id}: {detail}"))

    def where(self, key: Sequence[object]) -> sa.ColumnElement:
        if len(key) != len(self.key):
            raise ValueError(f"{self.table.name} is keyed by {self.key}, got {tuple(key)}")
        return sa.and_(*(self.table.c[name] == value for name, value in zip(self.key, key)))

    def next_block(self, conn: sa.Connection, key: Sequence[object]) -> int:
        """The next free block number of ``key`` (inside a write transaction: it stays free)."""
        last = conn.execute(sa.select(sa.func.max(self.table.c.block_id)).where(self.where(key))).scalar()
        return int(last or 0) + 1


def fetch(conn: sa.Connection, blocks: BlockTable, key: Sequence[object], block_ids: Iterable[int]) -> Iterator[tuple[int, bytes]]:
    """(block id, vector bytes) of the given blocks of ``key``, those present."""
    c = blocks.table.c
    wanted = sorted({int(b) for b in block_ids})
    for start in range(0, len(wanted), ID_BATCH):
        query = sa.select(c.block_id, c.vectors, c.checksum, c.key_version).where(
            blocks.where(key), c.block_id.in_(wanted[start : start + ID_BATCH]))
        for block_id, data, stored, key_version in conn.execute(query):
            yield int(block_id), blocks.opened(conn, key, int(block_id), data, stored, key_version)


def gather(
    conn: sa.Connection, blocks: BlockTable, key: Sequence[object], dim: int,
    block_of: np.ndarray, slot_of: np.ndarray, out: np.ndarray | None = None,
) -> np.ndarray:
    """The vectors at (block_of[i], slot_of[i]) as float32 (len(block_of), dim); each block read once.
    ``out``: a float32 (>= len(block_of), dim) buffer to fill (its first rows are returned), so
    that a pass over many batches does not fault in fresh pages for each."""
    out = np.empty((len(block_of), dim), dtype=np.float32) if out is None else out[: len(block_of)]
    if not len(block_of):
        return out
    order = np.argsort(block_of, kind="stable")
    uniq, starts = np.unique(block_of[order], return_index=True)
    bounds = dict(zip(uniq.tolist(), zip(starts.tolist(), [*starts[1:].tolist(), len(order)])))
    found = 0
    for block_id, data in fetch(conn, blocks, key, uniq.tolist()):
        start, end = bounds[block_id]
        rows = order[start:end]
        block = np.frombuffer(data, dtype="<f4").reshape(-1, dim)
        if slot_of[rows].min() < 0 or slot_of[rows].max() >= len(block):
            raise blocks.damaged(key, f"its id index points past the end of vector block {block_id}")
        first, first_slot, k = int(rows[0]), int(slot_of[rows[0]]), end - start
        if rows[-1] - first == k - 1 and slot_of[rows[-1]] - first_slot == k - 1 and (
            k < 3 or (np.all(np.diff(rows) == 1) and np.all(np.diff(slot_of[rows]) == 1))
        ):  # consecutive slots to consecutive rows (the usual case): one copy
            out[first : first + k] = block[first_slot : first_slot + k]
        else:
            out[rows] = block[slot_of[rows]]
        found += 1
    if found != len(uniq):
        raise blocks.damaged(key, f"{len(uniq) - found} of its vector blocks that its id index points to are missing")
    return out


def gather_rows(conn: sa.Connection, blocks: BlockTable, key: Sequence[object], dim: int,
                rows: Sequence[tuple]) -> tuple[list[str], np.ndarray]:
    """Index rows of (id, block, slot) -> (their ids, their vectors float32 (len(rows), dim)), in the rows' order."""
    block_of = np.array([r[1] for r in rows], dtype=np.int64)
    slot_of = np.array([r[2] for r in rows], dtype=np.int64)
    return [r[0] for r in rows], gather(conn, blocks, key, dim, block_of, slot_of)


def insert(conn: sa.Connection, blocks: BlockTable, key: Sequence[object], first_block: int, dim: int,
           data: bytes, ids: Sequence[str], seqs: Sequence[int], **columns: object) -> list[tuple[int, int]]:
    """Store float32 ``data`` (n rows of ``dim``: the vectors of ``ids``, their :func:`slot_term`
    numbers ``seqs``) in new blocks numbered from ``first_block``, each row with ``columns`` too;
    returns (block id, slot) of every row, in order."""
    per_block, row_bytes = block_rows(dim), int(dim) * 4
    n = len(data) // row_bytes
    where: list[tuple[int, int]] = []
    block_id = first_block
    sealer = envelope.of(conn)
    for start in range(0, n, per_block):
        rows = min(per_block, n - start)
        chunk, key_version = sealer.seal(conn, str(key[0]), blocks.place(key, block_id),
                                         data[start * row_bytes : (start + rows) * row_bytes])
        digest = sum(slot_term(ids[start + slot], slot, seqs[start + slot]) for slot in range(rows))
        conn.execute(blocks.table.insert().values(
            **dict(zip(blocks.key, key)), block_id=block_id, rows=rows, live=rows,
            vectors=chunk, checksum=checksum(chunk), ids_digest=digest, key_version=key_version, **columns,
        ))
        where += [(block_id, slot) for slot in range(rows)]
        block_id += 1
    return where


def release(conn: sa.Connection, blocks: BlockTable, key: Sequence[object], slots: Iterable[tuple[int, int, int]]) -> None:
    """Zero the given (block, slot, :func:`slot_term` of the id that held it)s, whose ids were
    deleted or re-pointed already, and drop
    blocks left without a live slot (a row's width is the block's clear bytes / its rows). A
    damaged block is zeroed too (an erasure never fails on damage; a sealed one is scrubbed in
    place, :func:`envelope.scrub`) but stays damaged: no checksum."""
    by_block: dict[int, list[int]] = defaultdict(list)
    terms: dict[int, int] = defaultdict(int)
    for block_id, slot, term in slots:
        by_block[int(block_id)].append(int(slot))
        terms[int(block_id)] += int(term)
    if not by_block:
        return
    c, scope = blocks.table.c, blocks.where(key)
    sealer = envelope.of(conn)
    ids = sorted(by_block)
    for start in range(0, len(ids), ID_BATCH):
        rows = conn.execute(
            sa.select(c.block_id, c.rows, c.live, c.vectors, c.checksum, c.ids_digest, c.key_version).where(
                scope, c.block_id.in_(ids[start : start + ID_BATCH]))
        ).all()
        for block_id, count, live, data, stored, digest, key_version in rows:
            freed = sorted(set(by_block[int(block_id)]))
            one = scope & (c.block_id == block_id)
            if live - len(freed) <= 0:
                conn.execute(blocks.table.delete().where(one))
                continue
            row_bytes = envelope.clear_length(len(data), key_version) // int(count)
            try:
                buffer = bytearray(blocks.opened(conn, key, int(block_id), data, stored, key_version))
                intact = True
            except DataLoss:  # damaged bytes are never re-summed nor re-sealed: scrubbed where they lie
                buffer, intact = bytearray(data), False
            for slot in freed:  # clear bytes; of a damaged block, the stored bytes where the slot lies
                envelope.scrub(buffer, None if intact else key_version, slot * row_bytes, (slot + 1) * row_bytes)
            if intact:
                vectors, key_version = sealer.seal(conn, str(key[0]), blocks.place(key, int(block_id)), bytes(buffer))
            else:
                vectors = bytes(buffer)
            conn.execute(blocks.table.update().where(one).values(
                live=live - len(freed), vectors=vectors, checksum=checksum(vectors) if intact else None,
                key_version=key_version,
                ids_digest=None if digest is None else int(digest) - terms[int(block_id)]))
