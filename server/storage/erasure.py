"""Erasure of subjects from the SQL store: every anchor and gallery item with one of the ids."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from convergent.server.errors import InvalidInput
from convergent.server.records import BeforeCommit, ErasureReport, GalleryChange
from convergent.server.storage import anchor_blocks, blocks
from convergent.server.storage.gallery_store import GALLERY_BLOCKS, GalleryStore, record_gallery_change
from convergent.server.storage.schema import anchor_ids, fits, gallery_item_ids

if TYPE_CHECKING:
    from convergent.server.storage.sql import SqlStore

ID_BATCH = blocks.ID_BATCH


def erase(store: SqlStore, tenant: str, ids: list[str], before_commit: BeforeCommit | None = None) -> ErasureReport:
    """Delete every anchor (any model, any set) and gallery item with one of ``ids`` in one
    transaction; changed anchor sets get a new (destructive) data version, changed
    galleries a new version (``before_commit`` sees each gallery's change). Labelled
    calibration pairs hold no ids and are not touched."""
    if not ids:
        raise InvalidInput("give the ids to erase", reason="EMPTY_INPUT", field="ids")
    ids = list(dict.fromkeys(ids))
    with store._write() as conn:
        sets: set[str] = set()
        removed: dict[str, list[str]] = {}  # gallery -> its erased items
        anchors_deleted = items_deleted = 0
        for start in range(0, len(ids), ID_BATCH):
            chunk = ids[start : start + ID_BATCH]
            key = (anchor_ids.c.tenant == tenant) & anchor_ids.c.anchor_id.in_(chunk)
            found = conn.execute(
                sa.select(anchor_ids.c.anchor_set, anchor_ids.c.model, anchor_ids.c.anchor_id, anchor_ids.c.block_id,
                          anchor_ids.c.slot, anchor_ids.c.written_version).where(key)
            ).all()
            conn.execute(anchor_ids.delete().where(key))
            slots: dict[tuple[str, str], list[tuple[str, int, int, int]]] = {}
            for anchor_set, model, anchor_id, block_id, slot, version in found:
                slots.setdefault((anchor_set, model), []).append((anchor_id, block_id, slot, version))
            for (anchor_set, model), released in slots.items():
                anchor_blocks.release_slots(conn, tenant, anchor_set, model, released)
            sets |= {anchor_set for anchor_set, _ in slots}
            anchors_deleted += len(found)
            items = gallery_item_ids.c
            item_key = (items.tenant == tenant) & items.item_id.in_(chunk)
            freed: dict[str, list[tuple[int, int, int]]] = {}
            for gallery, item, seq, block_id, slot in conn.execute(
                sa.select(items.gallery, items.item_id, items.seq, items.block_id, items.slot).where(item_key)
            ):
                removed.setdefault(gallery, []).append(item)
                freed.setdefault(gallery, []).append((block_id, slot, blocks.slot_term(item, slot, seq)))
            items_deleted += conn.execute(gallery_item_ids.delete().where(item_key)).rowcount
            for gallery, freed_slots in freed.items():
                blocks.release(conn, GALLERY_BLOCKS, (tenant, gallery), freed_slots)
        for anchor_set in sorted(sets):
            store._bump_version(conn, tenant, anchor_set, destructive=True)
        changed_galleries = sorted(removed)
        before = {name: store.galleries.record_in(conn, tenant, name) for name in changed_galleries}
        for name in changed_galleries:
            record_gallery_change(conn, tenant, name, -len(removed[name]))
        if before_commit is not None:
            for name in changed_galleries:
                before_commit(GalleryChange(
                    before[name], store.galleries.record_in(conn, tenant, name),
                    GalleryStore.items_reader(conn, tenant, name), removed_ids=removed[name],
                ))
        stale = sorted(conn.execute(
            sa.select(fits.c.id).where(fits.c.tenant == tenant, fits.c.anchor_set.in_(sorted(sets)))
        ).scalars()) if sets else []
    return ErasureReport(
        anchors_deleted=int(anchors_deleted), gallery_items_deleted=int(items_deleted),
        anchor_sets_changed=sorted(sets), galleries_changed=sorted(changed_galleries), stale_fits=stale,
    )
