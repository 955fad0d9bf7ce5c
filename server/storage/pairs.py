"""Reading paired anchors: two models' anchors in one anchor set, joined by id on the id index,
their vectors gathered from the blocks (``anchor_blocks``).

All functions take a connection so that a caller can read a consistent snapshot (one read
transaction; SQLite WAL gives snapshot isolation to readers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from convergent.server.storage.anchor_blocks import gather
from convergent.server.storage.schema import anchor_ids, anchor_sets

ROWS_PER_BATCH = 4096  # index rows per fetch
WINDOW_ROWS = 8192  # pairs per batch of iter_pairs, at least (whole source blocks)


@dataclass(frozen=True)
class SetVersion:
    data_version: int       # 0 when the set does not exist
    rewritten_version: int  # last version that deleted or replaced anchors


def set_version(conn: sa.Connection, tenant: str, anchor_set: str) -> SetVersion:
    row = conn.execute(
        sa.select(anchor_sets.c.data_version, anchor_sets.c.rewritten_version).where(
            anchor_sets.c.tenant == tenant, anchor_sets.c.name == anchor_set
        )
    ).first()
    return SetVersion(0, 0) if row is None else SetVersion(int(row[0]), int(row[1]))


def _pair_query(tenant: str, anchor_set: str, source: str, target: str,
                written_at_most: int | None = None) -> tuple[sa.Select, sa.Alias, sa.Alias]:
    """(id, source block, source slot, target block, target slot) of every pair, joined on the id
    index; ``written_at_most=v``: only pairs whose both sides were written at data version ``v``
    or before (the pairs a fit at ``v`` saw, those still stored)."""
    a, b = anchor_ids.alias("a"), anchor_ids.alias("b")
    query = (
        sa.select(a.c.anchor_id, a.c.block_id, a.c.slot, b.c.block_id, b.c.slot)
        .select_from(
            a.join(
                b,
                (b.c.tenant == a.c.tenant)
                & (b.c.anchor_set == a.c.anchor_set)
                & (b.c.anchor_id == a.c.anchor_id)
                & (b.c.model == target),
            )
        )
        .where(a.c.tenant == tenant, a.c.anchor_set == anchor_set, a.c.model == source)
    )
    if written_at_most is not None:
        query = query.where(a.c.written_version <= written_at_most, b.c.written_version <= written_at_most)
    return query, a, b


def _raw_cursor(conn: sa.Connection, query: sa.Select):  # noqa: ANN202
    """The query run on the connection's own DBAPI cursor (same transaction), for SQLite;
    None for other databases. Rows then come as plain tuples without SQLAlchemy's per-row
    processing, which costs more than SQLite's own fetch for 100k-row reads."""
    if conn.dialect.name != "sqlite":
        return None
    compiled = query.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    cursor = conn.connection.dbapi_connection.cursor()
    cursor.execute(str(compiled), [params[name] for name in compiled.positiontup or ()])
    return cursor


def _rows(conn: sa.Connection, query: sa.Select, raw: bool = True) -> Iterator[list[tuple]]:
    """The query's rows in lists of up to ROWS_PER_BATCH plain tuples (``raw``: on SQLite's own
    cursor; not for queries with expanding IN parameters)."""
    cursor = _raw_cursor(conn, query) if raw else None
    if cursor is None:
        result = conn.execute(query)
        while rows := result.fetchmany(ROWS_PER_BATCH):
            yield [tuple(r) for r in rows]
        return
    try:
        while rows := cursor.fetchmany(ROWS_PER_BATCH):
            yield rows
    finally:
        cursor.close()


def pair_ids(conn: sa.Connection, tenant: str, anchor_set: str, source: str, target: str,
             written_at_most: int | None = None) -> list[str]:
    """Ids embedded by both models in the set (``written_at_most``: as :func:`_pair_query`), sorted."""
    query, a, _ = _pair_query(tenant, anchor_set, source, target, written_at_most)
    query = query.with_only_columns(a.c.anchor_id).order_by(a.c.anchor_id)
    return [row[0] for rows in _rows(conn, query) for row in rows]


class _Gather:
    """Vectors of the pairs whose slots it is given, read block by block.

    ``reuse=True``: every call fills the same two buffers (grown as needed), so the arrays it
    returned last time are overwritten: for a pass that consumes each batch before the next."""

    def __init__(self, conn: sa.Connection, tenant: str, anchor_set: str, source: str, target: str, d_x: int, d_y: int,
                 reuse: bool = False) -> None:
        self.conn, self.tenant, self.anchor_set = conn, tenant, anchor_set
        self.sides = ((source, d_x), (target, d_y))
        self.buffers: list[np.ndarray | None] = [None, None] if reuse else []

    def _buffer(self, side: int, rows: int) -> np.ndarray | None:
        if not self.buffers:
            return None
        buf = self.buffers[side]
        if buf is None or buf.shape[0] < rows:
            buf = self.buffers[side] = np.empty((rows, self.sides[side][1]), dtype=np.float32)
        return buf

    def __call__(self, rows: list[tuple]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """rows of (id, source block, source slot, target block, target slot) -> (ids, X, Y)."""
        slots = np.array([r[1:] for r in rows], dtype=np.int64).reshape(len(rows), 4)
        X, Y = (
            gather(self.conn, self.tenant, self.anchor_set, model, dim, slots[:, 2 * k], slots[:, 2 * k + 1],
                   out=self._buffer(k, len(rows)))
            for k, (model, dim) in enumerate(self.sides)
        )
        return [r[0] for r in rows], X, Y


def iter_pairs(
    conn: sa.Connection,
    tenant: str,
    anchor_set: str,
    source: str,
    target: str,
    d_x: int,
    d_y: int,
    written_after: int = 0,
    written_at_most: int | None = None,
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """Batches of (ids, X (b, d_x) float32, Y (b, d_y) float32) of paired anchors, in the
    order of the source's blocks (not by id): each batch is about :data:`WINDOW_ROWS` pairs
    of whole source blocks, and each block of either side is read once per batch. X and Y
    are views of two buffers that the next batch overwrites: copy the rows you keep.

    ``written_after=v`` keeps only pairs with a side written after data version ``v``;
    ``written_at_most=v`` only pairs with both sides written at ``v`` or before.
    """
    query, a, b = _pair_query(tenant, anchor_set, source, target, written_at_most)
    if written_after:
        query = query.where(sa.or_(a.c.written_version > written_after, b.c.written_version > written_after))
    read = _Gather(conn, tenant, anchor_set, source, target, d_x, d_y, reuse=True)
    window: list[tuple] = []
    for rows in _rows(conn, query.order_by(a.c.block_id, a.c.slot)):
        for row in rows:
            if len(window) >= WINDOW_ROWS and row[1] != window[-1][1]:
                yield read(window)
                window = []
            window.append(row)
    if window:
        yield read(window)


def pairs_by_id(
    conn: sa.Connection,
    tenant: str,
    anchor_set: str,
    source: str,
    target: str,
    d_x: int,
    d_y: int,
    ids: Sequence[str],
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The pairs of the given ids (those present), sorted by id: (ids, X, Y)."""
    query, a, _ = _pair_query(tenant, anchor_set, source, target)
    rows: list[tuple] = []
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        for part in _rows(conn, query.where(a.c.anchor_id.in_(chunk)), raw=False):
            rows += part
    rows.sort(key=lambda r: r[0])
    return _Gather(conn, tenant, anchor_set, source, target, d_x, d_y)(rows)


class SqlPairReader:
    """The (source, target) pairs of one anchor set, read inside one transaction (snapshot)."""

    def __init__(self, conn: sa.Connection, tenant: str, anchor_set: str, source: str, target: str, d_x: int, d_y: int) -> None:
        self._conn, self._args = conn, (tenant, anchor_set, source, target)
        self.d_x, self.d_y = d_x, d_y

    def version(self) -> SetVersion:
        return set_version(self._conn, *self._args[:2])

    def pair_ids(self, written_at_most: int | None = None) -> list[str]:
        return pair_ids(self._conn, *self._args, written_at_most=written_at_most)

    def iter_pairs(self, written_after: int = 0, written_at_most: int | None = None,
                   ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        return iter_pairs(self._conn, *self._args, self.d_x, self.d_y, written_after=written_after,
                          written_at_most=written_at_most)

    def pairs_by_id(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        return pairs_by_id(self._conn, *self._args, self.d_x, self.d_y, ids)
