"""Use cases of a tenant as a whole: erasure of subjects across anchors and galleries, usage."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from convergent.server.errors import InvalidInput
from convergent.server.registry.galleries import Galleries
from convergent.server.storage.gallery_store import bump_gallery_versions
from convergent.server.storage.schema import anchors, fits, gallery_items
from convergent.server.storage.sql import SqlStore, stored_vectors
from convergent.server.storage import db

ID_BATCH = 500


@dataclass(frozen=True)
class ErasureReport:
    anchors_deleted: int
    gallery_items_deleted: int
    anchor_sets_changed: list[str]
    galleries_changed: list[str]
    stale_fits: list[str]


class Tenancy:
    def __init__(self, store: SqlStore, galleries: Galleries) -> None:
        self.store = store
        self.galleries = galleries

    def erase(self, tenant: str, ids: list[str]) -> ErasureReport:
        """Delete every anchor (any model, any set) and gallery item with one of ``ids``, in one
        transaction; the changed anchor sets get a new data version, so their fits turn stale.

        Labelled calibration pairs hold vectors without ids and are not touched.
        """
        if not ids:
            raise InvalidInput("give the ids to erase")
        ids = list(dict.fromkeys(ids))
        with db.write_connection(self.store.engine) as conn, conn.begin():
            sets, galleries_changed = set(), set()
            anchors_deleted = items_deleted = 0
            for start in range(0, len(ids), ID_BATCH):
                chunk = ids[start : start + ID_BATCH]
                key = (anchors.c.tenant == tenant) & anchors.c.anchor_id.in_(chunk)
                sets |= set(conn.execute(sa.select(anchors.c.anchor_set).where(key).distinct()).scalars())
                anchors_deleted += conn.execute(anchors.delete().where(key)).rowcount
                item_key = (gallery_items.c.tenant == tenant) & gallery_items.c.item_id.in_(chunk)
                galleries_changed |= set(conn.execute(sa.select(gallery_items.c.gallery).where(item_key).distinct()).scalars())
                items_deleted += conn.execute(gallery_items.delete().where(item_key)).rowcount
            for anchor_set in sorted(sets):
                self.store._bump_version(conn, tenant, anchor_set, destructive=True)
            bump_gallery_versions(conn, tenant, sorted(galleries_changed))
            stale = sorted(conn.execute(
                sa.select(fits.c.id).where(fits.c.tenant == tenant, fits.c.anchor_set.in_(sorted(sets)))
            ).scalars()) if sets else []
        self.galleries.forget_indexes(tenant, sorted(galleries_changed))
        return ErasureReport(anchors_deleted, items_deleted, sorted(sets), sorted(galleries_changed), stale)

    def usage(self, tenant: str) -> int:
        """Vectors the tenant stores (anchors + gallery items)."""
        with self.store.engine.connect() as conn:
            return stored_vectors(conn, tenant)
