"""Which pairs of unlabeled anchors probably show the same subject (two photos of one face).

Anchors carry no labels, yet a face anchor set usually holds several photos of each person.
Counting those pairs as impostors puts a verification threshold above every real genuine pair
(AT&T anchors, FAR 1e-2: TAR 0.000 on unseen people). Two photos of one subject are similar
in *both* models' own spaces, so :func:`find_repeated_subjects` fits a two-component Gaussian
mixture (scikit-learn) to the pairs' native similarities, Fisher-z transformed,
``(artanh cos_A(i, j), artanh cos_B(i, j))`` for i < j, and calls a pair *probably the same
subject* when the posterior of the higher component is >= 0.5.

A mixture finds two components also where every anchor is a different item (text): it splits a
skewed bulk in two. The high component is therefore taken as repeated subjects only when it is a
**minority** (weight <= ``max_share``) and a **separate mode**: Ashman's
D = sqrt(2) |mu_hi - mu_lo| / sqrt(var_hi + var_lo) >= ``min_separation`` in both models, and
a density valley between the two means (a narrow component on the tail of a smooth bulk has
a large D too). Otherwise no pair is excluded and the anchors count as distinct items (the conservative choice: FAR kept, TAR low).

Measured (docs/verification.md): AT&T anchors of 20 people, dlib/FaceNet, four identity splits:
D 3.5-4.3, 99-100% of same-person pairs found, <= 0.12% of other pairs flagged; WordNet glosses
(all distinct): D <= 1.3, nothing excluded; the unconstrained mixture flagged 20-47% there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convergent.server.inference._validate import as_vectors
from convergent.server.inference.identify import normalize_rows

__all__ = ["RepeatedSubjects", "find_repeated_subjects"]

MIN_ANCHORS = 20  # below this a mixture of pair similarities means nothing
MAX_VALLEY = 0.5  # a separate mode: the density between the means falls below half its value at the high mean


@dataclass(frozen=True)
class RepeatedSubjects:
    """Result of :func:`find_repeated_subjects` for n anchors.

    same: (n, n) bool, symmetric, False on the diagonal: pair (i, j) probably shows one subject
    (all False unless ``detected``). share: fraction of anchor pairs i < j marked ``same``.
    weight: mixture weight of the high component; separation: the smaller of the two models'
    Ashman's D between the components (0 when no mixture was fitted); reason: why it was or was
    not taken as repeated subjects, in words.
    """

    same: np.ndarray
    detected: bool
    share: float
    weight: float
    separation: float
    reason: str


def _pair_features(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(m, 2) Fisher-z native similarities of the m = n(n-1)/2 pairs i < j, and their indices."""
    iu = np.triu_indices(A.shape[0], 1)
    features = np.empty((iu[0].size, 2))
    for column, X in enumerate((A, B)):
        S = X.astype(np.float64) @ X.T.astype(np.float64)
        features[:, column] = np.arctanh(np.clip(S[iu], -0.999999, 0.999999))
    return features, iu


def _valley_depth(mixture, low: np.ndarray, high: np.ndarray, steps: int = 64) -> float:  # noqa: ANN001
    """min over the segment low -> high of the mixture density, over its density at ``high``:
    < 1 when a valley separates the modes, 1 when the density only falls towards ``high`` (a
    narrow component sitting on the bulk's tail)."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    density = np.exp(mixture.score_samples(low + t * (high - low)))
    return float(density.min() / max(density[-1], 1e-300))


def _best_mixture(sample: np.ndarray, seed: int):  # noqa: ANN202
    """The most likely of several two-component fits: k-means starts (which tend to halve the
    bulk) and starts with the high component on the top 5% / 0.5% of pairs (a small mode)."""
    from sklearn.mixture import GaussianMixture

    score = sample.sum(axis=1)
    starts = [None] + [np.array([np.median(sample, axis=0), sample[score >= np.quantile(score, q)].mean(axis=0)])
                       for q in (0.95, 0.995)]
    fits = [GaussianMixture(2, covariance_type="full", n_init=3 if start is None else 1, means_init=start,
                            random_state=seed, reg_covar=1e-6).fit(sample) for start in starts]
    return max(fits, key=lambda fit: fit.score(sample))


def find_repeated_subjects(
    A: np.ndarray,
    B: np.ndarray,
    *,
    max_share: float = 0.2,
    min_separation: float = 2.0,
    max_fit_pairs: int = 100_000,
    seed: int = 0,
) -> RepeatedSubjects:
    """Anchor pairs that probably show the same subject, from both models' own similarities.

    A (n, d_a) and B (n, d_b): the same n anchors embedded by two models, row i of both the same
    item (normalised here). The mixture is fitted on at most ``max_fit_pairs`` pairs drawn with
    ``seed`` and applied to all pairs. Raises InvalidInput for mismatched or non-finite input.
    """
    A = normalize_rows(as_vectors(A, "A"))
    B = normalize_rows(as_vectors(B, "B"))
    n = A.shape[0]
    if B.shape[0] != n:
        from convergent.server.errors import InvalidInput

        raise InvalidInput(f"A has {n} rows and B {B.shape[0]}: they must be the same anchors")
    none = np.zeros((n, n), dtype=bool)
    if n < MIN_ANCHORS:
        return RepeatedSubjects(none, False, 0.0, 0.0, 0.0, f"only {n} anchors: fewer than {MIN_ANCHORS}")
    features, iu = _pair_features(A, B)
    rng = np.random.default_rng(seed)
    sample = features if len(features) <= max_fit_pairs else features[rng.choice(len(features), max_fit_pairs, replace=False)]
    if np.ptp(sample, axis=0).min() <= 1e-9:
        return RepeatedSubjects(none, False, 0.0, 0.0, 0.0, "the anchors' similarities do not vary")
    mixture = _best_mixture(sample, seed)
    high = int(np.argmax(mixture.means_.sum(axis=1)))
    low = 1 - high
    spread = mixture.covariances_[high].diagonal() + mixture.covariances_[low].diagonal()
    separation = float(np.min(np.sqrt(2) * (mixture.means_[high] - mixture.means_[low]) / np.sqrt(spread)))
    weight = float(mixture.weights_[high])
    if weight > max_share:
        return RepeatedSubjects(none, False, 0.0, weight, separation,
                                f"no minority mode of similar pairs (high component holds {weight:.0%} of pairs)")
    if separation < min_separation:
        return RepeatedSubjects(none, False, 0.0, weight, separation,
                                f"no separate mode of similar pairs (separation D {separation:.2f} < {min_separation:g})")
    dip = _valley_depth(mixture, mixture.means_[low], mixture.means_[high])
    if dip > MAX_VALLEY:
        return RepeatedSubjects(none, False, 0.0, weight, separation,
                                f"the similar pairs are a tail, not a separate mode (no density valley: {dip:.2f} > {MAX_VALLEY:g})")
    flagged = mixture.predict_proba(features)[:, high] >= 0.5
    same = none.copy()
    same[iu[0][flagged], iu[1][flagged]] = True
    same |= same.T
    share = float(flagged.mean())
    return RepeatedSubjects(same, True, share, weight, separation,
                            f"{int(flagged.sum())} of {len(flagged)} anchor pairs ({share:.1%}) look like one subject "
                            f"in both models (mixture separation D {separation:.2f})")
