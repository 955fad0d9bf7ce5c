"""One-to-one and semi unit matching (Li, Yosinski, Clune, Lipson & Hopcroft, "Convergent
Learning: Do different neural networks learn the same representations?", ICLR 2016).

Units (embedding dimensions, hidden neurons) of two models are paired by the Pearson
correlation of their activations on the same anchors, computed from :class:`PairedStats`.
Each matched pair becomes a one-unit linear regression, so the fitted map is affine and
sparse: ``W`` (d_y, d_x) has at most one non-zero per source column.

``score`` (inherited) is the uniform-average R^2 on (-inf, 1], higher is better. The
matching quality itself is ``matched_correlation_`` (per source unit) and its mean
``mean_matched_correlation_`` in [-1, 1] (in [0, 1] with ``sign=True``), higher = more
convergent; ``matched_correlation_summary()`` gives mean/median/min/max via
:func:`metrics.matched_correlation_stats`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convergent.server.align._units import restore_ints, slopes, unit_stats
from convergent.server.align._validate import as_matrix
from convergent.server.align.maps import _AffineMap
from convergent.server.align.metrics import matched_correlation_stats
from convergent.server.align.stats import PairedStats
from convergent.server.errors import InvalidInput


class _UnitMatch(_AffineMap):
    """Common state of the one-unit-per-source matchers."""

    _hyper = ("sign", "scale")
    _state_scalars = ("mean_matched_correlation_",)
    _int_arrays: tuple[str, ...] = ()

    def __init__(self, sign: bool = True, scale: bool = True):
        self.sign = sign
        self.scale = scale

    def _scores(self, stats: PairedStats):
        self._start_fit(stats, 2)
        u = unit_stats(stats, full=False)
        return u, (np.abs(u.rxy) if self.sign else u.rxy)

    def _finish(self, u, src: np.ndarray, tgt: np.ndarray, score: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Set coef_/intercept_/matched correlations from matched pairs (src[k] -> tgt[k]) with
        prediction weights; return the per-source-unit slopes (d_x,), 0 where unmatched."""
        a = slopes(u, src, tgt, sign=bool(self.sign), scale=bool(self.scale))
        W = np.zeros((u.rxy.shape[1], u.rxy.shape[0]))
        np.add.at(W, (tgt, src), a * weight)
        self.coef_ = W
        self.intercept_ = u.mean_y - W @ u.mean_x
        corr = np.full(u.rxy.shape[0], np.nan)
        corr[src] = score[src, tgt]
        self.matched_correlation_ = corr
        self.mean_matched_correlation_ = float(np.nanmean(corr))
        unit_scale = np.zeros(u.rxy.shape[0])
        unit_scale[src] = a
        return unit_scale

    def matched_correlation_summary(self) -> dict[str, float]:
        """mean/median/min/max of the matched source units' correlations (unmatched excluded)."""
        self._check_fitted()
        c = self.matched_correlation_
        return matched_correlation_stats(c[np.isfinite(c)])

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "_UnitMatch":
        est = super().from_state(params, arrays)
        restore_ints(est, cls._int_arrays)
        return est


class PermutationMap(_UnitMatch):
    """One-to-one unit matching by maximum-weight bipartite matching (Hungarian method,
    Kuhn 1955; scipy ``linear_sum_assignment``), as the "bipartite matching" of Li et al. 2016.

    The matching maximises the summed ``|corr|`` (``sign=True``: a unit and its negation count
    as the same feature) or the summed signed correlation (``sign=False``, as in the paper)
    over the (d_x, d_y) cross-correlation matrix; rectangular when d_x != d_y, then only
    min(d_x, d_y) pairs are formed.

    Map: for a matched pair (i -> j), ``y_j = a_i (x_i - mean_x_i) + mean_y_j``; target units
    nobody is matched to predict their mean. ``scale=True``: ``a_i`` is the least-squares
    slope ``cov(x_i, y_j) / var(x_i)`` (signed when ``sign``, clipped at 0 otherwise);
    ``scale=False``: ``a_i = +-1`` (the correlation's sign when ``sign``, else 1).

    Learned: ``permutation_`` int64 (d_x,): target unit matched to source unit i, -1 if
    unmatched (only when d_x > d_y); ``unit_scale_`` (d_x,): ``a_i`` (0 if unmatched);
    ``matched_correlation_`` (d_x,): the matching score of each pair (|corr| if sign, else
    corr), NaN for unmatched source units; ``mean_matched_correlation_`` (their nan-mean);
    ``coef_`` (d_y, d_x), ``intercept_`` (d_y,).
    ``export()``: "permutation" (int64), "unit_scale", "matched_correlation", "W", "b".
    """

    _state_arrays = ("coef_", "intercept_", "permutation_", "unit_scale_", "matched_correlation_")
    _int_arrays = ("permutation_",)

    def fit_stats(self, stats: PairedStats) -> "PermutationMap":
        from scipy.optimize import linear_sum_assignment  # lazy: keeps the package import light

        u, score = self._scores(stats)
        src, tgt = linear_sum_assignment(score, maximize=True)
        self.unit_scale_ = self._finish(u, src, tgt, score, np.ones(len(src)))
        perm = np.full(stats.d_x, -1, dtype=np.int64)
        perm[src] = tgt
        self.permutation_ = perm
        return self

    def export(self) -> dict[str, np.ndarray]:
        out = super().export()
        out.update(
            permutation=np.asarray(self.permutation_, dtype=np.int64).copy(),
            unit_scale=np.array(self.unit_scale_, dtype=np.float64),
            matched_correlation=np.array(self.matched_correlation_, dtype=np.float64),
        )
        return out


class SemiMatchingMap(_UnitMatch):
    """Semi-matching of Li et al. 2016: every source unit takes its best-correlated target unit
    (argmax over the row of ``|corr|`` if ``sign`` else corr); several source units may pick
    the same target unit and some target units may be picked by none.

    Because every source unit keeps its row maximum, each matched correlation is >= the one
    bipartite matching gives it, so with d_x <= d_y the mean matched correlation of
    semi-matching is >= that of :class:`PermutationMap` on the same statistics.

    Map: a target unit j chosen by the source units S_j predicts the average of their one-unit
    regressions, ``y_j = mean_{i in S_j} a_i (x_i - mean_x_i) + mean_y_j`` (``a_i`` as in
    PermutationMap, by ``sign``/``scale``); a target unit nobody chose predicts its mean.

    Learned: ``assignment_`` int64 (d_x,), ``unit_scale_`` (d_x,) = ``a_i``,
    ``matched_correlation_`` (d_x,) (row maxima of the score), ``mean_matched_correlation_``,
    ``coef_``, ``intercept_``. ``export()``: "assignment" (int64), "matched_correlation",
    "W", "b".
    """

    _state_arrays = ("coef_", "intercept_", "assignment_", "unit_scale_", "matched_correlation_")
    _int_arrays = ("assignment_",)

    def fit_stats(self, stats: PairedStats) -> "SemiMatchingMap":
        u, score = self._scores(stats)
        src = np.arange(stats.d_x)
        tgt = np.argmax(score, axis=1).astype(np.int64)
        count = np.bincount(tgt, minlength=stats.d_y)
        self.unit_scale_ = self._finish(u, src, tgt, score, 1.0 / count[tgt])
        self.assignment_ = tgt
        return self

    def export(self) -> dict[str, np.ndarray]:
        out = super().export()
        out.update(
            assignment=np.asarray(self.assignment_, dtype=np.int64).copy(),
            matched_correlation=np.array(self.matched_correlation_, dtype=np.float64),
        )
        return out


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)),
    "identity": lambda z: z,
}


def hidden_activations(mlp, X, layer: int = 0) -> np.ndarray:
    """Hidden-unit activations of a fitted scikit-learn ``MLPClassifier``/``MLPRegressor``.

    X (n, d_in) -> (n, hidden_layer_sizes[layer]) float64: the forward pass
    ``act(... act(X W1 + b1) ...)`` up to hidden layer ``layer`` (0-based) with the net's own
    activation. These are the "units" whose correlations Li et al. 2016 match across nets.
    """
    coefs, intercepts = getattr(mlp, "coefs_", None), getattr(mlp, "intercepts_", None)
    if coefs is None or intercepts is None:
        raise InvalidInput("hidden_activations needs a fitted scikit-learn MLP (coefs_, intercepts_)")
    n_hidden = len(coefs) - 1
    if not 0 <= int(layer) < n_hidden:
        raise InvalidInput(f"layer must be in [0, {n_hidden - 1}], got {layer}")
    act = _ACTIVATIONS.get(getattr(mlp, "activation", None))
    if act is None:
        raise InvalidInput(f"unsupported activation {getattr(mlp, 'activation', None)!r}")
    H = as_matrix(X, "X").astype(np.float64)
    if H.shape[1] != coefs[0].shape[0]:
        raise InvalidInput(f"X has {H.shape[1]} columns, the net expects {coefs[0].shape[0]}", reason="DIMENSION_MISMATCH")
    for W, b in zip(coefs[: int(layer) + 1], intercepts[: int(layer) + 1]):
        H = act(H @ W + b)
    return H
