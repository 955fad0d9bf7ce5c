"""SpectralMatching: planted unit groups shared by two models are recovered from statistics."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from convergent.server.align import PairedStats, SpectralMatching
from convergent.server.errors import InvalidInput


def _planted(n=2000, k=4, d_x=32, d_y=24, noise=0.6, seed=0):
    """k latent factors; each drives a block of units in both nets (random block order/sign/scale)."""
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n, k))
    gx = rng.permutation(np.repeat(np.arange(k), d_x // k))
    gy = rng.permutation(np.repeat(np.arange(k), d_y // k))
    X = F[:, gx] * rng.uniform(0.5, 2, d_x) * rng.choice([-1, 1], d_x) + noise * rng.normal(size=(n, d_x)) + 3
    Y = F[:, gy] * rng.uniform(0.5, 2, d_y) + noise * rng.normal(size=(n, d_y))
    return X, Y, gx, gy


def test_spectral_recovers_planted_groups_and_maps_within_groups():
    X, Y, gx, gy = _planted()
    for m in (SpectralMatching(n_groups=4).fit(X, Y), SpectralMatching().fit(X, Y)):  # fixed k and eigengap
        assert m.n_groups_ == 4
        ari = adjusted_rand_score(np.r_[gx, gy], np.r_[m.source_groups_, m.target_groups_])
        assert ari >= 0.9
        np.testing.assert_array_equal(m.group_sizes_, [[8, 6]] * 4)
        assert np.all(m.group_correlation_ > 0.6)
        W = m.export()["W"]
        assert np.all(W[m.target_groups_[:, None] != m.source_groups_[None, :]] == 0)  # block-sparse
        assert m.score(X, Y) > 0.7
    assert m.source_groups_[0] == 0 and m.source_groups_.dtype == np.int64  # numbered by first unit


def test_spectral_group_map_equals_per_group_ridge():
    X, Y, _, _ = _planted(n=500, d_x=8, d_y=8, k=2, seed=1)
    m = SpectralMatching(n_groups=2, reg=0.0).fit(X, Y)
    for g in range(2):
        S, T = np.flatnonzero(m.source_groups_ == g), np.flatnonzero(m.target_groups_ == g)
        Xc, Yc = X[:, S] - X[:, S].mean(0), Y[:, T] - Y[:, T].mean(0)
        np.testing.assert_allclose(m.coef_[np.ix_(T, S)], np.linalg.lstsq(Xc, Yc, rcond=None)[0].T, atol=1e-8)


def test_spectral_bad_input_and_streaming():
    X, Y, _, _ = _planted(n=400)
    for bad in (0, 25, 2.5, True):
        with pytest.raises(InvalidInput):
            SpectralMatching(n_groups=bad).fit(X, Y)
    for kw in (dict(reg=-1.0), dict(assign_labels="nope")):
        with pytest.raises(InvalidInput):
            SpectralMatching(**kw).fit(X, Y)
    s = PairedStats.empty(32, 24)
    for idx in np.array_split(np.arange(len(X)), 3):
        s.update(X[idx], Y[idx])
    a, b = SpectralMatching(n_groups=4).fit_stats(s), SpectralMatching(n_groups=4).fit(X, Y)
    np.testing.assert_array_equal(a.source_groups_, b.source_groups_)
    one = SpectralMatching(n_groups=1).fit(X, Y)
    assert one.n_groups_ == 1 and np.all(one.source_groups_ == 0)
