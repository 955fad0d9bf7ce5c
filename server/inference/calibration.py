"""Verification thresholds for a requested false-accept rate (FAR).

Scores are similarities (higher = more similar) and the accept rule is
**accept iff score >= threshold** (see :mod:`convergent.server.inference.verify`).

- FAR = fraction of impostor pairs (different subjects) accepted.
- TAR = fraction of genuine pairs (same subject) accepted = 1 - false-reject rate.

A FAR is only measurable when enough impostor pairs exist: resolving FAR f needs at least
``min_errors / f`` impostors (default 10 / f, i.e. >= 10 accepted impostors at the
threshold); otherwise :class:`FailedPrecondition` says how many are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convergent.server.errors import FailedPrecondition, InvalidInput
from convergent.server.inference._validate import as_scores, as_vectors, open_unit_float, positive_int
from convergent.server.inference.identify import normalize_rows

__all__ = [
    "Calibration",
    "EqualErrorRate",
    "OperatingPoint",
    "PairScores",
    "calibrate_threshold",
    "equal_error_rate",
    "labelled_pairs",
    "min_impostors_for",
    "operating_points",
    "pairs_from_anchor_set",
]


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate_threshold`.

    threshold: accept iff score >= threshold. far: FAR achieved on the given impostors
    (<= requested_far). tar: TAR on the given genuine pairs at that threshold.
    """

    threshold: float
    far: float
    tar: float
    requested_far: float
    n_genuine: int
    n_impostor: int


@dataclass(frozen=True)
class PairScores:
    """Similarity scores of genuine (same-subject) and impostor pairs, 1-D float32, higher = more similar."""

    genuine: np.ndarray
    impostor: np.ndarray


def min_impostors_for(far: float, min_errors: int = 10) -> int:
    """Impostor pairs needed to resolve ``far``: ceil(min_errors / far)."""
    return int(math.ceil(round(min_errors / far, 9)))


def calibrate_threshold(genuine: np.ndarray, impostor: np.ndarray, far: float, *, min_errors: int = 10) -> Calibration:
    """Smallest threshold whose FAR on ``impostor`` (m,) is <= ``far``, and its TAR on ``genuine`` (g,).

    With the impostors sorted descending s_1 >= s_2 >= ..., at most a = floor(far * m) of them may
    be accepted; the threshold is the next representable value above s_{a+1} (in the scores'
    dtype), so every impostor scoring s_{a+1} or less is rejected. Ties at s_{a+1} make the
    achieved FAR lower than requested, never higher.

    Raises InvalidInput for far not in (0, 1) or NaN, empty / non-1-D / non-finite scores;
    FailedPrecondition when m < ceil(min_errors / far).
    """
    far = open_unit_float(far, "far")
    min_errors = positive_int(min_errors, "min_errors")
    gen = as_scores(genuine, "genuine")
    imp = as_scores(impostor, "impostor")
    m = imp.shape[0]
    needed = min_impostors_for(far, min_errors)
    if m < needed:
        raise FailedPrecondition(
            f"FAR {far:g} cannot be resolved from {m} impostor pairs: at least {needed} are needed "
            f"({min_errors}/FAR); add anchors or request a larger FAR",
            reason="UNRESOLVABLE_RATE", metadata={"have": m, "need": needed},
        )
    dtype = np.result_type(gen.dtype, imp.dtype)
    allowed = int(math.floor(far * m * (1 + 1e-12)))  # accepted impostors allowed, < m
    boundary = np.partition(imp.astype(dtype), m - 1 - allowed)[m - 1 - allowed]  # s_{allowed+1}
    threshold = float(np.nextafter(boundary, dtype.type(np.inf), dtype=dtype))
    achieved = float(np.count_nonzero(imp.astype(np.float64) >= threshold)) / m
    tar = float(np.count_nonzero(gen.astype(np.float64) >= threshold)) / gen.shape[0]
    return Calibration(threshold=threshold, far=achieved, tar=tar, requested_far=far,
                       n_genuine=int(gen.shape[0]), n_impostor=int(m))


@dataclass(frozen=True)
class OperatingPoint:
    """TAR at a requested FAR: threshold (accept iff score >= threshold), far (achieved on the impostors, <= requested)."""

    requested_far: float
    threshold: float
    far: float
    tar: float


@dataclass(frozen=True)
class EqualErrorRate:
    """The threshold where FAR and false-reject rate (1 - TAR) meet: eer = their mean there."""

    eer: float
    threshold: float


def operating_points(genuine: np.ndarray, impostor: np.ndarray, fars=(1e-2, 1e-3, 1e-4), *,
                     min_errors: int = 10) -> list[OperatingPoint]:
    """One :class:`OperatingPoint` per FAR in ``fars`` that ``impostor`` (m,) resolves
    (m >= min_errors / far); FARs it cannot resolve are left out."""
    points = []
    for far in fars:
        try:
            cal = calibrate_threshold(genuine, impostor, far, min_errors=min_errors)
        except FailedPrecondition:
            continue
        points.append(OperatingPoint(requested_far=far, threshold=cal.threshold, far=cal.far, tar=cal.tar))
    return points


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> EqualErrorRate:
    """EER of genuine (g,) and impostor (m,) scores (higher = more similar): over the candidate
    thresholds (every score), the one minimising |FAR - FRR|, reported as (FAR + FRR) / 2."""
    gen = np.sort(as_scores(genuine, "genuine").astype(np.float64))
    imp = np.sort(as_scores(impostor, "impostor").astype(np.float64))
    t = np.unique(np.concatenate([gen, imp]))
    far = 1.0 - np.searchsorted(imp, t, side="left") / imp.size   # impostors >= t
    frr = np.searchsorted(gen, t, side="left") / gen.size         # genuine < t
    best = int(np.argmin(np.abs(far - frr)))
    return EqualErrorRate(eer=float((far[best] + frr[best]) / 2), threshold=float(t[best]))


def pairs_from_anchor_set(A_mapped: np.ndarray, B: np.ndarray, max_impostors: int = 100_000, *,
                          same: np.ndarray | None = None, seed: int = 0, chunk: int = 16384) -> PairScores:
    """Genuine and impostor cosine scores from a paired anchor set.

    A_mapped (n, d): anchors of model A mapped into B's space; B (n, d): the same anchors
    embedded by model B, row i of both being the same item. Genuine = the n same-row pairs
    cos(A_mapped[i], B[i]); impostor = different-row pairs cos(A_mapped[i], B[j]), i != j: all
    n(n-1) of them when that is <= ``max_impostors``, else a uniform sample of ``max_impostors``
    distinct off-diagonal pairs drawn with ``seed`` (vectorised, scored in ``chunk``-row blocks).

    ``same`` (n, n) bool: pairs that probably show one subject (see
    :func:`~convergent.server.inference.repeats.find_repeated_subjects`): left out of the
    impostors. Without it every pair of different rows counts as an impostor: conservative when
    two rows may show one person (the real FAR is then at most the reported one).
    """
    A = normalize_rows(as_vectors(A_mapped, "A_mapped"))
    Bn = normalize_rows(as_vectors(B, "B"))
    if A.shape != Bn.shape:
        raise InvalidInput(f"A_mapped and B must have the same shape, got {A.shape} and {Bn.shape}")
    max_impostors = positive_int(max_impostors, "max_impostors")
    chunk = positive_int(chunk, "chunk")
    n = A.shape[0]
    if n < 2:
        raise InvalidInput("at least 2 anchors are needed to form impostor pairs")
    if same is not None and np.shape(same) != (n, n):
        raise InvalidInput(f"same must be ({n}, {n}), got {np.shape(same)}")
    genuine = np.einsum("ij,ij->i", A, Bn)
    total = n * (n - 1)
    if total <= max_impostors:
        rows, cols = np.nonzero(~np.eye(n, dtype=bool))
    else:
        t = np.random.default_rng(seed).choice(total, size=max_impostors, replace=False)
        rows = t // (n - 1)
        r = t % (n - 1)
        cols = r + (r >= rows)  # skip the diagonal
    scores = _row_pair_scores(A, Bn, rows, cols, chunk)
    if same is not None:
        scores = scores[~np.asarray(same, dtype=bool)[rows, cols]]
    return PairScores(genuine=genuine.astype(np.float32), impostor=scores)


def _row_pair_scores(A: np.ndarray, B: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int) -> np.ndarray:
    """cos(A[rows[t]], B[cols[t]]) for unit rows, (len(rows),) float32, in ``chunk``-pair blocks."""
    out = np.empty(len(rows), dtype=np.float32)
    for s in range(0, len(rows), chunk):
        i, j = rows[s : s + chunk], cols[s : s + chunk]
        out[s : s + chunk] = np.einsum("ij,ij->i", A[i], B[j])
    return out


def labelled_pairs(scores: np.ndarray, same: np.ndarray) -> PairScores:
    """Split scores (n,) of labelled pairs by ``same`` (n,) bool: True -> genuine, False -> impostor."""
    s = as_scores(scores, "scores")
    same_arr = np.asarray(same)
    if same_arr.dtype != bool:
        raise InvalidInput(f"same must be a bool array, got dtype {same_arr.dtype}")
    if same_arr.shape != s.shape:
        raise InvalidInput(f"same has shape {same_arr.shape}, scores {s.shape}")
    return PairScores(genuine=s[same_arr], impostor=s[~same_arr])
