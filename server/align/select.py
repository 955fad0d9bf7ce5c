"""Automatic choice of the map family on held-out anchors, and fit diagnostics.

Criterion (validated on real embeddings, see ``tests/unit/align/test_align_realdata.py``):

* Every candidate is fitted on the fitting anchors' statistics and scored on held-out pairs
  by the per-row Euclidean retrieval **margin**
  ``(min_{j != i} |f(x_i) - y_j|^2 - |f(x_i) - y_i|^2) / spread(Y)`` (higher is better).
  Plain held-out top-1 of paired anchors mis-ranks maps: it rewards maps that separate
  near-duplicate anchors (other photos of people seen in training) and on AT&T faces chose
  maps up to 0.32 rank-1 worse on unseen people. The cosine margin ranks the real pairs
  almost as well but prefers a rigid map even when the true map is clearly anisotropic
  (R^2 0.5 vs 0.997 on synthetic data); the Euclidean margin does not.
* **One-standard-error rule** (Breiman et al. 1984; Hastie, Tibshirani & Friedman, ESL
  §7.10): candidates are ordered simple -> complex (``permutation`` < ``semi_matching`` <
  ``procrustes`` < ``procrustes_scaled`` < ``spectral`` < ``ridge`` < ``sparse`` < ``cca``;
  the default set is permutation, procrustes, scaled procrustes, ridge); the simplest one whose mean margin is within one paired standard
  error of the best is chosen. Held-out anchors are few and come from the same
  items/identities as the fitting ones, so they flatter flexible maps; the rule keeps the
  rigid map unless the flexible one is clearly better. When two maps are nearly identical
  (a true permutation fitted by both a permutation and a ridge map) the paired standard error
  vanishes, so the allowance is at least 0.5% of the best score.
* Evidence, 10 real tasks (6 face pairs dlib/FaceNet/MobileFace, MiniLM<->mpnet at 200-800
  anchors) x 3 split seeds, regret = best map on unseen items minus the chosen one:
  mean / max 0.008 / 0.061 for margin_l2 + 1-SE (the default); 0.011 / 0.061 without the
  rule; 0.012 / 0.133 for margin_cos + 1-SE; 0.034 / 0.322 for plain held-out top-1.
* CCA is not a default candidate: it never won on unseen items there and, being nearly
  unregularised least squares at full rank, was picked wrongly on held-out anchors (mean
  regret 0.027, max 0.21 with it in the set). Pass ``candidates=(..., "cca")`` to include it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from convergent.server.align._validate import as_pair
from convergent.server.align.maps import CCAMap, RidgeMap, _AffineMap
from convergent.server.align.methods import CANDIDATES, METHODS, default_candidates, fit_candidate
from convergent.server.align.metrics import (
    linear_cka_to,
    mutual_knn,
    mutual_knn_chance,
    r2_score,
    retrieval_margin,
    retrieval_scores,
)
from convergent.server.align.split import heldout_split
from convergent.server.align.stats import PairedStats
from convergent.server.errors import InvalidInput

# CANDIDATES (name -> a callable giving a fresh estimator, in the 1-SE rule's order) and
# DEFAULT_CANDIDATES come from the method table (methods.py). Unit matching (one free
# parameter per unit) is the simplest family: it wins only where units really correspond
# (networks trained alike); elsewhere its margin is far below and the 1-SE rule passes it by.
CRITERIA = ("margin_l2", "margin_cos", "top1")
MIN_HELDOUT = 3
RELATIVE_TOLERANCE = 0.005


@dataclass
class AutoResult:
    """Outcome of :func:`fit_auto_stats`.

    name: the chosen candidate; estimator: it, refitted on all anchors when ``refit``;
    scores / stderr: per candidate, mean held-out criterion (higher is better) and its standard
    error; gap: the best score minus the candidate's (>= 0); allowed: the gap the one-SE rule
    tolerates for that candidate, max(paired standard error of the per-anchor differences to
    the best, RELATIVE_TOLERANCE x |best score|); the chosen candidate is the simplest with
    gap <= allowed. n_fit / n_heldout: anchors used to fit / to score; criterion; diagnostics:
    of the chosen map fitted on the fitting anchors only, on the held-out anchors (see
    :func:`diagnostics`).
    """

    name: str
    estimator: _AffineMap
    scores: dict[str, float]
    stderr: dict[str, float]
    n_fit: int
    n_heldout: int
    criterion: str
    diagnostics: dict = field(default_factory=dict)
    gap: dict[str, float] = field(default_factory=dict)
    allowed: dict[str, float] = field(default_factory=dict)


def _per_row(criterion: str, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    if criterion.startswith("margin"):
        metric = "euclidean" if criterion == "margin_l2" else "cosine"
        return retrieval_margin(pred, target, pool=None, per_row=True, metric=metric)
    S = pred / np.linalg.norm(pred, axis=1, keepdims=True).clip(1e-12)
    S = S @ (target / np.linalg.norm(target, axis=1, keepdims=True).clip(1e-12)).T
    return ((S > np.diag(S)[:, None]).sum(1) == 0).astype(np.float64)


def fit_auto_stats(
    fit_stats: PairedStats,
    X_held,
    Y_held,
    *,
    candidates: Sequence[str] | None = None,
    criterion: str = "margin_l2",
    one_se: bool = True,
    refit: bool = True,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> AutoResult:
    """Fit every candidate on ``fit_stats``, score it on the held-out pairs, keep the winner.

    fit_stats: statistics of the fitting anchors only (held-out rows excluded; with cached
    statistics of all anchors use ``stats.copy().subtract(X_held, Y_held)``).
    X_held (m, d_x), Y_held (m, d_y): held-out pairs, m >= 3 (cap them, e.g. 2000; cost O(m^2)).
    candidates: names from ``CANDIDATES`` (None: ``default_candidates`` for the number of pairs;
    those trained on pairs only when ``pairs`` are given); pairs: (X (k, d_x), Y (k, d_y)) fitting
    pairs (or a sample) for candidates that train on pairs (the mlp map); criterion: "margin_l2" (default), "margin_cos" or
    "top1" (kept for comparison; it mis-ranks). one_se: apply the one-standard-error rule (else plain max).
    refit: refit the winner on fitting + held-out anchors.
    """
    X_held, Y_held = as_pair(X_held, Y_held, names=("X_held", "Y_held"))
    if X_held.shape[0] < MIN_HELDOUT:
        raise InvalidInput(f"need at least {MIN_HELDOUT} held-out anchor pairs to choose a map, got {X_held.shape[0]}")
    if not isinstance(fit_stats, PairedStats) or (X_held.shape[1], Y_held.shape[1]) != (fit_stats.d_x, fit_stats.d_y):
        raise InvalidInput("held-out dims do not match the fitting statistics")
    if criterion not in CRITERIA:
        raise InvalidInput(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if candidates is None:
        candidates = [c for c in default_candidates(fit_stats.n + X_held.shape[0])
                      if pairs is not None or not METHODS[CANDIDATES[c].method].needs_pairs]
    names = [c for c in CANDIDATES if c in set(candidates)]  # keep the simple -> complex order
    unknown = set(candidates) - set(CANDIDATES)
    if unknown or not names:
        raise InvalidInput(f"unknown or empty candidates {sorted(unknown) or list(candidates)}; choose from {list(CANDIDATES)}")

    fitted, rows = {}, {}
    for name in names:
        fitted[name] = fit_candidate(name, fit_stats, pairs)
        rows[name] = _per_row(criterion, fitted[name].transform(X_held).astype(np.float64), Y_held.astype(np.float64))
    m = X_held.shape[0]
    scores = {k: float(v.mean()) for k, v in rows.items()}
    stderr = {k: float(v.std(ddof=1) / np.sqrt(m)) for k, v in rows.items()}
    best = max(names, key=scores.__getitem__)
    gap, allowed = {}, {}
    for name in names:
        diff = rows[best] - rows[name]
        gap[name] = float(diff.mean())
        # Near-identical maps make the paired standard error vanish; a relative floor
        # (RELATIVE_TOLERANCE of the best score) keeps the simpler one in that case.
        allowed[name] = float(max(diff.std(ddof=1) / np.sqrt(m), RELATIVE_TOLERANCE * abs(scores[best])))
    chosen = best
    if one_se:
        chosen = next(name for name in names if gap[name] <= allowed[name])  # simplest first; best qualifies
    diag = diagnostics(fitted[chosen], X_held, Y_held, fit_stats.n, fit_stats.d_x, fit_stats=fit_stats)
    estimator = fitted[chosen]
    if refit:
        every = None if pairs is None else (np.vstack([pairs[0], X_held]), np.vstack([pairs[1], Y_held]))
        estimator = fit_candidate(chosen, fit_stats.copy().update(X_held, Y_held), every)
    return AutoResult(chosen, estimator, scores, stderr, fit_stats.n, m, criterion, diag, gap, allowed)


def fit_auto(
    X,
    Y,
    *,
    ids: Sequence[str] | None = None,
    seed: int = 0,
    fraction: float = 0.2,
    cap: int = 2000,
    **kwargs,
) -> AutoResult:
    """In-memory convenience: split (X (n, d_x), Y (n, d_y)) by :func:`heldout_split` and run
    :func:`fit_auto_stats`. ids default to the row numbers as strings."""
    X, Y = as_pair(X, Y)
    ids = [str(i) for i in range(X.shape[0])] if ids is None else list(ids)
    if len(ids) != X.shape[0]:
        raise InvalidInput(f"got {len(ids)} ids for {X.shape[0]} anchors")
    held = heldout_split(ids, seed=seed, fraction=fraction, cap=cap)
    return fit_auto_stats(PairedStats.from_arrays(X[~held], Y[~held]), X[held], Y[held], pairs=(X[~held], Y[~held]), **kwargs)


def diagnostics(estimator: _AffineMap, X_held, Y_held, n_fit: int, d_x: int, *, fit_stats: PairedStats | None = None) -> dict:
    """Quality report of a fitted map on held-out pairs X_held (m, d_x), Y_held (m, d_y).

    Keys (all higher is better unless said): ``r2`` (-inf, 1], uniform over outputs, and
    ``r2_variance_weighted`` (same range; robust to near-constant target units); ``cka`` debiased linear CKA of
    mapped vs true targets [~0, 1]; ``cka_models`` the same of the raw X vs Y (how alike the
    two models are, map-free); ``mutual_knn`` (mapped vs true, k = min(10, m-1)) [0, 1] with
    ``mutual_knn_chance``; ``top1``/``top5`` paired retrieval among the m held-out targets;
    ``margin`` (see metrics.retrieval_margin); ``n_heldout``, ``n_fit``; ``condition_number``
    of the fitting anchors' centred X^T X (lower is better; inf when singular; None without
    ``fit_stats``); ``warnings``: list of strings.
    """
    X_held, Y_held = as_pair(X_held, Y_held, min_rows=MIN_HELDOUT, names=("X_held", "Y_held"))
    pred = estimator.transform(X_held).astype(np.float64)
    Yh = Y_held.astype(np.float64)
    m = X_held.shape[0]
    k = min(10, m - 1)
    # The similarity products in float32 (half the time of float64; the scores move by ~1e-6,
    # far below their held-out noise); r2 and every sum in float64.
    cka, cka_models = linear_cka_to(Yh, pred, X_held, dtype=np.float32) if m >= 4 else (None, None)
    out = {
        "r2": r2_score(Yh, pred),
        "r2_variance_weighted": r2_score(Yh, pred, multioutput="variance_weighted"),
        "cka": cka,
        "cka_models": cka_models,
        "mutual_knn": mutual_knn(pred, Yh, k=k, dtype=np.float32),
        "mutual_knn_chance": mutual_knn_chance(min(m, 2000), k),
        **retrieval_scores(pred, Yh, ks=(1, 5), dtype=np.float32),  # top1, top5, margin
        "n_heldout": int(m),
        "n_fit": int(n_fit),
        "condition_number": None,
    }
    warnings = []
    if n_fit < d_x:
        warnings.append("too few anchors for dimension")
    if isinstance(estimator, (RidgeMap, CCAMap)) and 0.5 * d_x <= n_fit <= 2 * d_x:
        warnings.append("n close to d (interpolation threshold)")
    if fit_stats is not None and fit_stats.n >= 2:
        e = np.linalg.eigvalsh(fit_stats.scatter()[0])
        cond = float(e[-1] / e[0]) if e[0] > 1e-300 * max(e[-1], 1e-300) and e[0] > 0 else float("inf")
        out["condition_number"] = cond
        if cond > 1e8:
            warnings.append("ill-conditioned")
    out["warnings"] = warnings
    return out
