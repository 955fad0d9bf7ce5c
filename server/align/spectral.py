"""Many-to-many unit matching: spectral clustering of the joint correlation graph of both models'
units (Li et al., "Convergent Learning", ICLR 2016, §5), fitted from :class:`PairedStats`.
"""

from __future__ import annotations

import numpy as np

from convergent.server.align._units import restore_ints, unit_stats
from convergent.server.align.maps import _AffineMap
from convergent.server.align.stats import PairedStats
from convergent.server.errors import InvalidInput

_FLOOR = 1e-8  # affinity floor: keeps dead (constant) units attached so the graph is connected


def _eigengap(A: np.ndarray, k_max: int) -> tuple[int, np.ndarray]:
    """(k, eigenvalues) by the eigengap heuristic (von Luxburg, Stat. Comput. 2007): ascending
    eigenvalues mu of the normalised Laplacian I - D^-1/2 A D^-1/2; k in [2, k_max] maximises
    mu_{k+1} - mu_k (k_max < 2 -> 1)."""
    d = A.sum(axis=1)
    s = 1.0 / np.sqrt(np.clip(d, 1e-300, None))
    mu = np.clip(1.0 - np.linalg.eigvalsh(s[:, None] * A * s[None, :])[::-1], 0.0, 2.0)
    if k_max < 2:
        return 1, mu
    gaps = mu[2 : k_max + 1] - mu[1:k_max]  # gap after the k-th eigenvalue, k = 2..k_max
    return int(np.argmax(gaps)) + 2, mu


class SpectralMatching(_AffineMap):
    """Groups of units shared by two models, by spectral clustering (Ng, Jordan & Weiss,
    NIPS 2001; scikit-learn ``SpectralClustering(affinity="precomputed")``) of the
    (d_x + d_y)-node graph with affinity ``|[[Rxx, Rxy], [Rxy^T, Ryy]]|`` (absolute Pearson
    correlations of all units of both models, zero diagonal, floored at 1e-8).

    n_groups: None -> eigengap heuristic over k in [2, min(d_x, d_y)] on the normalised
    Laplacian of that graph (``n_groups_`` records the choice); an int must be in
    [1, min(d_x, d_y)]. Groups are numbered by their first unit (source units first).

    Map (consistent with the groups): each target unit is ridge-regressed on the source units
    of its own group only, from the statistics: ``W[j, S_g] = (Sxx[S_g, S_g] + lam I)^-1
    Sxy[S_g, j]`` with ``lam = reg * tr(Sxx[S_g, S_g]) / |S_g|``; target units whose group has
    no source unit predict their mean; ``b = mean_y - W mean_x``. ``W`` is block-sparse.

    Learned: ``source_groups_`` int64 (d_x,), ``target_groups_`` int64 (d_y,),
    ``group_sizes_`` int64 (n_groups, 2) = [source units, target units],
    ``group_correlation_`` (n_groups,): mean |corr| over the group's cross-model pairs
    (NaN when one side is empty; higher = the group is a better shared feature),
    ``n_groups_``, ``laplacian_eigenvalues_`` (ascending, the first min(d_x + d_y, 64)),
    ``coef_``, ``intercept_``.
    ``export()``: "source_groups", "target_groups", "group_sizes", "group_correlation", "W", "b".
    """

    _hyper = ("n_groups", "reg", "assign_labels", "random_state")
    _state_arrays = (
        "coef_", "intercept_", "source_groups_", "target_groups_", "group_sizes_", "group_correlation_",
        "laplacian_eigenvalues_",
    )
    _state_scalars = ("n_groups_",)
    _int_arrays = ("source_groups_", "target_groups_", "group_sizes_")

    def __init__(self, n_groups: int | None = None, reg: float = 1e-3, assign_labels: str = "kmeans", random_state: int = 0):
        self.n_groups = n_groups
        self.reg = reg
        self.assign_labels = assign_labels
        self.random_state = random_state

    def fit_stats(self, stats: PairedStats) -> "SpectralMatching":
        self._start_fit(stats, 2)
        if not isinstance(self.reg, (int, float, np.number)) or not float(self.reg) >= 0:
            raise InvalidInput(f"reg must be >= 0, got {self.reg}", reason="PARAMETER_OUT_OF_RANGE", field="params.reg")
        if self.assign_labels not in ("kmeans", "discretize", "cluster_qr"):
            raise InvalidInput(f"assign_labels must be 'kmeans', 'discretize' or 'cluster_qr', got {self.assign_labels!r}")
        d_x, d_y = stats.d_x, stats.d_y
        k_max = min(d_x, d_y)
        if self.n_groups is not None:
            if not isinstance(self.n_groups, (int, np.integer)) or isinstance(self.n_groups, bool) or not 1 <= self.n_groups <= k_max:
                raise InvalidInput(f"n_groups must be an integer in [1, min(d_x, d_y)] = [1, {k_max}], got {self.n_groups}", reason="PARAMETER_OUT_OF_RANGE",
                                   field="params.n_groups")
        u = unit_stats(stats)
        assert u.rxx is not None and u.ryy is not None and u.sxx is not None  # full statistics
        A = np.abs(np.block([[u.rxx, u.rxy], [u.rxy.T, u.ryy]]))
        A = np.maximum(A, _FLOOR)
        np.fill_diagonal(A, 0.0)
        k_auto, mu = _eigengap(A, k_max)
        k = k_auto if self.n_groups is None else int(self.n_groups)
        if k == 1:
            labels = np.zeros(d_x + d_y, dtype=np.int64)
        else:
            from sklearn.cluster import SpectralClustering  # lazy: keeps the package import light

            sc = SpectralClustering(
                n_clusters=k, affinity="precomputed", assign_labels=self.assign_labels, random_state=self.random_state
            )
            labels = sc.fit_predict(A).astype(np.int64)
        uniq, first = np.unique(labels, return_index=True)  # renumber by first unit: deterministic ids
        rank = np.empty(uniq.size, dtype=np.int64)
        rank[np.argsort(first)] = np.arange(uniq.size)
        labels = rank[np.searchsorted(uniq, labels)]
        g = uniq.size
        src, tgt = labels[:d_x], labels[d_x:]
        sizes = np.stack([np.bincount(src, minlength=g), np.bincount(tgt, minlength=g)], axis=1).astype(np.int64)
        gcorr = np.full(g, np.nan)
        W = np.zeros((d_y, d_x))
        for grp in range(g):
            S, T = np.flatnonzero(src == grp), np.flatnonzero(tgt == grp)
            if S.size == 0 or T.size == 0:
                continue
            gcorr[grp] = float(np.abs(u.rxy[np.ix_(S, T)]).mean())
            sxx = u.sxx[np.ix_(S, S)]
            lam = float(self.reg) * max(float(np.trace(sxx)) / S.size, 1e-300)
            W[np.ix_(T, S)] = np.linalg.lstsq(sxx + lam * np.eye(S.size), u.sxy[np.ix_(S, T)], rcond=None)[0].T
        self.source_groups_, self.target_groups_ = src, tgt
        self.group_sizes_, self.group_correlation_, self.n_groups_ = sizes, gcorr, int(g)
        self.laplacian_eigenvalues_ = mu[: min(mu.size, 64)]
        self.coef_, self.intercept_ = W, u.mean_y - W @ u.mean_x
        return self

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "SpectralMatching":
        est = super().from_state(params, arrays)
        restore_ints(est, cls._int_arrays)
        return est

    def export(self) -> dict[str, np.ndarray]:
        out = super().export()
        out.update(
            source_groups=np.asarray(self.source_groups_, dtype=np.int64).copy(),
            target_groups=np.asarray(self.target_groups_, dtype=np.int64).copy(),
            group_sizes=np.asarray(self.group_sizes_, dtype=np.int64).copy(),
            group_correlation=np.array(self.group_correlation_, dtype=np.float64),
        )
        return out
