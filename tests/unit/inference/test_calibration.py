"""Threshold calibration for a requested FAR; anchor-set pairs; labelled pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convergent.server.errors import FailedPrecondition, InvalidInput
from convergent.server.inference import (
    calibrate_threshold,
    labelled_pairs,
    min_impostors_for,
    normalize_rows,
    pairs_from_anchor_set,
    verify,
)


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    genuine = rng.normal(0.7, 0.1, 20_000).astype(np.float32)
    impostor = rng.normal(0.1, 0.1, 100_000).astype(np.float32)
    return genuine, impostor


@pytest.mark.parametrize("far", [1e-2, 1e-3, 1e-4])
def test_hits_requested_far_on_synthetic_scores(scores, far):
    genuine, impostor = scores
    cal = calibrate_threshold(genuine, impostor, far)
    assert 0.5 * far <= cal.far <= far  # never above the request
    assert cal.far == pytest.approx(np.mean(verify(impostor, cal.threshold)))
    assert cal.tar == pytest.approx(np.mean(verify(genuine, cal.threshold)))
    assert (cal.n_genuine, cal.n_impostor, cal.requested_far) == (20_000, 100_000, far)
    # threshold close to the normal quantile 0.1 + 0.1 * z_{1-far}
    z = {1e-2: 2.326, 1e-3: 3.090, 1e-4: 3.719}[far]
    assert cal.threshold == pytest.approx(0.1 + 0.1 * z, abs=0.02 if far > 1e-4 else 0.05)
    # TAR of N(0.7, .1) at that threshold
    expected_tar = 0.5 * math.erfc((cal.threshold - 0.7) / (0.1 * math.sqrt(2)))
    assert cal.tar == pytest.approx(expected_tar, abs=0.01)


def test_threshold_is_smallest_that_meets_far():
    impostor = np.arange(1000, dtype=np.float64) / 1000  # 0.000 .. 0.999
    cal = calibrate_threshold(np.array([0.5, 0.995, 1.0]), impostor, 0.01)
    assert cal.far == 0.01  # exactly 10 impostors (0.990 .. 0.999) accepted
    assert 0.989 < cal.threshold <= np.nextafter(0.989, 1)
    assert cal.tar == pytest.approx(2 / 3)


def test_ties_at_the_boundary_never_exceed_far():
    impostor = np.concatenate([np.zeros(990), np.full(20, 0.9)])  # 20 tied at the top
    cal = calibrate_threshold(np.array([1.0]), impostor, 0.01)  # 10 allowed -> reject all ties
    assert cal.far == 0.0 and cal.threshold > 0.9 and cal.tar == 1.0


def test_float32_threshold_is_consistent_in_float32_and_float64(scores):
    genuine, impostor = scores
    cal = calibrate_threshold(genuine, impostor, 1e-2)
    t32 = np.float32(cal.threshold)
    assert float(t32) == cal.threshold  # exactly representable: no rounding surprise
    assert np.mean(impostor >= t32) == cal.far


def test_insufficient_impostors_is_failed_precondition(scores):
    genuine, impostor = scores
    with pytest.raises(FailedPrecondition, match=r"5000 impostor.*10000"):
        calibrate_threshold(genuine, impostor[:5000], 1e-3)
    assert min_impostors_for(1e-3) == 10_000
    assert min_impostors_for(1e-2) == 1_000
    calibrate_threshold(genuine, impostor[:10_000], 1e-3)  # exactly enough


@pytest.mark.parametrize("far", [0.0, -0.1, 1.0, 1.5, float("nan"), float("inf"), "0.1", None, True])
def test_bad_far_is_invalid_input(scores, far):
    genuine, impostor = scores
    with pytest.raises(InvalidInput):
        calibrate_threshold(genuine, impostor, far)


@pytest.mark.parametrize(
    "genuine, impostor",
    [
        (np.array([]), np.zeros(1000)),
        (np.ones(5), np.array([])),
        (np.ones((5, 1)), np.zeros(1000)),
        (np.array([np.nan]), np.zeros(1000)),
        (np.ones(3), np.r_[np.zeros(999), np.inf]),
    ],
)
def test_bad_scores_are_invalid_input(genuine, impostor):
    with pytest.raises(InvalidInput):
        calibrate_threshold(genuine, impostor, 0.01)


def test_pairs_from_anchor_set_all_pairs_when_small():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((30, 8))
    A = B + 0.1 * rng.standard_normal((30, 8))
    pairs = pairs_from_anchor_set(A, B, max_impostors=10_000)
    An, Bn = normalize_rows(A).astype(np.float64), normalize_rows(B).astype(np.float64)
    S = An @ Bn.T
    np.testing.assert_allclose(pairs.genuine, np.diag(S), atol=1e-6)
    assert pairs.impostor.shape == (30 * 29,)
    np.testing.assert_allclose(np.sort(pairs.impostor), np.sort(S[~np.eye(30, dtype=bool)]), atol=1e-6)
    assert pairs.genuine.mean() > pairs.impostor.mean() + 0.5


def test_pairs_from_anchor_set_samples_distinct_off_diagonal_pairs():
    n = 60
    A = np.eye(n)  # cos(A[i], B[j]) = normalised B[j, i]: every pair (i, j) has its own value
    B = 1.0 + np.arange(n)[None, :] * n + np.arange(n)[:, None]  # B[j, i] = 1 + i * n + j
    Bn = normalize_rows(B)
    off = ~np.eye(n, dtype=bool)
    assert np.unique(Bn.T[off]).size == n * (n - 1)  # the codes really are distinct
    pairs = pairs_from_anchor_set(A, B, max_impostors=3000, seed=7)
    assert pairs.impostor.shape == (3000,) and pairs.genuine.shape == (n,)
    np.testing.assert_array_equal(pairs.genuine, np.diag(Bn))
    assert np.unique(pairs.impostor).size == 3000  # sampled without replacement
    assert np.all(np.isin(pairs.impostor, Bn.T[off]))  # only off-diagonal pairs
    again = pairs_from_anchor_set(A, B, max_impostors=3000, seed=7)
    np.testing.assert_array_equal(pairs.impostor, again.impostor)  # seeded
    other = pairs_from_anchor_set(A, B, max_impostors=3000, seed=8)
    assert not np.array_equal(np.sort(other.impostor), np.sort(pairs.impostor))


def test_pairs_from_anchor_set_rejects_bad_input():
    with pytest.raises(InvalidInput):
        pairs_from_anchor_set(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(InvalidInput):
        pairs_from_anchor_set(np.ones((1, 4)), np.ones((1, 4)))
    with pytest.raises(InvalidInput):
        pairs_from_anchor_set(np.ones((3, 4)), np.ones((3, 4)), max_impostors=0)


def test_labelled_pairs_split():
    s = np.array([0.9, 0.1, 0.8, 0.2])
    p = labelled_pairs(s, np.array([True, False, True, False]))
    np.testing.assert_array_equal(p.genuine, [0.9, 0.8])
    np.testing.assert_array_equal(p.impostor, [0.1, 0.2])
    with pytest.raises(InvalidInput):
        labelled_pairs(s, np.array([1, 0, 1, 0]))
    with pytest.raises(InvalidInput):
        labelled_pairs(s, np.array([True, False]))
