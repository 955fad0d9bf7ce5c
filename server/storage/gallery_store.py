"""Galleries and labelled calibration pairs in the SQL store.

A gallery's vectors are stored in blocks (``gallery_blocks``, :mod:`~convergent.server.storage.blocks`)
behind an id index (``gallery_item_ids``: item -> enrolment number, block, slot)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import numpy as np
import sqlalchemy as sa

from convergent.server.errors import AlreadyExists, DataLoss, NotFound
from convergent.server.records import BeforeCommit, GalleryChange, GalleryRecord, HoldAction
from convergent.server.storage import blocks, db, envelope
from convergent.server.storage.guards import check_quota, ensure_wanted
from convergent.server.storage.schema import calibrations, galleries, gallery_blocks, gallery_item_ids

ID_BATCH = blocks.ID_BATCH
GALLERY_BLOCKS = blocks.BlockTable(
    gallery_blocks, ("tenant", "gallery"), lambda key: f"gallery {key[1]!r} (tenant {key[0]!r})")
_items = gallery_item_ids.c


def record_gallery_change(conn: sa.Connection, tenant: str, name: str, size_change: int, last_seq: int | None = None) -> None:
    """+1 on the gallery's version, ``size_change`` on its size, and its newest enrolment number
    (inside the transaction that changed its items)."""
    values = {"version": galleries.c.version + 1, "size": galleries.c.size + size_change}
    if last_seq is not None:
        values["last_seq"] = last_seq
    conn.execute(galleries.update().where(galleries.c.tenant == tenant, galleries.c.name == name).values(**values))


def _items_of(tenant: str, name: str) -> sa.ColumnElement:
    return (_items.tenant == tenant) & (_items.gallery == name)


def _read_items(conn: sa.Connection, tenant: str, name: str, dim: int, where: sa.ColumnElement | None = None,
                ) -> tuple[builtins.list[str], np.ndarray]:
    """(ids, float32 (n, dim)) of a gallery's items (those matching ``where``) in enrolment order;
    ``dim`` 0: from the stored blocks."""
    query = sa.select(_items.item_id, _items.block_id, _items.slot).where(_items_of(tenant, name))
    rows = conn.execute((query if where is None else query.where(where)).order_by(_items.seq)).all()
    if not dim and rows:
        count, size, key_version = conn.execute(
            sa.select(gallery_blocks.c.rows, sa.func.length(gallery_blocks.c.vectors), gallery_blocks.c.key_version)
            .where(GALLERY_BLOCKS.where((tenant, name)), gallery_blocks.c.block_id == rows[0][1])
        ).one()
        dim = envelope.clear_length(int(size), key_version) // int(count) // 4
    if where is None:  # the whole gallery: its id index must list what its record counts
        recorded = conn.execute(sa.select(galleries.c.size).where(galleries.c.tenant == tenant, galleries.c.name == name)).scalar()
        if recorded is not None and int(recorded) != len(rows):
            raise GALLERY_BLOCKS.damaged((tenant, name), f"its record counts {int(recorded)} items, its id index lists {len(rows)}")
    return blocks.gather_rows(conn, GALLERY_BLOCKS, (tenant, name), dim, rows)


def _delete_items(conn: sa.Connection, tenant: str, name: str, ids: Sequence[str]) -> builtins.list[str]:
    """Delete the given items of one gallery (unknown ids are ignored) and release their slots;
    returns the ids that were enrolled."""
    removed: builtins.list[str] = []
    for start in range(0, len(ids), ID_BATCH):
        key = _items_of(tenant, name) & _items.item_id.in_(list(ids[start : start + ID_BATCH]))
        found = conn.execute(sa.select(_items.item_id, _items.block_id, _items.slot, _items.seq).where(key)).all()
        if found:
            conn.execute(gallery_item_ids.delete().where(key))
            blocks.release(conn, GALLERY_BLOCKS, (tenant, name),
                           [(b, slot, blocks.slot_term(item, slot, seq)) for item, b, slot, seq in found])
            removed += [r[0] for r in found]
    return removed


class GalleryStore:
    """Durable galleries: one row per gallery, its vectors in blocks behind an id index."""

    def __init__(self, engine: sa.Engine) -> None:
        from convergent.server.storage.integrity import DamagedObjects

        self.engine = engine
        self.damaged = DamagedObjects()  # the store's: what its start-up check found

    @contextmanager
    def _write(self):  # noqa: ANN202
        with db.write_connection(self.engine) as conn, conn.begin():
            yield conn

    def record_in(self, conn: sa.Connection, tenant: str, name: str) -> GalleryRecord | None:
        row = conn.execute(
            sa.select(galleries).where(galleries.c.tenant == tenant, galleries.c.name == name)
        ).first()
        if row is None:
            return None
        return GalleryRecord(
            name=row.name, model=row.model, model_version=row.model_version, index_kind=row.index_kind,
            size=row.size, created_at=row.created_at, version=row.version,
        )

    def get(self, tenant: str, name: str) -> GalleryRecord:
        with self.engine.connect() as conn, conn.begin():
            record = self.record_in(conn, tenant, name)
        if record is None:
            raise NotFound(f"gallery {name!r} not found", reason="GALLERY_NOT_FOUND", metadata={"name": name})
        return record

    def list(self, tenant: str, after: str, limit: int) -> builtins.list[GalleryRecord]:
        with self.engine.connect() as conn, conn.begin():
            names = conn.execute(
                sa.select(galleries.c.name)
                .where(galleries.c.tenant == tenant, galleries.c.name > after)
                .order_by(galleries.c.name)
                .limit(limit)
            ).scalars().all()
            return [self.record_in(conn, tenant, n) for n in names]

    def enroll(
        self, tenant: str, name: str, model: str, model_version: int, index_kind: str,
        batches: Iterable[tuple[builtins.list[str], np.ndarray]],
        quota: int | None = None,
        still_wanted: Callable[[], bool] | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> tuple[GalleryRecord, bool, builtins.list[str], np.ndarray]:
        """Add items in one transaction, creating the gallery if needed.

        Returns (gallery, created, ids, vectors) of what was added. :class:`AlreadyExists` for
        an id that is enrolled already (nothing is stored then).
        """
        with self._write() as conn:
            record = previous = self.record_in(conn, tenant, name)
            created = record is None
            if created:
                conn.execute(galleries.insert().values(
                    tenant=tenant, name=name, model=model, model_version=model_version,
                    index_kind=index_kind, created_at=time.time(),
                ))
            seq = int(conn.execute(
                sa.select(galleries.c.last_seq).where(galleries.c.tenant == tenant, galleries.c.name == name)
            ).scalar())
            added_ids: builtins.list[str] = []
            added: builtins.list[np.ndarray] = []
            next_block = GALLERY_BLOCKS.next_block(conn, (tenant, name))
            for ids, vectors in batches:
                for start in range(0, len(ids), ID_BATCH):
                    taken = conn.execute(
                        sa.select(_items.item_id).where(
                            _items_of(tenant, name), _items.item_id.in_(ids[start : start + ID_BATCH])
                        ).limit(1)
                    ).scalar()
                    if taken is not None:
                        raise AlreadyExists(f"id {taken!r} is already enrolled in gallery {name!r}", reason="ID_TAKEN", field="ids",
                                            metadata={"id": taken})
                block = np.ascontiguousarray(vectors, dtype="<f4")
                if not len(ids):
                    continue
                seqs = range(seq + 1, seq + len(ids) + 1)
                where = blocks.insert(conn, GALLERY_BLOCKS, (tenant, name), next_block, block.shape[1], block.tobytes(),
                                      ids, seqs)
                next_block = where[-1][0] + 1
                conn.execute(gallery_item_ids.insert(), [
                    {"tenant": tenant, "gallery": name, "item_id": item, "seq": s, "block_id": b, "slot": slot}
                    for item, s, (b, slot) in zip(ids, seqs, where)
                ])
                seq += len(ids)
                added_ids += list(ids)
                added.append(block)
            record_gallery_change(conn, tenant, name, len(added_ids), last_seq=seq)
            check_quota(conn, tenant, len(added_ids), quota)  # counts the gallery's new size
            record = self.record_in(conn, tenant, name)
            ensure_wanted(still_wanted)
            dim = added[0].shape[1] if added else 0
            vectors = np.vstack(added) if added else np.zeros((0, dim), np.float32)
            if before_commit is not None:
                before_commit(GalleryChange(previous, record, self.items_reader(conn, tenant, name, dim), added_ids, vectors))
        return record, created, added_ids, vectors

    def remove(
        self, tenant: str, name: str, ids: builtins.list[str], before_commit: BeforeCommit | None = None
    ) -> tuple[int, int, int]:
        """Delete ids (unknown ones are ignored); returns (removed, size after, gallery version after).
        ``before_commit`` sees the change only when something was removed."""
        with self._write() as conn:
            previous = self.record_in(conn, tenant, name)
            if previous is None:
                raise NotFound(f"gallery {name!r} not found", reason="GALLERY_NOT_FOUND", metadata={"name": name})
            removed = _delete_items(conn, tenant, name, ids)
            if removed:
                record_gallery_change(conn, tenant, name, -len(removed))
            record = self.record_in(conn, tenant, name)
            if removed and before_commit is not None:
                before_commit(GalleryChange(previous, record, self.items_reader(conn, tenant, name), removed_ids=removed))
            return len(removed), record.size, record.version

    def delete(self, tenant: str, name: str, before_commit: BeforeCommit | None = None) -> None:
        with self._write() as conn:
            previous = self.record_in(conn, tenant, name)
            if previous is None:
                raise NotFound(f"gallery {name!r} not found", reason="GALLERY_NOT_FOUND", metadata={"name": name})
            conn.execute(gallery_item_ids.delete().where(_items_of(tenant, name)))
            conn.execute(gallery_blocks.delete().where(GALLERY_BLOCKS.where((tenant, name))))
            conn.execute(galleries.delete().where(galleries.c.tenant == tenant, galleries.c.name == name))
            if before_commit is not None:
                before_commit(GalleryChange(previous, None, lambda: ([], np.zeros((0, 0), np.float32))))

    def snapshot(self, tenant: str, name: str, dim: int) -> tuple[GalleryRecord | None, int, builtins.list[str], np.ndarray]:
        """(record, newest enrolment number, ids, vectors (n, dim) float32) in one read; record
        None if the gallery does not exist. No lock: writes go on meanwhile."""
        self.damaged.refuse("gallery", tenant, name)
        with self.engine.connect() as conn, conn.begin():
            record = self.record_in(conn, tenant, name)
            if record is None:
                return None, 0, [], np.zeros((0, dim), np.float32)
            seq = conn.execute(
                sa.select(galleries.c.last_seq).where(galleries.c.tenant == tenant, galleries.c.name == name)
            ).scalar()
            ids, vectors = self.items_reader(conn, tenant, name, dim)()
        return record, int(seq or 0), ids, vectors

    def hold_since(self, tenant: str, name: str, seq: int, dim: int, action: HoldAction) -> None:
        """Under the write lock (no gallery changes anywhere while it runs): ``action(record,
        ids, vectors, current_ids)`` with the gallery's record (None if gone), its items enrolled
        after enrolment number ``seq`` (in order), and a function that reads all its ids (no
        vectors): what a copy made at ``seq`` needs to catch up."""
        self.damaged.refuse("gallery", tenant, name)
        with self._write() as conn:
            record = self.record_in(conn, tenant, name)
            ids, vectors = (_read_items(conn, tenant, name, dim, _items.seq > seq) if record is not None
                            else ([], np.zeros((0, dim), np.float32)))

            def current_ids() -> builtins.list[str]:
                return list(conn.execute(sa.select(_items.item_id).where(_items_of(tenant, name))).scalars().all())

            action(record, ids, vectors, current_ids)

    def items(self, tenant: str, name: str, dim: int) -> tuple[int, builtins.list[str], np.ndarray]:
        """(gallery version, ids, vectors (n, dim) float32) in enrolment order, one snapshot."""
        self.damaged.refuse("gallery", tenant, name)
        with self.engine.connect() as conn, conn.begin():
            version = conn.execute(
                sa.select(galleries.c.version).where(galleries.c.tenant == tenant, galleries.c.name == name)
            ).scalar() or 0
            ids, vectors = self.items_reader(conn, tenant, name, dim)()
        return int(version), ids, vectors

    @staticmethod
    def items_reader(conn: sa.Connection, tenant: str, name: str, dim: int = 0) -> Callable[[], tuple[builtins.list[str], np.ndarray]]:
        """A function reading the gallery's (ids, (n, dim) float32) in enrolment order on ``conn``
        (``dim`` from the stored rows when not given)."""

        def read() -> tuple[builtins.list[str], np.ndarray]:
            return _read_items(conn, tenant, name, dim)

        return read

    # ------------------------------------------------------------ labelled calibration pairs
    def save_calibration(
        self, tenant: str, a_model: str, a_version: int, b_model: str, b_version: int,
        a: np.ndarray, b: np.ndarray, same: np.ndarray,
    ) -> None:
        """Replace the labelled pairs of (a_model, b_model)."""
        clear = {"a": np.ascontiguousarray(a, "<f4").tobytes(), "b": np.ascontiguousarray(b, "<f4").tobytes(),
                 "same": np.ascontiguousarray(same, np.uint8).tobytes()}
        key = (calibrations.c.tenant == tenant) & (calibrations.c.a_model == a_model) & (calibrations.c.b_model == b_model)
        with self._write() as conn:
            sealed, key_version = envelope.of(conn).seal_many(conn, tenant, [
                (calibration_place(a_model, b_model, a_version, b_version, len(same), column), data)
                for column, data in clear.items()])
            row: dict = dict(zip(clear, sealed), key_version=key_version)
            row.update(a_version=a_version, b_version=b_version, n=len(same), created_at=time.time(),
                       checksum=blocks.checksum(row["a"] + row["b"] + row["same"]))
            conn.execute(calibrations.delete().where(key))
            conn.execute(calibrations.insert().values(tenant=tenant, a_model=a_model, b_model=b_model, **row))

    def load_calibration(
        self, tenant: str, a_model: str, a_version: int, d_a: int, b_model: str, b_version: int, d_b: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(a (n, d_a), b (n, d_b), same (n,) bool) for these model versions, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(calibrations).where(
                calibrations.c.tenant == tenant, calibrations.c.a_model == a_model, calibrations.c.b_model == b_model
            )).first()
            if row is None or (row.a_version, row.b_version) != (a_version, b_version):
                return None
            what = f"the labelled calibration pairs of ({a_model}, {b_model}) (tenant {tenant!r})"

            def damaged(detail: str) -> DataLoss:
                return DataLoss(f"{what} are damaged ({detail}); they are not served. Upload them again, or restore "
                                "a backup")

            if row.checksum is None or blocks.checksum(row.a + row.b + row.same) != row.checksum:
                raise damaged("they fail their checksum")
            sealer = envelope.of(conn)
            a, b, same = (sealer.open(conn, tenant, calibration_place(a_model, b_model, a_version, b_version, row.n, column),
                                      getattr(row, column), row.key_version, damaged) for column in ("a", "b", "same"))
        return (np.frombuffer(a, "<f4").reshape(row.n, d_a), np.frombuffer(b, "<f4").reshape(row.n, d_b),
                np.frombuffer(same, np.uint8).astype(bool))


def calibration_place(a_model: str, b_model: str, a_version: int, b_version: int, n: int, column: str) -> envelope.Place:
    return ("calibrations", a_model, b_model, int(a_version), int(b_version), int(n), column)
