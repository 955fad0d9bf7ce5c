"""The SQL store: models and anchors in one database (SQLite by default), one tenant column.

Every public method runs in its own transaction. :meth:`SqlStore.write_anchors` writes a
whole upload in one ``BEGIN IMMEDIATE`` transaction: it commits completely or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from convergent.server.errors import AlreadyExists, NotFound, SpaceMismatch
from convergent.server.records import AnchorSetRecord, BeforeCommit, ErasureReport, ModelRecord, UploadResult
from convergent.server.storage import anchor_blocks as blocks
from convergent.server.storage import db, envelope
from convergent.server.storage.guards import check_quota, ensure_wanted, stored_vectors
from convergent.server.storage.fit_store import FitStore
from convergent.server.storage.gallery_store import GalleryStore
from convergent.server.storage.integrity import Damage, DamagedObjects
from convergent.server.storage.key_rotation import KeyRotation
from convergent.server.storage.key_store import KeyStore
from convergent.server.storage.master_keys import LocalMasterKey
from convergent.server.storage.pair_stats import PairStatsStore, delete_for_set
from convergent.server.storage.pairs import SqlPairReader
from convergent.server.storage.schema import anchor_blocks, anchor_ids, anchor_sets, gallery_item_ids, model_versions, models

ID_BATCH = blocks.ID_BATCH


def _model_record(row: sa.Row) -> ModelRecord:
    return ModelRecord(
        name=row.name, dim=row.dim, version=row.version, normalize=row.normalize,
        created_at=row.created_at,
    )


class SqlStore:
    """Durable store of models and anchors behind SQLAlchemy Core."""

    def __init__(self, url: str, master_key: LocalMasterKey | None = None, keyring_file: Path | None = None,
                 locked_ok: bool = False) -> None:
        self.url = url
        self.engine = db.create_engine(url)
        db.migrate(self.engine)
        keyring_file = keyring_file or envelope.default_keyring_file(self.engine)
        self.envelope = envelope.configure(self.engine, master_key, keyring_file, locked_ok)  # see envelope.configure
        self.encrypted = self.envelope.encrypted  # stored vectors and maps are sealed (AES-256-GCM)
        self.rotation = KeyRotation(self.engine, self.envelope)
        self.fits = FitStore(self.engine)
        self.galleries = GalleryStore(self.engine)
        self.keys = KeyStore(self.engine)
        self.pair_stats = PairStatsStore(self.engine)
        self.damaged = self.galleries.damaged = DamagedObjects()

    def check(self, full: bool = False) -> list[Damage]:
        """Damage found by :func:`~convergent.server.storage.integrity.quick_check` (or, ``full``,
        :func:`~convergent.server.storage.integrity.full_check`); empty when none."""
        from convergent.server.storage.integrity import full_check, quick_check

        return (full_check if full else quick_check)(self.engine)

    def serve_damaged(self, found: list[Damage]) -> None:
        """Serve the store with the damage a check found: reads of those objects raise DataLoss."""
        self.damaged = self.galleries.damaged = DamagedObjects(found)

    def describe(self) -> str:
        """The database URL with any password hidden (for logs)."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def vector_counts(self) -> dict[str, int]:
        """Stored vectors of every tenant by kind: anchors, gallery items (for metrics)."""
        with self._read() as conn:
            return {
                kind: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar())
                for kind, table in (("anchors", anchor_ids), ("gallery_items", gallery_item_ids))
            }

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with db.write_connection(self.engine) as conn, conn.begin():
            yield conn

    # ------------------------------------------------------------------ models
    def insert_model(self, tenant: str, name: str, dim: int, normalize: bool) -> ModelRecord:
        """Register ``name``; :class:`AlreadyExists` if it is registered."""
        with self._write() as conn:
            if self._get_model(conn, tenant, name) is not None:
                raise AlreadyExists(f"model {name!r} already exists", reason="NAME_TAKEN", field="name")
            last = conn.execute(
                sa.select(model_versions.c.last_version).where(
                    model_versions.c.tenant == tenant, model_versions.c.name == name
                )
            ).scalar()
            version = (last or 0) + 1
            if last is None:
                conn.execute(model_versions.insert().values(tenant=tenant, name=name, last_version=version))
            else:
                conn.execute(
                    model_versions.update()
                    .where(model_versions.c.tenant == tenant, model_versions.c.name == name)
                    .values(last_version=version)
                )
            record = ModelRecord(
                name=name, dim=dim, version=version, normalize=normalize, created_at=time.time()
            )
            conn.execute(models.insert().values(tenant=tenant, **record.model_dump()))
            return record

    @staticmethod
    def _get_model(conn: sa.Connection, tenant: str, name: str) -> ModelRecord | None:
        row = conn.execute(
            sa.select(models).where(models.c.tenant == tenant, models.c.name == name)
        ).first()
        return None if row is None else _model_record(row)

    def get_model(self, tenant: str, name: str) -> ModelRecord:
        with self._read() as conn:
            record = self._get_model(conn, tenant, name)
        if record is None:
            raise NotFound(f"model {name!r} not found", reason="MODEL_NOT_FOUND", metadata={"name": name})
        return record

    def list_models(self, tenant: str, after: str, limit: int) -> list[ModelRecord]:
        """Models with name > ``after``, by name, at most ``limit``."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(models)
                .where(models.c.tenant == tenant, models.c.name > after)
                .order_by(models.c.name)
                .limit(limit)
            ).all()
        return [_model_record(r) for r in rows]

    def delete_model(self, tenant: str, name: str) -> int:
        """Delete the model and its anchors; returns how many anchors went with it."""
        with self._write() as conn:
            if self._get_model(conn, tenant, name) is None:
                raise NotFound(f"model {name!r} not found", reason="MODEL_NOT_FOUND", metadata={"name": name})
            affected_sets = conn.execute(
                sa.select(anchor_blocks.c.anchor_set)
                .where(anchor_blocks.c.tenant == tenant, anchor_blocks.c.model == name)
                .distinct()
            ).scalars().all()
            deleted = blocks.delete_all(conn, tenant, None, name)
            for anchor_set in affected_sets:
                self._bump_version(conn, tenant, anchor_set, destructive=True)
            conn.execute(models.delete().where(models.c.tenant == tenant, models.c.name == name))
            return int(deleted)

    # ------------------------------------------------------------------ anchors
    @staticmethod
    def _set_version(conn: sa.Connection, tenant: str, anchor_set: str) -> int | None:
        return conn.execute(
            sa.select(anchor_sets.c.data_version).where(
                anchor_sets.c.tenant == tenant, anchor_sets.c.name == anchor_set
            )
        ).scalar()

    def _bump_version(
        self, conn: sa.Connection, tenant: str, anchor_set: str, destructive: bool = False
    ) -> int:
        """+1 on the set's data version (creating the set at 1); ``destructive`` for deletes and
        overwrites, which invalidate incrementally cached statistics."""
        now = time.time()
        current = self._set_version(conn, tenant, anchor_set)
        if current is None:
            conn.execute(
                anchor_sets.insert().values(
                    tenant=tenant, name=anchor_set, data_version=1, created_at=now, updated_at=now
                )
            )
            return 1
        values = {"data_version": current + 1, "updated_at": now}
        if destructive:
            values["rewritten_version"] = current + 1
            delete_for_set(conn, tenant, anchor_set)  # stored statistics summarise the old anchors
        conn.execute(
            anchor_sets.update()
            .where(anchor_sets.c.tenant == tenant, anchor_sets.c.name == anchor_set)
            .values(**values)
        )
        return current + 1

    def write_anchors(
        self,
        tenant: str,
        anchor_set: str,
        model: ModelRecord,
        batches: Iterable[tuple[list[str], np.ndarray]],
        overwrite: bool,
        quota: int | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ) -> UploadResult:
        """Store ``(ids, float32 vectors)`` batches of ``model`` in one transaction.

        An id stored with the same bytes is left alone; with other bytes it is replaced if
        ``overwrite``, else :class:`AlreadyExists` rolls the whole upload back. Ids must be
        unique within one upload (the registry checks).

        Vectors go to new blocks (``anchor_blocks``), ids to the index; a replaced vector's old
        slot is zeroed. Fast path (measured in benchmarks/RESULTS.md): when the set holds no
        vector of this model yet, nothing can exist, so no id is looked up.
        """
        received = inserted = unchanged = overwritten = 0
        key = (anchor_ids.c.tenant == tenant) & (anchor_ids.c.anchor_set == anchor_set) & (
            anchor_ids.c.model == model.name
        )
        with self._write() as conn:
            stored = self._get_model(conn, tenant, model.name)
            if stored is None or stored.version != model.version:
                raise SpaceMismatch(
                    f"model {model.name!r} version {model.version} was deleted or replaced during the upload",
                    reason="STALE_MODEL_VERSION", metadata={"model": model.name, "got": model.version},
                )
            new_version = (self._set_version(conn, tenant, anchor_set) or 0) + 1
            if new_version == 1:  # create the set row first (foreign key of the anchors)
                self._bump_version(conn, tenant, anchor_set)
            # Nothing of this model in the set yet (always so for a new set): no lookups needed.
            # The write lock (BEGIN IMMEDIATE) keeps it so until the commit.
            empty = new_version == 1 or conn.execute(
                sa.select(sa.literal(1)).select_from(anchor_ids).where(key).limit(1)
            ).first() is None
            writer = blocks.BlockWriter(conn, tenant, anchor_set, model.name, model.dim, new_version)
            current = None if empty else blocks.StoredVectors(conn, tenant, anchor_set, model.name, model.dim)
            for ids, vectors in batches:
                received += len(ids)
                blob = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
                if current is None:
                    writer.write(ids, [], blob)
                    inserted += len(ids)
                    continue
                row_bytes = model.dim * 4
                for start in range(0, len(ids), ID_BATCH):
                    batch_ids = ids[start : start + ID_BATCH]
                    existing = current.lookup(batch_ids)
                    new_ids, new_rows, changed_ids, changed_rows, released = [], [], [], [], []
                    for offset, anchor_id in enumerate(batch_ids, start):
                        vector = blob[offset * row_bytes : (offset + 1) * row_bytes]
                        old = existing.get(anchor_id)
                        if old is None:
                            new_ids.append(anchor_id)
                            new_rows.append(vector)
                        elif old[2] == vector:
                            unchanged += 1
                        elif overwrite:
                            changed_ids.append(anchor_id)
                            changed_rows.append(vector)
                            released.append((anchor_id, old[0], old[1], old[3]))
                        else:
                            raise AlreadyExists(
                                f"anchor {anchor_id!r} of model {model.name!r} in set "
                                f"{anchor_set!r} is stored with a different vector; "
                                "set overwrite to true to replace it", reason="VECTOR_DIFFERS", field="vectors",
                                metadata={"id": anchor_id},
                            )
                    if new_ids or changed_ids:
                        writer.write(new_ids, changed_ids, b"".join(new_rows + changed_rows))
                        blocks.release_slots(conn, tenant, anchor_set, model.name, released)
                    inserted += len(new_ids)
                    overwritten += len(changed_ids)
            check_quota(conn, tenant, inserted, quota)
            if (inserted or overwritten) and new_version > 1:
                self._bump_version(conn, tenant, anchor_set, destructive=overwritten > 0)
            data_version = self._set_version(conn, tenant, anchor_set)
            total = self._count(conn, tenant, anchor_set, model.name)
            ensure_wanted(still_wanted)
        return UploadResult(
            received=received, inserted=inserted, unchanged=unchanged, overwritten=overwritten,
            total=total, data_version=int(data_version),
        )

    @staticmethod
    def _count(conn: sa.Connection, tenant: str, anchor_set: str, model: str) -> int:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(anchor_ids).where(
                    anchor_ids.c.tenant == tenant,
                    anchor_ids.c.anchor_set == anchor_set,
                    anchor_ids.c.model == model,
                )
            ).scalar()
        )

    @classmethod
    def _counted(cls, conn: sa.Connection, tenant: str, anchor_set: str, model: str) -> int:
        """:meth:`_count`, checked against the live slots of the blocks (:class:`DataLoss` if they
        differ: an id index that lost entries to a damaged page is not served)."""
        count = cls._count(conn, tenant, anchor_set, model)
        key = (tenant, anchor_set, model)
        live = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(anchor_blocks.c.live), 0))
                                .where(blocks.ANCHOR_BLOCKS.where(key))).scalar())
        if live != count:
            raise blocks.ANCHOR_BLOCKS.damaged(key, f"its id index lists {count} anchors, its blocks hold {live}")
        return count

    def count_anchors(self, tenant: str, anchor_set: str, model: str) -> int:
        """Anchors of ``model`` in ``anchor_set`` (0 if either holds none)."""
        self.damaged.refuse("anchors", tenant, anchor_set, model)
        with self._read() as conn:
            return self._counted(conn, tenant, anchor_set, model)

    def list_anchor_sets(
        self, tenant: str, after: str, limit: int, model: str | None = None, name: str | None = None
    ) -> list[AnchorSetRecord]:
        """Anchor sets with name > ``after`` (optionally only those holding ``model``, or the one ``name``), by name."""
        with self._read() as conn:
            query = sa.select(anchor_sets).where(anchor_sets.c.tenant == tenant, anchor_sets.c.name > after)
            if name is not None:
                query = query.where(anchor_sets.c.name == name)
            if model is not None:
                query = query.where(
                    sa.exists().where(
                        anchor_ids.c.tenant == tenant,
                        anchor_ids.c.anchor_set == anchor_sets.c.name,
                        anchor_ids.c.model == model,
                    )
                )
            sets = conn.execute(query.order_by(anchor_sets.c.name).limit(limit)).all()
            counts: dict[str, dict[str, int]] = {s.name: {} for s in sets}
            if sets:
                rows = conn.execute(
                    sa.select(anchor_ids.c.anchor_set, anchor_ids.c.model, sa.func.count())
                    .where(anchor_ids.c.tenant == tenant, anchor_ids.c.anchor_set.in_(list(counts)))
                    .group_by(anchor_ids.c.anchor_set, anchor_ids.c.model)
                ).all()
                for anchor_set, model_name, count in rows:
                    counts[anchor_set][model_name] = int(count)
        return [
            AnchorSetRecord(
                name=s.name, models=counts[s.name], data_version=s.data_version, updated_at=s.updated_at
            )
            for s in sets
        ]

    def delete_anchors(
        self, tenant: str, anchor_set: str, model: str, ids: list[str] | None
    ) -> tuple[int, int]:
        """Delete ``ids`` (or all) of ``model`` from the set; returns (deleted, data_version)."""
        with self._write() as conn:
            record = self._get_model(conn, tenant, model)
            if record is None:
                raise NotFound(f"model {model!r} not found", reason="MODEL_NOT_FOUND", metadata={"name": model})
            version = self._set_version(conn, tenant, anchor_set)
            if version is None:
                raise NotFound(f"anchor set {anchor_set!r} not found", reason="ANCHOR_SET_NOT_FOUND", metadata={"name": anchor_set})
            if ids is None:
                deleted = blocks.delete_all(conn, tenant, anchor_set, model)
            else:
                deleted = blocks.delete_ids(conn, tenant, anchor_set, model, ids)
            if deleted:
                version = self._bump_version(conn, tenant, anchor_set, destructive=True)
            return int(deleted), int(version)

    # ------------------------------------------------------------------ pairs, tenant-wide
    @contextmanager
    def read_pairs(
        self, tenant: str, anchor_set: str, source: ModelRecord, target: ModelRecord
    ) -> Iterator[SqlPairReader]:
        """A reader of the (source, target) pairs of one anchor set, all from one snapshot
        (:class:`DataLoss` when either model's id index does not add up to its blocks)."""
        for model in (source, target):
            self.damaged.refuse("anchors", tenant, anchor_set, model.name)
        with self._read() as conn:
            for model in (source, target):
                self._counted(conn, tenant, anchor_set, model.name)
            yield SqlPairReader(conn, tenant, anchor_set, source.name, target.name, source.dim, target.dim)

    def anchor_set_version(self, tenant: str, anchor_set: str) -> int:
        """The set's data version (0 if it does not exist)."""
        with self._read() as conn:
            return int(self._set_version(conn, tenant, anchor_set) or 0)

    def stored_vectors(self, tenant: str) -> int:
        with self._read() as conn:
            return stored_vectors(conn, tenant)

    def erase(self, tenant: str, ids: list[str], before_commit: BeforeCommit | None = None) -> ErasureReport:
        """Delete every anchor and gallery item with one of ``ids`` in one transaction
        (:func:`convergent.server.storage.erasure.erase`)."""
        from convergent.server.storage.erasure import erase

        return erase(self, tenant, ids, before_commit)
