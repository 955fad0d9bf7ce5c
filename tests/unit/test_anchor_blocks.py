"""Anchors in blocks: the 0008 migration from row-per-anchor stores, and what the blocks keep
(pairing by id across differently blocked uploads, released slots zeroed, empty blocks dropped)."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from convergent.server.errors import AlreadyExists
from convergent.server.storage import db
from convergent.server.storage.anchor_blocks import block_rows, model_vectors
from convergent.server.storage.schema import anchor_blocks
from convergent.server.storage.sql import SqlStore

T = "t"
# (set, model, dim, n, versions): n rows spread over the given written versions; dim 1024
# means 512 rows per block, so 1300 rows of one version fill several blocks.
OLD_DATA = [("s", "a", 1024, 1300, (1, 2)), ("s", "b", 8, 1200, (2,)), ("other", "a", 1024, 7, (1,))]


def _old_store(url: str, rng: np.random.Generator) -> dict[tuple[str, str], dict[str, tuple[bytes, int]]]:
    """A database at revision 0007 (the previous release's schema: one row per anchor with
    its vector), filled through SQL; returns (set, model) -> id -> (vector bytes, version)."""
    engine = db.create_engine(url)
    db.migrate(engine, "0007")
    expected: dict[tuple[str, str], dict[str, tuple[bytes, int]]] = {}
    with db.write_connection(engine) as conn, conn.begin():
        conn.execute(sa.text(
            "INSERT INTO models (tenant, name, dim, version, normalize, created_at) VALUES "
            "('t', 'a', 1024, 1, false, 0), ('t', 'b', 8, 1, false, 0)"))
        conn.execute(sa.text(
            "INSERT INTO anchor_sets (tenant, name, data_version, created_at, updated_at, rewritten_version) VALUES "
            "('t', 's', 2, 0, 0, 0), ('t', 'other', 1, 0, 0, 0)"))
        for anchor_set, model, dim, n, versions in OLD_DATA:
            rows = {}
            for i in range(n):
                vector = rng.standard_normal(dim).astype("<f4")
                vector[0] = np.float32(-0.0) if i == 3 else vector[0]  # bit-identical, not just equal
                rows[f"id{i:05d}"] = (vector.tobytes(), versions[i % len(versions)])
            conn.execute(
                sa.text("INSERT INTO anchors (tenant, anchor_set, model, anchor_id, vector, written_version) "
                        "VALUES ('t', :s, :m, :i, :v, :w)"),
                [{"s": anchor_set, "m": model, "i": i, "v": v, "w": w} for i, (v, w) in rows.items()],
            )
            expected[(anchor_set, model)] = rows
    engine.dispose()
    return expected


def test_row_per_anchor_store_upgrades_in_place(database_url, rng):
    expected = _old_store(database_url, rng)
    store = SqlStore(database_url)  # migrates to head, as a server start does
    try:
        assert db.current_revision(store.engine) == db.head_revision()
        with store.engine.connect() as conn:
            for (anchor_set, model), rows in expected.items():
                dim = store.get_model(T, model).dim
                ids, vectors = model_vectors(conn, T, anchor_set, model, dim)
                assert ids == sorted(rows)
                assert [v.tobytes() for v in vectors] == [rows[i][0] for i in ids]
            n_blocks = conn.execute(sa.select(sa.func.count()).select_from(anchor_blocks).where(
                anchor_blocks.c.anchor_set == "s", anchor_blocks.c.model == "a")).scalar()
        assert n_blocks == 2 * -(-650 // block_rows(1024))  # per version, 650 rows in 512-row blocks
        a, b = store.get_model(T, "a"), store.get_model(T, "b")
        with store.read_pairs(T, "s", a, b) as reader:
            assert reader.version().data_version == 2
            assert reader.pair_ids() == sorted(expected[("s", "b")])  # ids of b are a subset of a's
            # written versions survive: pairs with a side written after version 1 = all b's (version 2)
            assert sum(len(ids) for ids, _, _ in reader.iter_pairs(written_after=1)) == 1200
            assert sum(len(ids) for ids, _, _ in reader.iter_pairs(written_after=2)) == 0
            ids, X, Y = reader.pairs_by_id(["id00003", "id01100", "nope"])
        assert ids == ["id00003", "id01100"]
        assert X[0].tobytes() == expected[("s", "a")]["id00003"][0]
        assert Y[1].tobytes() == expected[("s", "b")]["id01100"][0]
        # The upgraded store keeps the promises: identical re-send, changed vector, overwrite, erase.
        ids = sorted(expected[("s", "b")])[:20]
        old = np.stack([np.frombuffer(expected[("s", "b")][i][0], "<f4") for i in ids])
        assert store.write_anchors(T, "s", b, [(ids, old)], overwrite=False).unchanged == 20
        with pytest.raises(AlreadyExists):
            store.write_anchors(T, "s", b, [(ids, old + 1)], overwrite=False)
        result = store.write_anchors(T, "s", b, [(ids, old + 1)], overwrite=True)
        assert (result.overwritten, result.total) == (20, 1200)
        assert store.erase(T, ["id00000", "id00001"]).anchors_deleted == 6  # a and b in s, a in other
    finally:
        store.close()


def test_downgrade_restores_the_rows(tmp_path, rng):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    expected = _old_store(url, rng)
    engine = db.create_engine(url)
    db.migrate(engine)
    db.downgrade(engine, "0007")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT anchor_set, model, anchor_id, vector, written_version FROM anchors")).all()
    engine.dispose()
    assert {(s, m, i): (bytes(v), w) for s, m, i, v, w in rows} == {
        (s, m, i): value for (s, m), ids in expected.items() for i, value in ids.items()
    }


def _blocks(store: SqlStore, model: str) -> list[tuple[int, int, int, bytes]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(anchor_blocks.c.block_id, anchor_blocks.c.rows, anchor_blocks.c.live, anchor_blocks.c.vectors)
            .where(anchor_blocks.c.model == model).order_by(anchor_blocks.c.block_id))]


def test_released_slots_are_zeroed_and_empty_blocks_dropped(database_url, rng):
    store = SqlStore(database_url)
    try:
        a = store.insert_model(T, "a", 4, normalize=False)
        b = store.insert_model(T, "b", 3, normalize=False)
        ids = [f"x{i}" for i in range(10)]
        X = rng.standard_normal((10, 4)).astype(np.float32) + 5  # no zero component anywhere
        Y = rng.standard_normal((10, 3)).astype(np.float32)
        store.write_anchors(T, "s", a, [(ids[:6], X[:6]), (ids[6:], X[6:])], overwrite=False)
        store.write_anchors(T, "s", b, [(ids[::-1], Y[::-1])], overwrite=False)  # other order, one block
        with store.read_pairs(T, "s", a, b) as reader:
            got = {i: (x, y) for batch in reader.iter_pairs() for i, x, y in zip(*batch)}  # one batch here (batches reuse buffers)
        assert sorted(got) == sorted(ids)
        for k, i in enumerate(ids):  # paired by id although blocked and ordered differently
            assert got[i][0].tobytes() == X[k].tobytes() and got[i][1].tobytes() == Y[k].tobytes()
        before = _blocks(store, "a")
        assert [(r, live) for _, r, live, _ in before] == [(6, 6), (4, 4)]
        erased_bytes = X[1].tobytes()
        store.erase(T, ["x1"])
        store.write_anchors(T, "s", a, [(["x7"], X[7:8] + 1)], overwrite=True)
        after = _blocks(store, "a")
        assert [(r, live) for _, r, live, _ in after] == [(6, 5), (4, 3), (1, 1)]
        assert all(erased_bytes not in data for *_, data in after)
        assert after[0][3][4 * 4 : 8 * 4] == bytes(16)  # slot 1 of the first block: zeros
        assert after[1][3][1 * 16 : 2 * 16] == bytes(16)  # x7's old slot (slot 1 of block 2)
        assert store.delete_anchors(T, "s", "a", ["x6", "x8", "x9"]) == (3, 5)
        assert [(r, live) for _, r, live, _ in _blocks(store, "a")] == [(6, 5), (1, 1)]  # block 2 empty: gone
        assert store.count_anchors(T, "s", "a") == 6
        with store.engine.connect() as conn:
            ids_left, vectors = model_vectors(conn, T, "s", "a", 4)
        assert ids_left == ["x0", "x2", "x3", "x4", "x5", "x7"]
        assert vectors[-1].tobytes() == (X[7] + 1).tobytes()
        assert store.delete_model(T, "a") == 6
        assert _blocks(store, "a") == []
    finally:
        store.close()
