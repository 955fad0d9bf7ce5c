"""Score fusion: independent noisy parties identify better fused than alone."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.server.errors import InvalidInput
from convergent.server.inference import ExactIndex, fuse_dense, fuse_scores, normalize_rows, zscore_rows

N, D, Q = 600, 32, 300


def _party(rng, X, probe_rows, sigma):
    """One party's model: its own random rotation, independent noise on gallery and probes."""
    R, _ = np.linalg.qr(rng.standard_normal((D, D)))
    gallery = normalize_rows((X + sigma * rng.standard_normal(X.shape)) @ R)
    probes = normalize_rows((X[probe_rows] + sigma * rng.standard_normal((len(probe_rows), D))) @ R)
    return gallery, probes


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    truth = rng.choice(N, Q, replace=False)
    ids = [f"person{i}" for i in range(N)]
    parties = {
        "a": _party(rng, X, truth, 0.9),
        "b": _party(rng, X, truth, 0.9),
        "noise": _party(rng, X, truth, 20.0),  # near-random model
    }
    return ids, truth, parties


def _rank1(ids_lists, ids, truth):
    return np.mean([row[0] == ids[t] for row, t in zip(ids_lists, truth)])


def _search(parties, ids, k):
    out = {}
    for name, (gallery, probes) in parties.items():
        ix = ExactIndex(D)
        ix.add(ids, gallery)
        out[name] = ix.search(probes, k)
    return out


def test_fused_top_k_beats_each_party(world):
    ids, truth, parties = world
    res = _search(parties, ids, 20)
    alone = {p: _rank1(res[p][0], ids, truth) for p in res}
    fused = fuse_scores({p: res[p] for p in ("a", "b")}, {"a": 1.0, "b": 1.0})
    acc = _rank1(fused.ids, ids, truth)
    assert 0.3 < alone["a"] < 0.85 and 0.3 < alone["b"] < 0.85  # the task is neither trivial nor hopeless
    assert alone["noise"] < 0.05
    assert acc >= max(alone["a"], alone["b"]) + 0.05
    assert fused.scores.shape == (Q, 20) and np.all(np.diff(fused.scores, axis=1) <= 0)
    assert fused.parties == ("a", "b") and fused.contributors.shape == (Q, 20, 2)
    # contributors are exactly the parties whose own list held the candidate
    for qi in range(5):
        for j, c in enumerate(fused.ids[qi]):
            want = [c in res["a"][0][qi], c in res["b"][0][qi]]
            assert fused.contributors[qi, j].tolist() == want

    low = fuse_scores(res, {"a": 1.0, "b": 1.0, "noise": 0.1})
    assert _rank1(low.ids, ids, truth) >= acc - 0.03
    equal = fuse_scores(res)  # equal weights: the noisy party hurts clearly more
    assert _rank1(equal.ids, ids, truth) < _rank1(low.ids, ids, truth)


def test_dense_fusion_beats_each_party_and_matches_weighting(world):
    ids, truth, parties = world
    dense = {}
    for name, (gallery, probes) in parties.items():
        ix = ExactIndex(D)
        ix.add(ids, gallery)
        got_ids, S = ix.score_all(probes)
        assert got_ids == ids
        dense[name] = S
    alone = {p: np.mean(np.argmax(S, axis=1) == truth) for p, S in dense.items()}
    two = fuse_dense({"a": dense["a"], "b": dense["b"]}, k=5, ids=ids)
    acc = _rank1(two.ids, ids, truth)
    assert acc >= max(alone["a"], alone["b"]) + 0.05
    low = fuse_dense(dense, {"a": 1, "b": 1, "noise": 0.1}, k=5, ids=ids)
    assert _rank1(low.ids, ids, truth) >= acc - 0.03
    # fused score = weighted mean of per-row z-scores
    z = (zscore_rows(dense["a"]) + zscore_rows(dense["b"])) / 2
    np.testing.assert_allclose(two.scores, -np.sort(-z, axis=1)[:, :5], atol=1e-5)
    assert two.contributors.all()


def test_missing_candidate_gets_party_minimum_z():
    # party a returns x (0.9), y (0.5), z (0.1); party b returns y (0.8), w (0.6), x (0.4)
    a = ([["x", "y", "z"]], np.array([[0.9, 0.5, 0.1]]))
    b = ([["y", "w", "x"]], np.array([[0.8, 0.6, 0.4]]))
    res = fuse_scores({"a": a, "b": b}, {"a": 1.0, "b": 3.0}, k=5)
    za = (np.array([0.9, 0.5, 0.1]) - 0.5) / np.std([0.9, 0.5, 0.1])
    zb = (np.array([0.8, 0.6, 0.4]) - 0.6) / np.std([0.8, 0.6, 0.4])
    want = {
        "x": (za[0] + 3 * zb[2]) / 4,
        "y": (za[1] + 3 * zb[0]) / 4,
        "z": (za[2] + 3 * zb.min()) / 4,
        "w": (za.min() + 3 * zb[1]) / 4,
    }
    order = sorted(want, key=lambda c: -want[c])
    assert res.ids == [order + [""]]
    np.testing.assert_allclose(res.scores[0, :4], [want[c] for c in order], atol=1e-6)
    assert np.isneginf(res.scores[0, 4])
    assert res.contributors[0, order.index("w")].tolist() == [False, True]


def test_padding_and_empty_parties_are_ignored():
    a = ([["x", ""]], np.array([[0.5, -np.inf]]))
    b = ([["", ""]], np.array([[-np.inf, -np.inf]]))
    res = fuse_scores({"a": a, "b": b}, k=2)
    assert res.ids == [["x", ""]]
    assert res.scores[0, 0] == 0.0 and np.isneginf(res.scores[0, 1])
    assert res.contributors[0, 0].tolist() == [True, False]


def test_stats_from_the_full_gallery_are_used():
    a = ([["x", "y"]], np.array([[0.9, 0.5]]))
    res = fuse_scores({"a": a}, stats={"a": (np.array([0.1]), np.array([0.2]))})
    np.testing.assert_allclose(res.scores[0], [4.0, 2.0])


def test_bad_fusion_inputs():
    a = ([["x"]], np.array([[0.5]]))
    with pytest.raises(InvalidInput):
        fuse_scores({})
    with pytest.raises(InvalidInput):
        fuse_scores({"a": a}, {"a": -1.0})
    with pytest.raises(InvalidInput):
        fuse_scores({"a": a}, {"a": 0.0})
    with pytest.raises(InvalidInput):
        fuse_scores({"a": a}, {"zzz": 1.0})
    with pytest.raises(InvalidInput):
        fuse_scores({"a": ([["x", "y"]], np.array([[0.5]]))})
    with pytest.raises(InvalidInput):
        fuse_scores({"a": ([["x"]], np.array([[np.nan]]))})
    with pytest.raises(InvalidInput):
        fuse_scores({"a": a}, k=0)
    with pytest.raises(InvalidInput):
        fuse_dense({"a": np.ones((2, 3)), "b": np.ones((2, 4))})
    with pytest.raises(InvalidInput):
        fuse_dense({"a": np.ones((2, 3))}, ids=["p", "q"])


def test_combination_weights_follow_error_size_and_redundancy(rng):
    from convergent.server.inference import combination_weights

    e1, e2 = rng.standard_normal((2, 400, 8))
    np.testing.assert_allclose(combination_weights([e1, e2]), [0.5, 0.5], atol=0.05)  # equal, independent errors
    w = combination_weights([e1, 2 * e2])  # error variance 1 vs 4: weights 4:1 (inverse variance)
    np.testing.assert_allclose(w, [0.8, 0.2], atol=0.05)
    noisy_copy = e1 + 2 * rng.standard_normal((400, 8))  # party 1's errors plus noise of its own
    w = combination_weights([e1, e2, noisy_copy])
    assert w[2] < 0.05 and abs(w[0] - w[1]) < 0.1 and w.sum() == pytest.approx(1.0) and np.all(w >= 0)
    with pytest.raises(InvalidInput, match="one non-empty shape"):
        combination_weights([e1, e2[:, :3]])
