"""1:1 verification: accept a pair when its similarity reaches the threshold.

Rule everywhere in convergent: **accept iff score >= threshold** (scores: higher = more
similar), the same rule :func:`convergent.server.inference.calibration.calibrate_threshold`
calibrates for.

A pair of two models can be scored in one model's space (cos(f(a), b), a mapped into b's
space by f) or in both (:func:`both_spaces`): the mean of cos(f(a), b) and cos(a, g(b)), g the
fit b -> a, which does not depend on the order of the two models.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from convergent.server.errors import InvalidInput
from convergent.server.inference._validate import as_scores, as_vectors
from convergent.server.inference.identify import normalize_rows

__all__ = ["both_spaces", "verify"]


def verify(scores: np.ndarray, threshold: float) -> np.ndarray:
    """scores (n,) -> accept (n,) bool, ``scores >= threshold`` (exact, in float64)."""
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(float(threshold)):
        raise InvalidInput(f"threshold must be a finite number, got {threshold!r}")
    s = as_scores(scores, "scores", allow_empty=True)
    # compare in float64 so a float32 score is never rounded against the threshold
    return s.astype(np.float64, copy=False) >= float(threshold)


def both_spaces(A_in_b: np.ndarray, B: np.ndarray, A: np.ndarray, B_in_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-paired embeddings for scoring pairs in both models' spaces.

    A_in_b (n, d_b): a's rows mapped into b's space; B (n, d_b): b's rows; A (n, d_a): a's rows;
    B_in_a (n, d_a): b's rows mapped into a's space. Returns (P, Q), (n, d_b + d_a) float32 unit
    rows, with P[i] . Q[i] = (cos(A_in_b[i], B[i]) + cos(A[i], B_in_a[i])) / 2: the concatenation
    [u(A_in_b), u(A)] / sqrt 2 against [u(B), u(B_in_a)] / sqrt 2 (u: unit rows). Any cosine
    routine (pairs of rows, all pairs of an anchor set) then scores in both spaces.
    """
    parts = [normalize_rows(as_vectors(M, name)) for M, name in
             ((A_in_b, "A_in_b"), (B, "B"), (A, "A"), (B_in_a, "B_in_a"))]
    if parts[0].shape != parts[1].shape or parts[2].shape != parts[3].shape or len(parts[0]) != len(parts[2]):
        raise InvalidInput(f"both_spaces needs (n, d_b), (n, d_b), (n, d_a), (n, d_a), got {[p.shape for p in parts]}")
    half = np.float32(np.sqrt(0.5))
    return (np.hstack([parts[0], parts[2]]) * half).astype(np.float32), (np.hstack([parts[1], parts[3]]) * half).astype(np.float32)
