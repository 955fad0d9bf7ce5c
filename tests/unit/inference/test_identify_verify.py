"""normalize_rows, cosine_scores, verify."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.server.errors import InvalidInput
from convergent.server.inference import cosine_scores, normalize_rows, verify


def test_normalize_rows_unit_and_zero_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0], [1e30, 1e30]])
    N = normalize_rows(X)
    assert N.dtype == np.float32 and not np.isnan(N).any()
    np.testing.assert_allclose(N, [[0.6, 0.8], [0, 0], [1, 0], [2**-0.5, 2**-0.5]], atol=1e-6)
    assert normalize_rows(np.empty((0, 3))).shape == (0, 3)
    with pytest.raises(InvalidInput):
        normalize_rows(np.array([[np.nan, 1.0]]))
    with pytest.raises(InvalidInput):
        normalize_rows(np.ones(3))


def test_cosine_scores_row_paired():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 7))
    B = rng.standard_normal((50, 7))
    want = np.sum(A * B, axis=1) / np.linalg.norm(A, axis=1) / np.linalg.norm(B, axis=1)
    s = cosine_scores(A, B)
    assert s.shape == (50,) and s.dtype == np.float32
    np.testing.assert_allclose(s, want, atol=1e-6)
    np.testing.assert_allclose(cosine_scores(A, 2.5 * A), 1.0, atol=1e-6)
    assert cosine_scores(np.zeros((1, 7)), B[:1])[0] == 0.0
    with pytest.raises(InvalidInput):
        cosine_scores(A, B[:49])


def test_verify_accepts_at_and_above_threshold():
    s = np.array([0.2, 0.5, 0.50001, 0.8], dtype=np.float32)
    np.testing.assert_array_equal(verify(s, 0.5), [False, True, True, True])
    # float32 score just below a float64 threshold is rejected (no rounding to float32)
    t = float(np.float32(0.5)) + 1e-12
    assert not verify(np.array([0.5], dtype=np.float32), t)[0]
    for bad in (float("nan"), float("inf"), "0.5", None):
        with pytest.raises(InvalidInput):
            verify(s, bad)
    with pytest.raises(InvalidInput):
        verify(np.array([np.nan]), 0.5)
