"""The Milvus gallery index on milvus-lite: FLAT equals the exact local index, HNSW recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (extra 'milvus')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (extra 'milvus')")

from convergent.server.errors import AlreadyExists, InvalidInput  # noqa: E402
from convergent.server.inference import ExactIndex, normalize_rows  # noqa: E402
from convergent.server.inference.milvus_index import MilvusIndex, collection_name  # noqa: E402


@pytest.fixture
def uri(milvus_kind: str, milvus_target: dict, tmp_path: Path) -> str:
    """A milvus-lite file, then a fresh database on the session's Milvus server."""
    return milvus_target["uri"] or str(tmp_path / "milvus.db")


def test_collection_names_are_valid_and_distinct():
    a, b = collection_name("t1", "staff"), collection_name("t2", "staff")
    assert a != b and a.startswith("g_") and a.replace("_", "").isalnum() and len(a) <= 255


def test_flat_equals_exact(uri):
    rng = np.random.default_rng(0)
    G = normalize_rows(rng.standard_normal((3000, 32)).astype(np.float32))
    Q = normalize_rows(rng.standard_normal((50, 32)).astype(np.float32))
    ids = [f"p{i}" for i in range(3000)]
    milvus = MilvusIndex(32, uri, collection_name("t", "g"), index="FLAT")
    exact = ExactIndex(32, backend="numpy")
    milvus.add(ids, G)
    exact.add(ids, G)
    assert len(milvus) == 3000 and "p7" in milvus
    (mi, ms), (ei, es) = milvus.search(Q, 10), exact.search(Q, 10)
    assert mi == ei
    np.testing.assert_allclose(ms, es, atol=1e-5)
    with pytest.raises(AlreadyExists, match="'p3'"):
        milvus.add(["p3"], G[:1])
    assert milvus.remove(["p0", "p1", "nope"]) == 2 and len(milvus) == 2998
    assert "p0" not in milvus.search(G[:1], 5)[0][0]
    with pytest.raises(InvalidInput):
        milvus.search(Q[:, :5], 3)


def test_hnsw_recall(uri):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((300, 64))
    G = normalize_rows((centres[rng.integers(0, 300, 5000)] + 0.3 * rng.standard_normal((5000, 64))).astype(np.float32))
    Q = normalize_rows((centres[rng.integers(0, 300, 200)] + 0.3 * rng.standard_normal((200, 64))).astype(np.float32))
    ids = [f"p{i}" for i in range(5000)]
    milvus = MilvusIndex(64, uri, collection_name("t", "h"), index="HNSW")
    exact = ExactIndex(64, backend="numpy")
    milvus.add(ids, G)
    exact.add(ids, G)
    approx, truth = milvus.search(Q, 10)[0], exact.search(Q, 10)[0]
    recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(approx, truth)])
    assert recall >= 0.95, recall


def test_small_collection_and_empty(uri):
    index = MilvusIndex(4, uri, collection_name("t", "small"))
    ids, scores = index.search(np.ones((2, 4), np.float32), 3)
    assert ids == [[], []] and scores.shape == (2, 0)
    index.add(["a", "b"], normalize_rows(np.eye(4, dtype=np.float32)[:2]))
    ids, scores = index.search(np.eye(4, dtype=np.float32)[:1], 5)
    assert ids == [["a", "b"]] and scores.shape == (1, 2)


def test_catalog_states_rebuild_delete_and_drop(uri):
    from convergent.server.inference.milvus_index import DIRTY, MilvusCatalog

    catalog = MilvusCatalog(uri)
    name = collection_name("t", "cat")
    assert catalog.state(name).token is None
    X = normalize_rows(np.random.default_rng(2).standard_normal((6, 8)).astype(np.float32))
    catalog.rebuild(name, "FLAT", [f"p{i}" for i in range(6)], X, "t0/1")
    assert catalog.state(name)[0] == "t0/1" and len(catalog.index(name, 8, "FLAT")) == 6
    catalog.set_state(name, DIRTY)
    assert catalog.state(name)[0] == DIRTY
    catalog.delete(name, ["p0", "p1", "nope"])
    assert catalog.index(name, 8, "FLAT").search(X[:1], 6)[0][0].count("p0") == 0
    # Rebuilt with nothing: the collection stays (empty, same dimension) for readers that hold it.
    catalog.rebuild(name, "FLAT", [], None, "t0/2")
    assert catalog.state(name)[0] == "t0/2" and len(catalog.index(name, 8, "FLAT")) == 0
    # Another client on the same Milvus sees the same states (replicas share them).
    assert MilvusCatalog(uri).state(name, fresh=False)[0] == "t0/2"
    catalog.drop(name)
    assert catalog.state(name)[0] is None and not catalog.client.has_collection(name)
    catalog.delete(name, ["p2"])  # a missing collection is fine


def test_catalog_switches_to_a_collection_built_aside(uri):
    """Blue-green: a collection built aside serves only once switched to; the replaced one is
    dropped (at close here, 30 s after the switch otherwise); rows of later versions are left out."""
    from convergent.server.inference.milvus_index import STATE_COLLECTION, MilvusCatalog, State

    catalog = MilvusCatalog(uri)
    name = collection_name("t", "blue-green")
    X = normalize_rows(np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32))
    catalog.rebuild(name, "FLAT", ["a", "b"], X[:2], "t0/1", 1)
    built = catalog.build_aside(name, 8, "FLAT", ["a", "b", "c"], X[:3], 2)
    assert catalog.state(name).physical == name  # not switched yet
    catalog.switch(name, "t0/2", built.collection)
    state = catalog.state(name)
    assert state.token == "t0/2" and state.physical == built.collection != name and state.ts >= 0
    index = catalog.index(state.physical, 8, "FLAT")
    ts = index.add(["d"], X[3:], version=3)
    assert index.search(X[3:], 4, guarantee=ts, max_version=2)[0][0].count("d") == 0
    assert index.search(X[3:], 4, guarantee=ts, max_version=3)[0][0][0] == "d"
    catalog.close()
    again = MilvusCatalog(uri)
    assert not again.client.has_collection(name) and again.client.has_collection(built.collection)
    # A state written before collections were switched names the gallery's own collection.
    again.client.upsert(STATE_COLLECTION, [{"id": name, "state": "t0/1", "unused": [0.0, 0.0]}])
    assert again.state(name) == State("t0/1", 0, name)
    again.close()
