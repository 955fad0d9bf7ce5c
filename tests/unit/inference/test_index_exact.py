"""ExactIndex: top-k equals brute force (ties by insertion order), blocks, removal, state."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.server.errors import AlreadyExists, InvalidInput
from convergent.server.inference import ExactIndex, VectorIndex, index_from_state


def _int_data(rng, n, d):
    """Small-integer vectors: every dot product is exact in float32, and ties are common."""
    return rng.integers(-2, 3, size=(n, d)).astype(np.float32)


def _brute(G, ids, Q, k):
    """Reference: full float64 scores, argsort by (score desc, insertion asc)."""
    S = Q.astype(np.float64) @ G.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(G.shape[0]), S.shape), -S), axis=1)[:, :k]
    return [[ids[j] for j in row] for row in order], np.take_along_axis(S, order, axis=1)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("k", [1, 7, 50, 2000])
def test_topk_equals_brute_force_with_ties_and_small_blocks(backend, k):
    rng = np.random.default_rng(1)
    n, d, q = 1000, 6, 5
    G = _int_data(rng, n, d)
    G[500:520] = G[3]  # exact duplicates: ties across block boundaries
    Q = _int_data(rng, q, d)
    Q[0] = G[3]
    ids = [f"id{i}" for i in range(n)]
    # 37 rows per block (at most): 1000 is not a multiple of it
    ix = ExactIndex(d, backend=backend, block_bytes=4 * q * 37)
    ix.add(ids[:600], G[:600])
    ix.add(ids[600:], G[600:])
    got_ids, got_s = ix.search(Q, k)
    want_ids, want_s = _brute(G, ids, Q, min(k, n))
    assert got_s.dtype == np.float32 and got_s.shape == (q, min(k, n))
    assert got_ids == want_ids
    np.testing.assert_array_equal(got_s, want_s.astype(np.float32))
    if k > 1:  # the data really has ties inside the result lists
        assert np.any(np.diff(want_s, axis=1) == 0)
    dup = [i for i in got_ids[0] if i in {"id3"} | {f"id{j}" for j in range(500, 520)}]
    assert dup == sorted(dup, key=lambda s: int(s[2:]))  # equal scores: insertion order


def test_default_blocks_match_brute_force_on_float_data():
    rng = np.random.default_rng(2)
    G = rng.standard_normal((3001, 32)).astype(np.float32)
    Q = rng.standard_normal((40, 32)).astype(np.float32)
    ix = ExactIndex(32)
    ids = [str(i) for i in range(len(G))]
    ix.add(ids, G)
    got_ids, got_s = ix.search(Q, 10)
    want_ids, want_s = _brute(G, ids, Q, 10)
    assert got_ids == want_ids
    np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-4)
    assert np.all(np.diff(got_s, axis=1) <= 0)  # best first


def test_k_larger_than_gallery_returns_gallery_size_columns():
    ix = ExactIndex(3)
    ix.add(["a", "b"], np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32))
    ids, s = ix.search(np.array([[0.0, 1.0, 0.0]]), 10)
    assert ids == [["b", "a"]]
    np.testing.assert_array_equal(s, [[1.0, 0.0]])
    empty = ExactIndex(3)
    ids, s = empty.search(np.ones((2, 3)), 4)
    assert ids == [[], []] and s.shape == (2, 0)


def test_remove_then_search_matches_brute_force_on_survivors():
    rng = np.random.default_rng(3)
    n, d = 700, 5
    G = _int_data(rng, n, d)
    G[100:110] = G[650]  # ties whose insertion order must survive swap-with-last
    ids = [f"v{i}" for i in range(n)]
    ix = ExactIndex(d, block_bytes=4 * 8 * 50)
    ix.add(ids, G)
    gone = set(rng.choice(n, 250, replace=False).tolist()) | {101, 699}
    removed = ix.remove([ids[i] for i in gone] + ["not-there", ids[101]])
    assert removed == len(gone)
    assert len(ix) == n - len(gone) and ids[101] not in ix and ids[100] in ix
    keep = np.array([i for i in range(n) if i not in gone])
    Q = np.vstack([G[650:651], _int_data(rng, 7, d)])
    got_ids, got_s = ix.search(Q, 25)
    want_ids, want_s = _brute(G[keep], [ids[i] for i in keep], Q, 25)
    assert got_ids == want_ids
    np.testing.assert_array_equal(got_s, want_s.astype(np.float32))
    assert ix.ids() == [ids[i] for i in keep]
    # an id freed by removal can be added again; it is the newest insertion for tie-breaking
    ix.add([ids[101]], G[101:102])
    order = list(keep) + [101]
    got_ids, got_s = ix.search(Q, 40)
    want_ids, want_s = _brute(G[order], [ids[i] for i in order], Q, 40)
    assert ids[101] in got_ids[0]
    assert got_ids == want_ids


def test_remove_everything_and_regrow():
    rng = np.random.default_rng(4)
    ix = ExactIndex(4)
    ids = [str(i) for i in range(3000)]
    ix.add(ids, rng.standard_normal((3000, 4)))
    assert ix.remove(ids) == 3000 and len(ix) == 0
    ids2, s = ix.search(np.ones((1, 4)), 3)
    assert ids2 == [[]] and s.shape == (1, 0)
    ix.add(["x"], np.ones((1, 4)))
    assert ix.search(np.ones((1, 4)), 3)[0] == [["x"]]


def test_state_round_trip_keeps_results_and_uses_plain_dtypes():
    rng = np.random.default_rng(5)
    n, d = 400, 6
    G = _int_data(rng, n, d)
    ids = [f"p{i}" for i in range(n)]
    ix = ExactIndex(d)
    ix.add(ids, G)
    ix.remove(ids[:50:3])
    params, arrays = ix.get_state()
    assert params["class"] == "ExactIndex" and params["dim"] == d
    assert all(a.dtype != object for a in arrays.values())
    assert arrays["vectors"].dtype == np.float32 and arrays["ids"].dtype.kind == "U"
    back = index_from_state(params, arrays)
    assert isinstance(back, ExactIndex) and isinstance(back, VectorIndex)
    Q = _int_data(rng, 9, d)
    assert back.search(Q, 15)[0] == ix.search(Q, 15)[0]
    np.testing.assert_array_equal(back.search(Q, 15)[1], ix.search(Q, 15)[1])
    with pytest.raises(InvalidInput):
        index_from_state({"class": "Nope"}, arrays)
    with pytest.raises(InvalidInput):
        ExactIndex.from_state({"class": "ExactIndex"}, arrays)


def test_score_all_is_dense_in_insertion_order():
    rng = np.random.default_rng(6)
    G = rng.standard_normal((50, 8)).astype(np.float32)
    ix = ExactIndex(8)
    ids = [f"g{i}" for i in range(50)]
    ix.add(ids, G)
    ix.remove(["g0", "g10"])
    got_ids, S = ix.score_all(G[:3])
    keep = [i for i in range(50) if i not in (0, 10)]
    assert got_ids == [ids[i] for i in keep]
    np.testing.assert_allclose(S, G[:3] @ G[keep].T, atol=1e-5)


def test_non_unit_rows_score_is_inner_product():
    ix = ExactIndex(2)
    ix.add(["long", "unit"], np.array([[3.0, 0.0], [1.0, 0.0]]))
    ids, s = ix.search(np.array([[2.0, 0.0]]), 2)
    assert ids == [["long", "unit"]]
    np.testing.assert_array_equal(s, [[6.0, 2.0]])


@pytest.mark.parametrize("bad_k", [0, -1, 1.5, True, None])
def test_bad_k_is_invalid_input(bad_k):
    ix = ExactIndex(3)
    ix.add(["a"], np.ones((1, 3)))
    with pytest.raises(InvalidInput):
        ix.search(np.ones((1, 3)), bad_k)


@pytest.mark.parametrize(
    "queries",
    [np.ones((1, 4)), np.ones(3), np.full((1, 3), np.nan), np.full((2, 3), np.inf), np.empty((0, 3)), [["a", "b", "c"]]],
)
def test_bad_queries_are_invalid_input(queries):
    ix = ExactIndex(3)
    ix.add(["a"], np.ones((1, 3)))
    with pytest.raises(InvalidInput):
        ix.search(queries, 1)


def test_bad_adds():
    ix = ExactIndex(3)
    ix.add(["a"], np.ones((1, 3)))
    with pytest.raises(AlreadyExists):
        ix.add(["b", "a"], np.ones((2, 3)))
    with pytest.raises(InvalidInput):
        ix.add(["b", "b"], np.ones((2, 3)))
    with pytest.raises(InvalidInput):
        ix.add(["b"], np.ones((2, 3)))
    with pytest.raises(InvalidInput):
        ix.add([""], np.ones((1, 3)))
    with pytest.raises(InvalidInput):
        ix.add(["c"], np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(InvalidInput):
        ix.add(["c"], np.ones((1, 2)))
    with pytest.raises(InvalidInput):
        ix.remove("a")
    assert len(ix) == 1
    with pytest.raises(InvalidInput):
        ExactIndex(3, backend="cuda")
    with pytest.raises(InvalidInput):
        ExactIndex(0)
