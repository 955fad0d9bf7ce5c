"""Gallery vectors in blocks: the 0009 migration from row-per-item stores, and what the blocks
keep after removals and erasure (SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from convergent.server.errors import AlreadyExists
from convergent.server.storage import db
from convergent.server.storage.blocks import block_rows
from convergent.server.storage.schema import gallery_blocks
from convergent.server.storage.sql import SqlStore

T = "t"
# gallery -> (dim, n items): 1,100 items of 1024 dims fill three 512-slot blocks
OLD_GALLERIES = {"faces": (1024, 1100), "small": (4, 9)}


def _old_store(url: str, rng: np.random.Generator) -> dict[str, list[tuple[str, int, bytes]]]:
    """A database at revision 0008 (the previous release: one row per gallery item with its
    vector), filled through SQL with enrolment numbers out of id order and gaps (removed
    items); returns gallery -> [(id, seq, vector bytes)] in enrolment order."""
    engine = db.create_engine(url)
    db.migrate(engine, "0008")
    expected: dict[str, list[tuple[str, int, bytes]]] = {}
    with db.write_connection(engine) as conn, conn.begin():
        for name, (dim, n) in OLD_GALLERIES.items():
            order = rng.permutation(n)
            rows = []
            for k, i in enumerate(order):
                vector = rng.standard_normal(dim).astype("<f4")
                vector[0] = np.float32(-0.0) if k == 2 else vector[0]  # bit-identical, not just equal
                rows.append((f"p{i:05d}", 3 * k + 1, vector.tobytes()))  # seq with gaps
            conn.execute(sa.text(
                "INSERT INTO galleries (tenant, name, model, model_version, index_kind, created_at, version, size, last_seq) "
                "VALUES ('t', :g, 'm', 1, 'exact', 0, 5, :n, :s)"), {"g": name, "n": n, "s": rows[-1][1]})
            conn.execute(
                sa.text("INSERT INTO gallery_items (tenant, gallery, item_id, seq, vector) VALUES ('t', :g, :i, :s, :v)"),
                [{"g": name, "i": i, "s": s, "v": v} for i, s, v in rows],
            )
            expected[name] = rows
    engine.dispose()
    return expected


def _blocks(store: SqlStore, gallery: str) -> list[tuple[int, int, int, bytes]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(gallery_blocks.c.block_id, gallery_blocks.c.rows, gallery_blocks.c.live, gallery_blocks.c.vectors)
            .where(gallery_blocks.c.gallery == gallery).order_by(gallery_blocks.c.block_id))]


def test_row_per_item_galleries_upgrade_in_place(database_url, rng):
    expected = _old_store(database_url, rng)
    store = SqlStore(database_url)  # migrates to head, as a server start does
    try:
        assert db.current_revision(store.engine) == db.head_revision()
        for name, (dim, n) in OLD_GALLERIES.items():
            version, ids, vectors = store.galleries.items(T, name, dim)
            assert version == 5 and ids == [i for i, _, _ in expected[name]]  # enrolment order kept
            assert [v.tobytes() for v in vectors] == [v for _, _, v in expected[name]]
            assert len(_blocks(store, name)) == -(-n // block_rows(dim))
        # the previous shape stays readable as a view, for direct SQL readers (the crash harness)
        with store.engine.connect() as conn:
            old = conn.execute(sa.text("SELECT item_id, seq, vector FROM gallery_items WHERE gallery = 'small'")).all()
        assert sorted((i, s, bytes(v)) for i, s, v in old) == sorted(expected["small"])
        # The upgraded store keeps the promises: enrolment continues, duplicates refused, removal.
        record, _, _, _ = store.galleries.enroll(T, "small", "m", 1, "exact", [(["new"], np.ones((1, 4)))])
        assert record.size == 10 and store.galleries.items(T, "small", 4)[1][-1] == "new"
        with pytest.raises(AlreadyExists):
            store.galleries.enroll(T, "small", "m", 1, "exact", [(["p00003"], np.ones((1, 4)))])
        assert store.galleries.remove(T, "faces", ["p00007", "nope"])[:2] == (1, 1099)
        assert store.galleries.snapshot(T, "faces", 1024)[1] == expected["faces"][-1][1]  # newest enrolment number
    finally:
        store.close()


def test_downgrade_restores_the_rows(tmp_path, rng):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    expected = _old_store(url, rng)
    engine = db.create_engine(url)
    db.migrate(engine)
    db.downgrade(engine, "0008")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT gallery, item_id, seq, vector FROM gallery_items")).all()
    engine.dispose()
    assert sorted((g, i, s, bytes(v)) for g, i, s, v in rows) == sorted(
        (g, i, s, v) for g, items in expected.items() for i, s, v in items)


def test_removed_and_erased_items_are_zeroed_and_empty_blocks_dropped(database_url, rng):
    store = SqlStore(database_url)
    try:
        dim = 1024  # 512 slots per block
        X = rng.standard_normal((600, dim)).astype(np.float32) + 5  # no zero component anywhere
        ids = [f"x{i}" for i in range(600)]
        store.galleries.enroll(T, "g", "m", 1, "exact", [(ids[:300], X[:300]), (ids[300:], X[300:])])
        assert [(r, live) for _, r, live, _ in _blocks(store, "g")] == [(300, 300), (300, 300)]
        erased = X[5].tobytes()
        store.galleries.remove(T, "g", ["x4"])
        store.erase(T, ["x5"])
        (_, _, live, data), _ = _blocks(store, "g")
        row = dim * 4
        assert live == 298 and data[4 * row : 6 * row] == bytes(2 * row)  # both slots zeroed
        assert erased not in data and data[6 * row : 7 * row] == X[6].tobytes()
        assert store.galleries.remove(T, "g", ids[300:])[:2] == (300, 298)
        assert len(_blocks(store, "g")) == 1  # the second block had no live slot left
        _, got, vectors = store.galleries.items(T, "g", dim)
        assert got == [i for i in ids[:300] if i not in ("x4", "x5")]
        np.testing.assert_array_equal(vectors, np.delete(X[:300], [4, 5], axis=0))
        store.galleries.delete(T, "g")
        assert _blocks(store, "g") == []
    finally:
        store.close()
