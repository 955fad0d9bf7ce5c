"""Cross-product statistics (``products="cross"``): what unit matching fits from, streamed in
float32 chunks, against the float64 in-memory statistics (tolerance 1e-5 on correlations)."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.server.align import PairedStats
from convergent.server.align.maps import RidgeMap
from convergent.server.align.matching import PermutationMap, SemiMatchingMap
from convergent.server.errors import InvalidInput


def _pair(rng, n: int = 6000, d: int = 48) -> tuple[np.ndarray, np.ndarray]:
    X = (rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d) + 4.0).astype(np.float32)  # offset: centring cancels
    perm = rng.permutation(d)
    Y = (X[:, perm] * np.where(rng.random(d) < 0.5, -1, 1) + 0.3 * rng.standard_normal((n, d)) - 2).astype(np.float32)
    return X, Y


def _streamed(X: np.ndarray, Y: np.ndarray, chunk: int = 1024) -> PairedStats:
    stats = PairedStats.empty(X.shape[1], Y.shape[1], "cross")
    for start in range(0, len(X), chunk):
        stats.update(X[start : start + chunk], Y[start : start + chunk])
    return stats


def test_streamed_cross_statistics_equal_in_memory_float64_ones(rng):
    X, Y = _pair(rng)
    cross, full = _streamed(X, Y), PairedStats.from_arrays(X, Y)
    assert cross.products == "cross" and cross.xtx is None and cross.n == full.n == len(X)
    np.testing.assert_allclose(cross.correlation(), full.correlation(), atol=1e-5)
    np.testing.assert_allclose(cross.sq_x, np.diag(full.xtx), rtol=1e-7)  # float32 squares, float64 sums
    derived = full.as_products("cross")
    np.testing.assert_allclose(derived.correlation(), full.correlation(), atol=1e-12)
    for cls in (PermutationMap, SemiMatchingMap):
        a, b = cls().fit_stats(cross), cls().fit(X, Y)  # streamed vs in-memory (float64) fit
        np.testing.assert_array_equal(a.coef_ != 0, b.coef_ != 0)  # the same units matched
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.intercept_, b.intercept_, rtol=1e-4, atol=1e-4)
    assert np.array_equal(PermutationMap().fit_stats(cross).permutation_, PermutationMap().fit(X, Y).permutation_)


def test_cross_statistics_subtract_merge_and_state(rng):
    # Values on a grid of 1/8 (|x| <= 12): every float32 product and chunk sum is exact, so the
    # algebra is tested whatever BLAS kernel runs the gemm (on the raw offset floats of _pair,
    # two float32 routes to the same statistics differ by up to 7e-5 in correlation: the
    # precision the test above bounds, on its own data).
    X, Y = (np.clip(np.round(A * 8) / 8, -12, 12).astype(np.float32) for A in _pair(rng, n=3000, d=16))
    stats = _streamed(X, Y)
    rest = stats.copy().subtract(X[:500], Y[:500])
    np.testing.assert_allclose(rest.correlation(), _streamed(X[500:], Y[500:]).correlation(), atol=1e-5)
    merged = _streamed(X[:500], Y[:500]).merge(_streamed(X[500:], Y[500:]))
    np.testing.assert_allclose(merged.xty, stats.xty, rtol=1e-6)
    params, arrays = stats.get_state()
    assert set(arrays) == {"sum_x", "sum_y", "sq_x", "xty", "sq_y"}
    back = PairedStats.from_state(params, arrays)
    assert back.products == "cross" and np.array_equal(back.xty, stats.xty)
    with pytest.raises(InvalidInput, match="cannot merge"):
        PairedStats.from_arrays(X, Y).merge(stats)


def test_full_methods_refuse_cross_statistics(rng):
    X, Y = _pair(rng, n=500, d=8)
    stats = _streamed(X, Y)
    with pytest.raises(InvalidInput, match="cross products only"):
        RidgeMap(alphas=[1.0]).fit_stats(stats)
    with pytest.raises(InvalidInput, match="cannot give the full ones"):
        stats.as_products("full")
    with pytest.raises(InvalidInput, match="products must be one of"):
        PairedStats.empty(3, 3, "diagonal")
    assert stats.covers("cross") and not stats.covers("full") and PairedStats.empty(2, 2).covers("cross")
