"""Reading paired anchors: rows of two models in one anchor set, joined by id.

All functions take a connection so that a caller can read a consistent snapshot (one read
transaction; SQLite WAL gives snapshot isolation to readers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from convergent.server.storage.schema import anchor_sets, anchors

ROWS_PER_BATCH = 4096


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


def _pair_query(tenant: str, anchor_set: str, source: str, target: str) -> tuple[sa.Select, sa.Alias, sa.Alias]:
    a, b = anchors.alias("a"), anchors.alias("b")
    query = (
        sa.select(a.c.anchor_id, a.c.vector, b.c.vector)
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
        .order_by(a.c.anchor_id)
    )
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


def pair_ids(conn: sa.Connection, tenant: str, anchor_set: str, source: str, target: str) -> list[str]:
    """Ids embedded by both models in the set, sorted."""
    query, a, _ = _pair_query(tenant, anchor_set, source, target)
    query = query.with_only_columns(a.c.anchor_id)
    cursor = _raw_cursor(conn, query)
    if cursor is None:
        return list(conn.execute(query).scalars())
    try:
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.close()


def _batches(fetchmany, d_x: int, d_y: int) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    while rows := fetchmany(ROWS_PER_BATCH):
        ids = [r[0] for r in rows]
        X = np.frombuffer(b"".join([r[1] for r in rows]), dtype="<f4").reshape(len(rows), d_x)
        Y = np.frombuffer(b"".join([r[2] for r in rows]), dtype="<f4").reshape(len(rows), d_y)
        yield ids, X, Y


def iter_pairs(
    conn: sa.Connection,
    tenant: str,
    anchor_set: str,
    source: str,
    target: str,
    d_x: int,
    d_y: int,
    written_after: int = 0,
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """Batches of (ids, X (b, d_x) float32, Y (b, d_y) float32) of paired anchors, by id.

    ``written_after=v`` keeps only pairs with a side written after data version ``v``.
    """
    query, a, b = _pair_query(tenant, anchor_set, source, target)
    if written_after:
        query = query.where(sa.or_(a.c.written_version > written_after, b.c.written_version > written_after))
    cursor = _raw_cursor(conn, query)
    if cursor is None:
        yield from _batches(conn.execution_options(stream_results=True).execute(query).fetchmany, d_x, d_y)
        return
    try:
        yield from _batches(cursor.fetchmany, d_x, d_y)
    finally:
        cursor.close()


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
    out_ids: list[str] = []
    xs, ys = [np.zeros((0, d_x), np.float32)], [np.zeros((0, d_y), np.float32)]
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        for batch_ids, X, Y in _batches(conn.execute(query.where(a.c.anchor_id.in_(chunk))).fetchmany, d_x, d_y):
            out_ids += batch_ids
            xs.append(X)
            ys.append(Y)
    order = np.argsort(np.array(out_ids, dtype=object), kind="stable") if out_ids else np.zeros(0, int)
    return [out_ids[i] for i in order], np.vstack(xs)[order], np.vstack(ys)[order]


class SqlPairReader:
    """The (source, target) pairs of one anchor set, read inside one transaction (snapshot)."""

    def __init__(self, conn: sa.Connection, tenant: str, anchor_set: str, source: str, target: str, d_x: int, d_y: int) -> None:
        self._conn, self._args = conn, (tenant, anchor_set, source, target)
        self.d_x, self.d_y = d_x, d_y

    def version(self) -> SetVersion:
        return set_version(self._conn, *self._args[:2])

    def pair_ids(self) -> list[str]:
        return pair_ids(self._conn, *self._args)

    def iter_pairs(self, written_after: int = 0) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        return iter_pairs(self._conn, *self._args, self.d_x, self.d_y, written_after=written_after)

    def pairs_by_id(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        return pairs_by_id(self._conn, *self._args, self.d_x, self.d_y, ids)
