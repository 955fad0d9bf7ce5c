"""RidgeMap, ProcrustesMap, CCAMap: recovery, congruence with scipy/sklearn, contract."""

import json

import numpy as np
import pytest
import scipy.linalg
from sklearn.linear_model import Ridge

from convergent.server.align import CCAMap, PairedStats, ProcrustesMap, RidgeMap, estimator_from_state
from convergent.server.errors import InvalidInput, NotFitted

ALL = [RidgeMap, ProcrustesMap, CCAMap]


def _rotation(d=32, n=400, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    X = rng.normal(size=(n, d))
    Y = X @ Q.T + 0.7 + noise * rng.normal(size=(n, d))
    return X, Y, Q


def _affine(d_x=20, d_y=12, n=800, noise=0.05, seed=1):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(d_y, d_y)))
    V, _ = np.linalg.qr(rng.normal(size=(d_x, d_x)))
    W = U @ np.diag(np.geomspace(0.2, 5, d_y)) @ V[:d_y]
    b = rng.normal(size=d_y)
    X = rng.normal(size=(n, d_x)) * np.linspace(0.5, 2, d_x) + 1
    return X, X @ W.T + b + noise * rng.normal(size=(n, d_y)), W, b


def test_procrustes_recovers_rotation_and_matches_scipy():
    X, Y, Q = _rotation()
    m = ProcrustesMap(scale=False).fit(X, Y)
    assert np.abs(m.rotation_ - Q).max() < 0.02
    R_ref, _ = scipy.linalg.orthogonal_procrustes(X - X.mean(0), Y - Y.mean(0))
    np.testing.assert_allclose(m.rotation_, R_ref.T, atol=1e-6)
    np.testing.assert_allclose(m.rotation_ @ m.rotation_.T, np.eye(32), atol=1e-10)
    ms = ProcrustesMap(scale=True).fit(X, 3 * Y)
    assert abs(ms.scale_ - 3) < 0.05
    np.testing.assert_allclose(ms.inverse_transform(ms.transform(X)), X, atol=1e-10)
    assert ms.score(X, 3 * Y) > 0.99


@pytest.mark.parametrize("d_x, d_y", [(20, 12), (12, 20)])
def test_procrustes_semi_orthogonal(d_x, d_y):
    X, _, _, _ = _affine(d_x=max(d_x, d_y), d_y=2)
    X = X[:, :d_x]
    Y = np.random.default_rng(3).normal(size=(len(X), d_y))
    R = ProcrustesMap().fit(X, Y).export()["R"]
    assert R.shape == (d_y, d_x)
    gram = R @ R.T if d_y <= d_x else R.T @ R
    np.testing.assert_allclose(gram, np.eye(min(d_x, d_y)), atol=1e-10)


def test_ridge_recovers_anisotropic_affine_and_matches_sklearn():
    X, Y, W, b = _affine()
    m = RidgeMap().fit(X, Y)
    assert np.abs(m.coef_ - W).max() < 0.02
    assert np.abs(m.intercept_ - b).max() < 0.05
    assert m.score(X, Y) > 0.99
    ref = Ridge(alpha=m.alpha_, fit_intercept=True).fit(X, Y)
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(m.intercept_, ref.intercept_, atol=1e-6)
    fixed = RidgeMap(alphas=[7.5]).fit(X, Y)
    np.testing.assert_allclose(fixed.coef_, Ridge(alpha=7.5).fit(X, Y).coef_, atol=1e-6)
    assert len(m.gcv_) == 13 and np.argmin(m.gcv_) == list(m.alphas_).index(m.alpha_)


def test_gcv_matches_explicit_formula():
    X, Y, _, _ = _affine(n=60)
    m = RidgeMap(alphas=[0.1, 10.0]).fit(X, Y)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    n = len(X)
    for a, g in zip(m.alphas_, m.gcv_):
        H = Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(X.shape[1]), Xc.T)
        rss = np.sum((Yc - H @ Yc) ** 2)
        df = np.trace(H) + 1
        assert g == pytest.approx(rss / (n * Y.shape[1]) / (1 - df / n) ** 2, rel=1e-8)


def test_cca_full_rank_unregularised_equals_least_squares_and_shared_space():
    X, Y, _, _ = _affine()
    cca = CCAMap(reg=0.0).fit(X, Y)
    ols = RidgeMap(alphas=[1e-10]).fit(X, Y)
    np.testing.assert_allclose(cca.export()["W"], ols.coef_, atol=1e-6)
    u, v = cca.transform_source(X), cca.transform_target(Y)
    assert u.shape == v.shape == (len(X), 12)
    corr = [np.corrcoef(u[:, j], v[:, j])[0, 1] for j in range(12)]
    np.testing.assert_allclose(corr, cca.canonical_correlations_, atol=1e-6)
    assert np.all(np.diff(cca.canonical_correlations_) <= 1e-12)
    k3 = CCAMap(n_components=3).fit(X, Y)
    assert k3.transform(X).shape == (len(X), 12) and k3.transform_source(X).shape == (len(X), 3)
    ex = k3.export()
    assert {"Wx", "Wy", "mean_x", "mean_y", "canonical_correlations", "W", "b"} <= set(ex)


@pytest.mark.parametrize("cls", ALL)
def test_row_order_does_not_matter(cls):
    X, Y, _, _ = _affine()
    p = np.random.default_rng(5).permutation(len(X))
    a, b = cls().fit(X, Y), cls().fit(X[p], Y[p])
    np.testing.assert_allclose(a.transform(X), b.transform(X), atol=1e-8)


@pytest.mark.parametrize("cls", ALL)
def test_float32_and_float64(cls):
    X, Y, _, _ = _affine()
    m64 = cls().fit(X, Y)
    m32 = cls().fit(X.astype(np.float32), Y.astype(np.float32))
    out32 = m32.transform(X.astype(np.float32))
    assert out32.dtype == np.float32 and m64.transform(X).dtype == np.float64
    assert m64.transform(X.astype(np.float16)).dtype == np.float64
    np.testing.assert_allclose(out32, m64.transform(X), atol=1e-3)


@pytest.mark.parametrize("cls", ALL)
def test_streaming_fit_equals_in_memory(cls):
    X, Y, _, _ = _affine()
    s = PairedStats.empty(20, 12)
    for idx in np.array_split(np.arange(len(X)), 7):
        s.update(X[idx], Y[idx])
    np.testing.assert_allclose(cls().fit_stats(s).transform(X), cls().fit(X, Y).transform(X), atol=1e-9)


@pytest.mark.parametrize("cls", ALL)
def test_state_round_trip_gives_identical_transform(cls):
    X, Y, _, _ = _affine()
    m = cls().fit(X, Y)
    params, arrays = m.get_state()
    params = json.loads(json.dumps(params))
    layout = lambda a: (a.flags.c_contiguous, a.flags.f_contiguous)  # noqa: E731
    for r in (cls.from_state(params, arrays), estimator_from_state(params, arrays)):
        # same memory layout as the rebuilt state (row-major), else BLAS may take another
        # kernel in transform and the bit-identity below holds only on some CPUs
        for k in cls._state_arrays:
            assert getattr(m, k).flags.c_contiguous, k
            assert layout(getattr(m, k)) == layout(getattr(r, k)) == layout(arrays[k]), k
        assert layout(m._affine()[0]) == layout(r._affine()[0]) and m._affine()[0].flags.c_contiguous
        np.testing.assert_array_equal(r.transform(X), m.transform(X))
        assert type(r) is cls and r.get_params() == m.get_params()
    with pytest.raises(InvalidInput):
        (ProcrustesMap if cls is not ProcrustesMap else RidgeMap).from_state(params, arrays)


@pytest.mark.parametrize("cls", ALL)
def test_contract_not_fitted_and_bad_input(cls):
    m = cls()
    assert not any(k.endswith("_") for k in vars(m))  # __init__ stores hyper-parameters only
    with pytest.raises(NotFitted):
        m.transform(np.ones((2, 3)))
    with pytest.raises(NotFitted):
        m.export()
    X, Y, _, _ = _affine()
    bad = X.copy()
    bad[0, 0] = np.nan
    for args in [(bad, Y), (X[:, 0], Y), (X, Y[:-1]), (X[:0], Y[:0]), (X[:1], Y[:1])]:
        with pytest.raises(InvalidInput):
            cls().fit(*args)
    m.fit(X, Y)
    assert m.n_features_in_ == 20
    with pytest.raises(InvalidInput):
        m.transform(X[:, :5])
    with pytest.raises(InvalidInput):
        m.transform(bad)


def test_bad_hyper_parameters():
    X, Y, _, _ = _affine()
    with pytest.raises(InvalidInput):
        RidgeMap(alphas=[0.0]).fit(X, Y)
    with pytest.raises(InvalidInput):
        CCAMap(n_components=13).fit(X, Y)
    with pytest.raises(InvalidInput):
        CCAMap(reg=1.0).fit(X, Y)
