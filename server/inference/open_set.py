"""Open-set identification (1:N with non-mated searches): a threshold on the top-1 score for a
requested false-positive identification rate, and the NIST FRTE 1:N error rates.

Scores are similarities, higher = more similar; a search *hits* when its top-1 score is
``>= threshold``. Terms as in NIST FRTE 1:N (Grother, Ngan, Hanaoka, NISTIR 8271):

- a *mated* search is a probe of an enrolled subject, a *non-mated* one of somebody who is not;
- FPIR(T) = fraction of non-mated searches whose top-1 score is >= T (a false alarm);
- FNIR(T) = fraction of mated searches whose mate is not the top-1 candidate with a score >= T
  (rank-1 identification mode: a wrong top-1 or a right one below T both count).

A threshold for FPIR f is resolved only from at least ``min_errors / f`` non-mated searches (as
verification's FAR, :mod:`.calibration`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convergent.server.errors import FailedPrecondition
from convergent.server.inference._validate import as_scores, as_vectors, open_unit_float, positive_int
from convergent.server.inference.calibration import min_impostors_for

__all__ = [
    "OpenSetThreshold",
    "fnir_at_threshold",
    "neighbourhood_mean_excluding",
    "open_set_threshold",
    "threshold_for_fpir",
]


@dataclass(frozen=True)
class OpenSetThreshold:
    """threshold: a top-1 score >= threshold is a hit. fpir: FPIR achieved on the ``n_searches``
    non-mated searches it was calibrated on (<= requested_fpir)."""

    threshold: float
    fpir: float
    requested_fpir: float
    n_searches: int


def threshold_for_fpir(top1: np.ndarray, fpir: float) -> tuple[float, float]:
    """(threshold, achieved FPIR) with at most floor(fpir * m) of the m non-mated top-1 scores
    ``top1`` at or above the threshold: the next representable float32 above the
    (floor(fpir m) + 1)-th highest score. No minimum count (the benchmark's oracle)."""
    scores = as_scores(top1, "top1").astype(np.float32)
    m = scores.shape[0]
    allowed = int(math.floor(open_unit_float(fpir, "fpir") * m * (1 + 1e-12)))
    boundary = np.partition(scores, m - 1 - allowed)[m - 1 - allowed] if allowed < m else np.float32(-np.inf)
    threshold = float(np.nextafter(np.float32(boundary), np.float32(np.inf), dtype=np.float32))
    return threshold, float(np.count_nonzero(scores.astype(np.float64) >= threshold)) / m


def open_set_threshold(top1: np.ndarray, fpir: float, *, min_errors: int = 10) -> OpenSetThreshold:
    """The threshold for ``fpir`` from the top-1 scores (m,) of non-mated searches.

    Raises InvalidInput for fpir outside (0, 1) or bad scores; FailedPrecondition when
    m < ceil(min_errors / fpir) (the FPIR cannot be resolved from so few searches).
    """
    fpir = open_unit_float(fpir, "fpir")
    scores = as_scores(top1, "non-mated top-1 scores")
    needed = min_impostors_for(fpir, positive_int(min_errors, "min_errors"))
    if scores.shape[0] < needed:
        raise FailedPrecondition(
            f"FPIR {fpir:g} cannot be resolved from {scores.shape[0]} non-mated searches: at least {needed} are "
            f"needed ({min_errors}/FPIR); add anchors, give more non-mated probes, or request a larger FPIR",
            reason="UNRESOLVABLE_RATE", metadata={"have": scores.shape[0], "need": needed},
        )
    threshold, achieved = threshold_for_fpir(scores, fpir)
    return OpenSetThreshold(threshold, achieved, fpir, int(scores.shape[0]))


def fnir_at_threshold(top1_ids: np.ndarray, top1_scores: np.ndarray, mates: np.ndarray, threshold: float) -> float:
    """FNIR of mated searches: the fraction whose top-1 id (m,) is not its mate (m,) or whose
    top-1 score (m,) is below ``threshold``."""
    ids, mates = np.asarray(top1_ids), np.asarray(mates)
    scores = np.asarray(top1_scores, dtype=np.float64)
    if not (ids.shape == mates.shape == scores.shape) or ids.ndim != 1 or ids.size == 0:
        from convergent.server.errors import InvalidInput

        raise InvalidInput(f"top1_ids, top1_scores and mates must be equal non-empty 1-D arrays, got "
                           f"{ids.shape}, {scores.shape}, {mates.shape}")
    return float(np.mean((ids != mates) | (scores < threshold)))


def neighbourhood_mean_excluding(V: np.ndarray, reference: np.ndarray,
                                 same: list[tuple[np.ndarray, np.ndarray, float]], k: int = 10) -> np.ndarray:
    """Mean cosine of each row of V (m, d) to its k nearest rows of ``reference`` (r, d), leaving
    out for row i the reference rows j that look like the same subject: in every
    ``(V_native (m, e), reference_native (r, e), bound)`` of ``same`` (each model's own unit
    vectors of the same m and r items), cos(V_native_i, reference_native_j) >= bound.

    CSLS's r of an anchor would otherwise count its own partner and the other photos of its
    subject among the reference anchors; a non-mated probe's subject is never there. Unit rows;
    (m,) float32; a row with fewer than k references left averages those left (0 with none).
    """
    V = as_vectors(V, "V", allow_empty=True)
    R = as_vectors(reference, "reference", dim=V.shape[1])
    k = min(positive_int(k, "k"), R.shape[0])
    out = np.empty(V.shape[0], dtype=np.float32)
    for start in range(0, V.shape[0], 2048):
        stop = min(V.shape[0], start + 2048)
        S = V[start:stop] @ R.T
        excluded = np.ones(S.shape, dtype=bool)
        for native, reference_native, bound in same:
            excluded &= (native[start:stop] @ reference_native.T) >= bound
        S[excluded] = -np.inf
        top = np.partition(S, S.shape[1] - k, axis=1)[:, S.shape[1] - k :]
        finite = np.isfinite(top)
        total = np.where(finite, top, 0.0).sum(axis=1)
        out[start:stop] = total / np.maximum(finite.sum(axis=1), 1)
    return out
