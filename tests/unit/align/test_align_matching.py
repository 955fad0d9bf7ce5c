"""PermutationMap and SemiMatchingMap: hidden permutations, semi >= bipartite, and Convergent
Learning (Li et al., ICLR 2016) in miniature on two MLPs trained on scikit-learn's digits."""

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from convergent.server.align import (
    PairedStats,
    PermutationMap,
    SemiMatchingMap,
    hidden_activations,
    matched_correlation_stats,
)
from convergent.server.errors import InvalidInput


def _permuted(d_x=32, d_y=32, n=2000, noise=0.3, seed=0):
    """Y[:, perm[i]] = scale_i * X[:, i] + noise for the first d_y source units (the rest unmatched)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_x)) * rng.uniform(0.5, 3.0, d_x) + rng.normal(size=d_x)
    perm = rng.permutation(d_y)
    scale = rng.uniform(0.5, 2.0, d_y) * rng.choice([-1.0, 1.0], d_y)
    Y = np.empty((n, d_y))
    Y[:, perm] = X[:, :d_y] * scale + noise * rng.normal(size=(n, d_y)) + 0.5
    return X, Y, perm, scale


def test_permutation_recovers_hidden_permutation_with_signs_and_scales():
    X, Y, perm, scale = _permuted()
    m = PermutationMap().fit(X, Y)
    np.testing.assert_array_equal(m.permutation_, perm)
    assert m.permutation_.dtype == np.int64
    np.testing.assert_allclose(m.unit_scale_, scale, rtol=0.05)
    assert m.matched_correlation_.min() > 0.8 and m.mean_matched_correlation_ > 0.9
    W = m.export()["W"]
    assert (W != 0).sum() == 32 and np.all(W[perm, np.arange(32)] == m.unit_scale_)
    assert m.score(X, Y) > 0.95
    # unsigned matching (the paper's) still finds the positive pairs; negative ones predict the mean
    u = PermutationMap(sign=False).fit(X, Y)
    pos = scale > 0
    np.testing.assert_array_equal(u.permutation_[pos], perm[pos])
    assert np.all(u.unit_scale_ >= 0)
    # scale=False: unit slopes with the correlation's sign
    np.testing.assert_array_equal(PermutationMap(scale=False).fit(X, Y).unit_scale_, np.sign(scale))


def test_permutation_rectangular_leaves_extra_units_unmatched():
    X, Y, perm, _ = _permuted(d_x=40, d_y=32, seed=1)
    m = PermutationMap().fit(X, Y)
    np.testing.assert_array_equal(m.permutation_[:32], perm)
    np.testing.assert_array_equal(m.permutation_[32:], -1)
    assert np.isnan(m.matched_correlation_[32:]).all() and np.all(m.unit_scale_[32:] == 0)
    assert m.mean_matched_correlation_ == pytest.approx(np.mean(m.matched_correlation_[:32]))
    assert m.matched_correlation_summary()["mean"] == pytest.approx(m.mean_matched_correlation_)
    # the other way round every source unit is matched and 8 target units predict their mean
    back = PermutationMap().fit(Y, X)
    assert np.all(back.permutation_ >= 0) and len(set(back.permutation_)) == 32
    unmatched = np.setdiff1d(np.arange(40), back.permutation_)
    np.testing.assert_allclose(back.transform(Y)[:, unmatched], np.broadcast_to(X[:, unmatched].mean(0), (len(X), 8)))


def test_semi_matching_at_least_bipartite_and_transform_averages_choosers():
    rng = np.random.default_rng(3)
    n, d = 1500, 24
    Z = rng.normal(size=(n, 8))
    X = Z @ rng.normal(size=(8, d)) + rng.normal(size=(n, d))
    Y = Z @ rng.normal(size=(8, d)) + rng.normal(size=(n, d))
    stats = PairedStats.from_arrays(X, Y)
    for sign in (True, False):
        bip = PermutationMap(sign=sign).fit_stats(stats)
        semi = SemiMatchingMap(sign=sign).fit_stats(stats)
        assert semi.mean_matched_correlation_ >= bip.mean_matched_correlation_ - 1e-12
        assert np.all(semi.matched_correlation_ >= bip.matched_correlation_ - 1e-12)
        C = stats.correlation()
        S = np.abs(C) if sign else C
        np.testing.assert_array_equal(semi.assignment_, S.argmax(1))
        assert semi.mean_matched_correlation_ == pytest.approx(matched_correlation_stats(S)["mean"])
    # a target unit chosen by several source units predicts the mean of their one-unit regressions
    semi = SemiMatchingMap().fit_stats(stats)
    W = semi.export()["W"]
    for j in range(d):
        chosen = np.flatnonzero(semi.assignment_ == j)
        if chosen.size == 0:
            assert np.all(W[j] == 0) and semi.intercept_[j] == pytest.approx(Y[:, j].mean())
        else:
            np.testing.assert_allclose(W[j, chosen], semi.unit_scale_[chosen] / chosen.size)


def test_hidden_activations_matches_manual_forward_pass_and_rejects_bad_input():
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)), rng.integers(0, 2, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(7, 4), max_iter=5, random_state=0).fit(X, y)
    H = np.maximum(X @ mlp.coefs_[0] + mlp.intercepts_[0], 0)
    np.testing.assert_allclose(hidden_activations(mlp, X), H)
    np.testing.assert_allclose(hidden_activations(mlp, X, layer=1), np.maximum(H @ mlp.coefs_[1] + mlp.intercepts_[1], 0))
    for bad in [dict(layer=2), dict(X=X[:, :3])]:
        with pytest.raises(InvalidInput):
            hidden_activations(mlp, bad.get("X", X), layer=bad.get("layer", 0))
    with pytest.raises(InvalidInput):
        hidden_activations(object(), X)


def test_convergent_learning_digits_in_miniature():
    """Two MLPs (64 ReLU units, different seeds) on the 1797 digits; units matched across nets.

    Measured (sklearn 1.9.1, max_iter=200, signed correlation as in the paper): bipartite mean
    matched correlation 0.665, semi 0.695 (|corr|: 0.675 / 0.700); 4 of 64 bipartite pairs have
    corr > 0.9 and 9 have < 0.5: a few units match very well, many do not, as in Li et al.
    """
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    nets = []
    for seed in (0, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: a short run is enough here
            nets.append(MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=seed).fit(X, y))
    assert min(net.score(X, y) for net in nets) > 0.95
    A, B = hidden_activations(nets[0], X), hidden_activations(nets[1], X)
    stats = PairedStats.from_arrays(A, B)
    with np.errstate(invalid="ignore", divide="ignore"):  # dead ReLU units have no variance
        C = np.nan_to_num(np.corrcoef(A.T, B.T)[:64, 64:])
    report = {}
    for sign in (False, True):
        S = np.abs(C) if sign else C
        rows, cols = linear_sum_assignment(S, maximize=True)
        bip = PermutationMap(sign=sign).fit_stats(stats)
        semi = SemiMatchingMap(sign=sign).fit_stats(stats)
        assert bip.mean_matched_correlation_ == pytest.approx(S[rows, cols].mean(), abs=1e-9)
        assert semi.mean_matched_correlation_ == pytest.approx(S.max(axis=1).mean(), abs=1e-9)
        assert semi.mean_matched_correlation_ >= bip.mean_matched_correlation_
        mc = bip.matched_correlation_
        report[sign] = (bip.mean_matched_correlation_, semi.mean_matched_correlation_, int((mc > 0.9).sum()), int((mc < 0.5).sum()))
    bip_mean, semi_mean, good, poor = report[False]
    print(f"\ndigits MLP(64) x2, unsigned: bipartite {bip_mean:.3f} semi {semi_mean:.3f}; "
          f"bipartite units corr>0.9: {good}, <0.5: {poor}; signed: {report[True]}")
    assert 0.3 < bip_mean < 0.95  # related but far from identical nets
    assert good >= 1 and poor >= 3  # a few units match well, many do not


def test_constant_units_do_not_break_matching():
    X, Y, _, _ = _permuted(d_x=8, d_y=8, n=300, seed=4)
    X[:, 2] = 1.5  # a dead unit
    for cls in (PermutationMap, SemiMatchingMap):
        m = cls().fit(X, Y)
        assert np.all(np.isfinite(m.export()["W"])) and m.unit_scale_[2] == 0
        assert np.all(np.isfinite(m.transform(X)))
