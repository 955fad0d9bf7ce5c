"""Open-set thresholds for a requested FPIR, FNIR, CSLS penalties with the own partner left out,
and the two-way (both spaces) dense search against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.server.errors import FailedPrecondition, InvalidInput
from convergent.server.inference import normalize_rows
from convergent.server.inference.csls import neighbourhood_mean
from convergent.server.inference.open_set import (
    fnir_at_threshold,
    neighbourhood_mean_excluding,
    open_set_threshold,
    threshold_for_fpir,
)
from convergent.server.registry.two_way import TwoWayGallery, held_out_top1, two_way_search


@pytest.mark.parametrize("fpir", [1e-2, 1e-3])
def test_threshold_meets_requested_fpir_on_fresh_searches(fpir):
    rng = np.random.default_rng(1)
    calibration = rng.normal(0.3, 0.1, 50_000).astype(np.float32)
    fresh = rng.normal(0.3, 0.1, 200_000)
    cal = open_set_threshold(calibration, fpir)
    assert cal.fpir <= fpir and cal.n_searches == 50_000 and cal.requested_fpir == fpir
    achieved = np.mean(fresh >= cal.threshold)  # same distribution: close to the request
    assert 0.5 * fpir <= achieved <= 1.5 * fpir, achieved  # 50 / 500 calibration errors: sampling spread


def test_threshold_rejects_the_boundary_score_and_counts_ties():
    top1 = np.array([0.9, 0.5, 0.5, 0.4, 0.1] * 20, dtype=np.float32)  # 100 searches, 20 at 0.9
    threshold, achieved = threshold_for_fpir(top1, 0.2)
    assert threshold > 0.5 and achieved == pytest.approx(0.2)
    threshold, achieved = threshold_for_fpir(top1, 0.3)  # 0.5 ties: none of them may pass
    assert threshold > 0.5 and achieved == pytest.approx(0.2)


def test_unresolvable_fpir_and_bad_input():
    with pytest.raises(FailedPrecondition, match="at least 10000"):
        open_set_threshold(np.zeros(9_999, np.float32), 1e-3)
    for fpir in (0.0, 1.0, float("nan")):
        with pytest.raises(InvalidInput):
            open_set_threshold(np.zeros(100, np.float32), fpir)
    with pytest.raises(InvalidInput):
        open_set_threshold(np.array([0.1, np.nan] * 1000), 1e-2)


def test_fnir_counts_wrong_top1_and_low_scores():
    ids = np.array(["a", "b", "c", "d"])
    mates = np.array(["a", "b", "x", "d"])
    scores = np.array([0.9, 0.2, 0.9, 0.6])
    assert fnir_at_threshold(ids, scores, mates, 0.5) == pytest.approx(0.5)  # b below, c wrong
    assert fnir_at_threshold(ids, scores, mates, -1.0) == pytest.approx(0.25)
    with pytest.raises(InvalidInput):
        fnir_at_threshold(ids[:3], scores, mates, 0.5)


def test_neighbourhood_mean_excluding_leaves_the_subject_out():
    rng = np.random.default_rng(2)
    R = normalize_rows(rng.standard_normal((50, 8)).astype(np.float32))
    V = R[:5].copy()  # each is its own partner (cosine 1)
    own = [(V, R, 0.999)]
    left_out = neighbourhood_mean_excluding(V, R, own, k=3)
    brute = np.array([np.sort(np.delete(R, i, axis=0) @ V[i])[-3:].mean() for i in range(5)])
    np.testing.assert_allclose(left_out, brute, atol=1e-6)
    assert np.all(neighbourhood_mean(V, R, k=3) > left_out)  # the partner inflated it
    # a second model that disagrees keeps the pair: excluded only where every model says "same"
    W = normalize_rows(rng.standard_normal((50, 4)).astype(np.float32))
    np.testing.assert_allclose(neighbourhood_mean_excluding(V, R, [(V, R, 0.999), (-W[:5], W, 0.999)], k=3),
                               neighbourhood_mean(V, R, k=3), atol=1e-6)
    # everything excluded: 0, never NaN
    assert np.all(neighbourhood_mean_excluding(V, R, [(V, R, -2.0)], k=3) == 0)


@pytest.mark.parametrize("csls", [False, True])
def test_two_way_search_equals_brute_force(csls):
    rng = np.random.default_rng(3)
    n, N = 37, 101
    native = normalize_rows(rng.standard_normal((N, 16)).astype(np.float32))
    mapped = normalize_rows(rng.standard_normal((N, 12)).astype(np.float32))
    r_native, r_mapped = (rng.uniform(0, 0.5, N).astype(np.float32) for _ in range(2)) if csls else (np.zeros(N, np.float32),) * 2
    copy = TwoWayGallery(1, [f"g{i}" for i in range(N)], native, mapped, r_native, r_mapped)
    Q = normalize_rows(rng.standard_normal((n, 16)).astype(np.float32))
    P = normalize_rows(rng.standard_normal((n, 12)).astype(np.float32))
    r_Q, r_P = (rng.uniform(0, 0.5, n).astype(np.float32) for _ in range(2)) if csls else (None, None)
    ids, scores = two_way_search(copy, Q, P, 5, r_Q, r_P)
    if csls:
        brute = ((2 * Q @ native.T - r_Q[:, None] - r_native) + (2 * P @ mapped.T - r_P[:, None] - r_mapped)) / 2
    else:
        brute = (Q @ native.T + P @ mapped.T) / 2
    best = np.argsort(-brute, axis=1)[:, :5]
    assert ids == [[f"g{j}" for j in row] for row in best]
    np.testing.assert_allclose(scores, np.take_along_axis(brute, best, axis=1), atol=1e-5)
    assert two_way_search(copy, Q, P, 500)[1].shape == (n, N)  # k above the gallery: every item


def test_held_out_top1_prefers_the_space_that_retrieves():
    rng = np.random.default_rng(4)
    n = 300
    T = normalize_rows(rng.standard_normal((n, 16)).astype(np.float32))
    P = normalize_rows(rng.standard_normal((n, 12)).astype(np.float32))
    noisy = normalize_rows((T + 0.6 * rng.standard_normal(T.shape)).astype(np.float32))   # a weak forward map
    sharp = normalize_rows((P + 0.1 * rng.standard_normal(P.shape)).astype(np.float32))   # a good map back
    garbage = normalize_rows(rng.standard_normal(P.shape).astype(np.float32))             # a useless map back
    forward, both, error = held_out_top1(noisy, T, P, sharp)
    assert both > forward + 0.1 and 0 < error < 0.05, (forward, both, error)
    forward, both, error = held_out_top1(noisy, T, P, garbage)
    assert forward - both > error, (forward, both, error)
    assert held_out_top1(T, T, P, P) == (1.0, 1.0, 0.0)
