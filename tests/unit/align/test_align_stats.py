"""PairedStats: streaming == in-memory, merge/subtract, correlation, state round trip, validation."""

import json

import numpy as np
import pytest

from convergent.server.align import PairedStats
from convergent.server.errors import InvalidInput


def _data(n=300, dx=12, dy=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + 3.0
    Y = X[:, :dy] * 2 - 1 + 0.1 * rng.normal(size=(n, dy))
    return X, Y


def test_streaming_in_7_chunks_equals_in_memory():
    X, Y = _data()
    s = PairedStats.empty(12, 7)
    for idx in np.array_split(np.arange(len(X)), 7):
        assert s.update(X[idx], Y[idx]) is s
    full = PairedStats.from_arrays(X, Y)
    assert s.n == full.n == 300
    for a, b in zip(s.covariances(), full.covariances()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    np.testing.assert_allclose(s.cxx, np.cov(X, rowvar=False), atol=1e-9)
    np.testing.assert_allclose(s.cxy, np.cov(X, Y, rowvar=False)[:12, 12:], atol=1e-9)
    np.testing.assert_allclose(s.mean_y, Y.mean(0), atol=1e-12)


def test_merge_and_subtract():
    X, Y = _data()
    a = PairedStats.from_arrays(X[:100], Y[:100])
    b = PairedStats.from_arrays(X[100:], Y[100:])
    merged = a.copy().merge(b)
    full = PairedStats.from_arrays(X, Y)
    np.testing.assert_allclose(merged.xty, full.xty, rtol=1e-12)
    back = full.copy().subtract(X[100:], Y[100:])
    assert back.n == 100
    np.testing.assert_allclose(back.cxx, a.cxx, atol=1e-9)
    with pytest.raises(InvalidInput):
        a.copy().subtract(X, Y)  # more rows than it holds
    with pytest.raises(InvalidInput):
        a.merge(PairedStats.empty(3, 7))


def test_float32_chunks_accumulate_in_float64():
    X, Y = _data()
    s32 = PairedStats.from_arrays(X.astype(np.float32), Y.astype(np.float32))
    s64 = PairedStats.from_arrays(X.astype(np.float32).astype(np.float64), Y.astype(np.float32).astype(np.float64))
    assert s32.xtx.dtype == np.float64
    np.testing.assert_allclose(s32.xtx, s64.xtx, rtol=1e-12)


def test_correlation_matches_numpy_and_zero_variance_unit_gives_zero():
    X, Y = _data()
    Y = Y.copy()
    Y[:, 3] = 5.0  # constant target unit
    c = PairedStats.from_arrays(X, Y).correlation()
    assert c.shape == (12, 7)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.corrcoef(X, Y, rowvar=False)[:12, 12:]
    keep = [0, 1, 2, 4, 5, 6]
    np.testing.assert_allclose(c[:, keep], ref[:, keep], atol=1e-9)
    assert np.all(c[:, 3] == 0)
    assert np.abs(c).max() <= 1


def test_state_round_trip_is_json_and_arrays():
    X, Y = _data()
    s = PairedStats.from_arrays(X, Y)
    params, arrays = s.get_state()
    params = json.loads(json.dumps(params))
    r = PairedStats.from_state(params, arrays)
    assert r.n == s.n
    np.testing.assert_array_equal(r.xty, s.xty)
    with pytest.raises(InvalidInput):
        PairedStats.from_state({"n": 1, "d_x": 12}, arrays)


@pytest.mark.parametrize(
    "X, Y",
    [
        (np.array([[np.nan, 1.0]]), np.ones((1, 2))),
        (np.ones(3), np.ones((3, 2))),
        (np.ones((3, 2)), np.ones((4, 2))),
        (np.ones((0, 2)), np.ones((0, 2))),
        (np.array([["a", "b"]]), np.ones((1, 2))),
        (np.ones((2, 2)), np.array([[np.inf, 0.0], [0.0, 0.0]])),
    ],
)
def test_bad_input_raises_invalid_input(X, Y):
    with pytest.raises(InvalidInput):
        PairedStats.from_arrays(X, Y)


def test_wrong_chunk_dims_and_empty_stats_need_rows():
    s = PairedStats.empty(3, 2)
    with pytest.raises(InvalidInput):
        s.update(np.ones((2, 4)), np.ones((2, 2)))
    with pytest.raises(InvalidInput):
        s.covariances()
    with pytest.raises(InvalidInput):
        PairedStats.empty(0, 2)


@pytest.mark.parametrize("products, bad", [(p, b) for p in ("full", "cross") for b in (np.nan, np.inf, -np.inf)]
                         + [("cross", np.float32(3e19))])  # its square is finite in float64 (full)
def test_update_rejects_non_finite_chunks_and_keeps_the_statistics(products, bad):
    """Chunks are checked on their sums of squares, not by a scan: a NaN, an Inf or (float32
    cross products) a value whose square overflows float32 anywhere is rejected, and nothing
    of the chunk is added."""
    rng = np.random.default_rng(1)
    s = PairedStats.from_arrays(rng.standard_normal((20, 3)).astype(np.float32),
                                rng.standard_normal((20, 2)).astype(np.float32), products=products)
    before = s.copy()
    X, Y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 2)).astype(np.float32)
    for side in (X, Y):
        side = side.copy()
        side[5, 1] = bad
        with pytest.raises(InvalidInput):
            s.update(side, Y) if side.shape[1] == 3 else s.update(X, side)
        assert s.n == before.n
        np.testing.assert_array_equal(s.xty, before.xty)
        np.testing.assert_array_equal(s.sum_x, before.sum_x)
