"""Metrics: ranges, identities, chance levels, agreement with references."""

import numpy as np
import pytest
from sklearn.metrics import r2_score as sk_r2

from convergent.server.align import (
    PairedStats,
    linear_cka,
    matched_correlation_stats,
    mutual_knn,
    mutual_knn_chance,
    r2_score,
    retrieval_margin,
    retrieval_topk,
)
from convergent.server.align.metrics import linear_cka_to, retrieval_scores
from convergent.server.errors import InvalidInput

rng = np.random.default_rng(0)
X = rng.normal(size=(500, 40))
Z = rng.normal(size=(500, 30))  # independent of X
Q, _ = np.linalg.qr(rng.normal(size=(40, 40)))


def test_r2_matches_sklearn_and_range():
    Y = X[:, :5] + 0.3 * rng.normal(size=(500, 5))
    P = X[:, :5]
    assert r2_score(Y, P) == pytest.approx(sk_r2(Y, P), rel=1e-12)
    assert r2_score(Y, P, multioutput="variance_weighted") == pytest.approx(sk_r2(Y, P, multioutput="variance_weighted"), rel=1e-12)
    assert r2_score(Y, Y) == 1.0
    assert r2_score(Y, np.tile(Y.mean(0), (500, 1))) == pytest.approx(0.0, abs=1e-12)
    assert r2_score(Y, -Y) < 0


def test_cka_identity_invariance_and_independence():
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, 3 * X @ Q + 2) == pytest.approx(1.0, abs=1e-9)  # rotation, scale, shift
    assert abs(linear_cka(X, Z)) < 0.05  # debiased: ~0 for independent data
    assert linear_cka(X, Z, debiased=False) > linear_cka(X, Z)  # the bias it removes
    mid = linear_cka(X, np.hstack([X[:, :20], Z[:, :20]]))
    assert 0.2 < mid < 0.9


def test_cka_feature_space_equals_gram_matrix_form():
    A, B = X[:60, :7], Z[:60, :5] + X[:60, :5]
    n = len(A)
    H = np.eye(n) - 1 / n
    K, L = H @ A @ A.T @ H, H @ B @ B.T @ H
    biased = np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))
    assert linear_cka(A, B, debiased=False) == pytest.approx(biased, rel=1e-9)

    def hsic_u(K, L):  # Song et al. 2012, Gram-matrix form
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        one = np.ones(n)
        return (np.trace(K @ L) + one @ K @ one * (one @ L @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))

    Ac, Bc = A - A.mean(0), B - B.mean(0)
    K, L = Ac @ Ac.T, Bc @ Bc.T
    ref = hsic_u(K, L) / np.sqrt(hsic_u(K, K) * hsic_u(L, L))
    assert linear_cka(A, B) == pytest.approx(ref, rel=1e-9)


def test_mutual_knn_self_one_and_random_near_chance():
    assert mutual_knn(X, X) == 1.0
    assert mutual_knn(X, 2 * X @ Q) == 1.0  # cosine kNN invariant to rotation and scale
    chance = mutual_knn_chance(500, 10)
    assert chance == pytest.approx(10 / 499)
    assert abs(mutual_knn(X, Z) - chance) < 0.02
    with pytest.raises(InvalidInput):
        mutual_knn(X[:5], X[:5], k=5)


def test_retrieval_topk_and_margin():
    P = X + 0.1 * rng.normal(size=X.shape)
    r = retrieval_topk(P, X, ks=(1, 5))
    assert r["top1"] == 1.0 and r["top5"] == 1.0
    rand = retrieval_topk(Z[:, :40 - 10], Z[::-1, :30])
    assert rand["top1"] < 0.02 and 0 <= rand["top1"] <= rand["top5"] <= 1
    m_good, m_bad = retrieval_margin(P, X), retrieval_margin(Z, np.roll(Z, 1, axis=0))
    assert m_good > 0 > m_bad and -2 <= m_bad
    assert retrieval_margin(P, X, metric="euclidean") > 0 > retrieval_margin(Z, np.roll(Z, 1, axis=0), metric="euclidean")
    rows = retrieval_margin(P, X, per_row=True)
    assert rows.shape == (500,) and rows.mean() == pytest.approx(m_good)
    # the pool cap keeps the cost bounded and is deterministic
    big = np.vstack([X] * 6)
    assert retrieval_topk(big + 1e-3, big, pool=300, seed=1) == retrieval_topk(big + 1e-3, big, pool=300, seed=1)
    with pytest.raises(InvalidInput):
        retrieval_margin(P, X, metric="manhattan")


def test_matched_correlation_stats():
    s = matched_correlation_stats([0.1, 0.5, 0.9])
    assert s == {"mean": pytest.approx(0.5), "median": 0.5, "min": 0.1, "max": 0.9}
    corr = PairedStats.from_arrays(X, np.hstack([X[:, :3], Z[:, :2]])).correlation()
    s2 = matched_correlation_stats(corr.T)  # each target unit semi-matched to its best source unit
    assert s2["max"] == pytest.approx(1.0) and s2["min"] < 0.3
    with pytest.raises(InvalidInput):
        matched_correlation_stats([])


def test_retrieval_scores_equal_topk_and_margin_computed_apart(rng):
    from convergent.server.align.metrics import retrieval_margin, retrieval_scores, retrieval_topk

    P, T = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
    T[:100] = P[:100] + 0.1 * T[:100]  # some partners found, some not
    both = retrieval_scores(P, T, ks=(1, 5), pool=200, seed=3)
    assert both == {**retrieval_topk(P, T, ks=(1, 5), pool=200, seed=3), "margin": retrieval_margin(P, T, pool=200, seed=3)}
    assert 0 < both["top1"] < 1


def test_float32_products_match_float64_metrics(rng):
    """The diagnostics compute similarities in float32: the same scores to ~1e-6 on data with
    large means (centring in float64), the same neighbours and retrieval ranks."""
    X = rng.standard_normal((400, 48)) + 6.0
    Y = X @ rng.standard_normal((48, 40)) + 0.5 * rng.standard_normal((400, 40)) - 3.0
    for debiased in (True, False):
        assert linear_cka(X, Y, debiased=debiased, dtype=np.float32) == pytest.approx(
            linear_cka(X, Y, debiased=debiased), abs=1e-5)
    assert linear_cka_to(Y, X, X[:, ::-1], dtype=np.float32) == pytest.approx(
        [linear_cka(X, Y), linear_cka(X[:, ::-1], Y)], abs=1e-5)
    P = Y + 0.3 * rng.standard_normal(Y.shape)
    assert mutual_knn(P, Y, dtype=np.float32) == pytest.approx(mutual_knn(P, Y), abs=0.01)
    r32, r64 = retrieval_scores(P, Y, dtype=np.float32), retrieval_scores(P, Y)
    assert r32["top1"] == pytest.approx(r64["top1"], abs=0.01) and r32["margin"] == pytest.approx(r64["margin"], abs=1e-5)
    with pytest.raises(InvalidInput):
        mutual_knn(P, Y, dtype=np.float16)
