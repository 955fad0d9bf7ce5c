"""Stored statistics of an anchor set's pairs (see ``schema.pair_stats``)."""

from __future__ import annotations

import io
import time

import numpy as np
import sqlalchemy as sa

from convergent.server.errors import DataLoss
from convergent.server.storage import db, envelope
from convergent.server.storage.schema import anchor_sets, pair_stats

# Larger statistics (d_x, d_y of several thousand) stay in memory only: a row this size is
# already ~6 s of writing on a slow disk, and PostgreSQL's bytea stops at 1 GB.
MAX_STORED_BYTES = 256 * 1024 * 1024

PairKey = tuple[str, str, int, str, int]  # (anchor set, source, source version, target, target version)


def _where(tenant: str, key: PairKey) -> sa.ColumnElement:
    anchor_set, source, source_version, target, target_version = key
    c = pair_stats.c
    return sa.and_(
        c.tenant == tenant, c.anchor_set == anchor_set, c.source == source, c.source_version == source_version,
        c.target == target, c.target_version == target_version,
    )


def stats_place(key: PairKey, data_version: int, n: int, products: str) -> envelope.Place:
    """Where a pair's stored statistics belong (the associated data of their sealed bytes)."""
    anchor_set, source, source_version, target, target_version = key
    return ("pair_stats", anchor_set, source, int(source_version), target, int(target_version), int(data_version), int(n),
            products)


def delete_for_set(conn: sa.Connection, tenant: str, anchor_set: str) -> None:
    """Inside the transaction that deletes or replaces anchors of the set."""
    conn.execute(pair_stats.delete().where(pair_stats.c.tenant == tenant, pair_stats.c.anchor_set == anchor_set))


class PairStatsStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def load(self, tenant: str, key: PairKey) -> tuple[int, int, dict[str, np.ndarray]] | None:
        """(data version, n, arrays) stored for the pair, or None."""
        c = pair_stats.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(c.data_version, c.n, c.arrays, c.products, c.key_version)
                               .where(_where(tenant, key))).first()
            if row is None:
                return None
            data = envelope.of(conn).open(
                conn, tenant, stats_place(key, row.data_version, row.n, row.products), row.arrays, row.key_version,
                lambda detail: DataLoss(f"the stored pair statistics of {key[1]} -> {key[3]} in anchor set {key[0]!r} "
                                        f"(tenant {tenant!r}) are damaged: {detail}; delete and upload the set's "
                                        "anchors again, or restore a backup"))
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return int(row.data_version), int(row.n), {name: npz[name] for name in npz.files}

    def save(self, tenant: str, key: PairKey, data_version: int, n: int, arrays: dict[str, np.ndarray],
             products: str = "full") -> bool:
        """Store statistics computed at ``data_version``, unless the set was rewritten after that
        version or newer statistics are stored already (or full ones of the same version, when
        these are cross products only); True if stored."""
        if sum(a.nbytes for a in arrays.values()) > MAX_STORED_BYTES:
            return False
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
        with db.write_connection(self.engine) as conn, conn.begin():
            rewritten = conn.execute(sa.select(anchor_sets.c.rewritten_version).where(
                anchor_sets.c.tenant == tenant, anchor_sets.c.name == key[0])).scalar()
            if rewritten is None or rewritten > data_version:
                return False  # the set is gone or lost anchors since: these statistics include them
            stored = conn.execute(sa.select(pair_stats.c.data_version, pair_stats.c.products)
                                  .where(_where(tenant, key))).first()
            if stored is not None and (stored[0] > data_version or (
                    stored[0] == data_version and (products == "cross" or stored[1] == "full"))):
                return False
            conn.execute(pair_stats.delete().where(_where(tenant, key)))
            anchor_set, source, source_version, target, target_version = key
            sealed, key_version = envelope.of(conn).seal(conn, tenant, stats_place(key, data_version, n, products),
                                                         buffer.getvalue())
            conn.execute(pair_stats.insert().values(
                tenant=tenant, anchor_set=anchor_set, source=source, source_version=source_version, target=target,
                target_version=target_version, data_version=data_version, n=n, arrays=sealed,
                products=products, key_version=key_version,
                saved_at=time.time(),
            ))
        return True
