"""SparseMap: L1 path from statistics, congruence with scikit-learn's Lasso, support recovery."""

import json

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from convergent.server.align import PairedStats, SparseMap, estimator_from_state
from convergent.server.errors import InvalidInput


def _mixing(d_x=40, d_y=12, n_fit=200, n_held=1000, noise=1.5, seed=0):
    """Each target unit = 3 source units (random signs/weights) + noise; anisotropic, offset X."""
    rng = np.random.default_rng(seed)
    A = np.zeros((d_y, d_x))
    for j in range(d_y):
        A[j, rng.choice(d_x, 3, replace=False)] = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.5, 3)
    n = n_fit + n_held
    X = rng.normal(size=(n, d_x)) * rng.uniform(0.5, 3.0, d_x) + 2.0
    Y = X @ A.T + noise * rng.normal(size=(n, d_y)) - 1.0
    return X[:n_fit], Y[:n_fit], X[n_fit:], Y[n_fit:], A


def test_sparse_recovers_support_and_heldout_minimum_is_inside_the_path():
    X, Y, Xh, Yh, A = _mixing()
    m = SparseMap().fit(X, Y, heldout=(Xh, Yh))
    assert m.criterion_ == "heldout" and m.converged_
    loss, alphas = m.path_loss_, m.alphas_
    best = int(np.argmin(loss))
    assert alphas[best] == m.alpha_ and 0 < m.alpha_ < alphas[0]
    assert loss[best] < loss[0] - 0.5 and loss[best] < loss[-1]  # small lambda > 0 beats both ends
    assert np.all(np.diff(alphas) < 0) and m.path_nnz_[0] == 0 and m.path_nnz_[-1] > 3
    W = m.coef_
    assert np.all(W[A != 0] != 0)  # every true source unit is kept, with the right sign
    assert np.all(np.sign(W[A != 0]) == np.sign(A[A != 0]))
    top3 = np.sort(np.argsort(-np.abs(W), axis=1)[:, :3], axis=1)
    np.testing.assert_array_equal(top3, np.sort(np.argsort(-np.abs(A), axis=1)[:, :3], axis=1))
    # prediction-optimal lambda keeps some small false positives; they stay well below the true weights
    assert np.abs(W[A == 0]).max() < 0.5 * np.abs(W[A != 0]).min()
    assert m.score(Xh, Yh) > 0.7
    # the internal criterion (GCV from statistics) lands near the held-out choice
    g = SparseMap().fit(X, Y)
    assert g.criterion_ == "gcv" and abs(np.log10(g.alpha_ / m.alpha_)) <= 0.6
    assert g.path_["loss"].shape == (12,) and set(g.path_) == {"alphas", "loss", "nnz"}


def test_sparse_equals_sklearn_lasso_on_standardised_data_and_streams():
    X, Y, _, _, _ = _mixing(d_x=15, d_y=4, n_fit=300, n_held=10, seed=2)
    m = SparseMap(alphas=[0.05, 0.2], tol=1e-10, max_iter=100000).fit(X, Y)
    Z, U = (X - X.mean(0)) / X.std(0), (Y - Y.mean(0)) / Y.std(0)
    ref = np.array([Lasso(alpha=m.alpha_, tol=1e-12, max_iter=100000).fit(Z, U[:, j]).coef_ for j in range(4)])
    np.testing.assert_allclose(m.coef_ * X.std(0)[None, :] / Y.std(0)[:, None], ref, atol=1e-7)
    np.testing.assert_allclose(m.intercept_, Y.mean(0) - m.coef_ @ X.mean(0))
    # explicit GCV formula per alpha, from the data
    for a, val in zip(m.alphas_, m.path_loss_):
        B = np.array([Lasso(alpha=a, tol=1e-12, max_iter=100000).fit(Z, U[:, j]).coef_ for j in range(4)])
        rss = ((U - Z @ B.T) ** 2).mean(0)
        df = (B != 0).sum(1) + 1
        assert val == pytest.approx(np.mean(rss / (1 - df / len(X)) ** 2), rel=1e-5)
    s = PairedStats.empty(15, 4)
    for idx in np.array_split(np.arange(len(X)), 5):
        s.update(X[idx], Y[idx])
    np.testing.assert_allclose(SparseMap(alphas=[0.05, 0.2]).fit_stats(s).coef_, SparseMap(alphas=[0.05, 0.2]).fit(X, Y).coef_, atol=1e-8)


def test_sparse_bad_input():
    X, Y, Xh, Yh, _ = _mixing(d_x=6, d_y=3, n_fit=50, n_held=20)
    for bad in [dict(alphas=[0.0]), dict(alphas=[]), dict(n_alphas=0), dict(eps=1.0), dict(tol=0.0)]:
        with pytest.raises(InvalidInput):
            SparseMap(**bad).fit(X, Y)
    for held in [(Xh[:, :2], Yh), (Xh, Yh[:-1]), Xh, (Xh, Yh, Yh)]:
        with pytest.raises(InvalidInput):
            SparseMap().fit(X, Y, heldout=held)
    m = SparseMap().fit(X, Y, heldout=(Xh, Yh))
    params, arrays = m.get_state()
    r = estimator_from_state(json.loads(json.dumps(params)), arrays)
    assert type(r) is SparseMap and r.criterion_ == "heldout" and r.alpha_ == m.alpha_
