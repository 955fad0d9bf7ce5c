"""The compatibility atlas's clustering: which models can stand in for which (pure numpy/scipy).

Distance between two models a, b: ``1 - (top1(a -> b) + top1(b -> a)) / 2``, the held-out
cross-model retrieval top-1 of the two maps averaged (a missing direction counts as top-1 0, so
an unmeasured pair is as far apart as can be). Average-linkage hierarchical clustering on it
(scipy), cut at a distance; the leaf order puts models that stand in for each other side by side.
(Comparing and clustering models by their representations: Kornblith et al., ICML 2019; Li et
al., ICLR 2016, measure convergence by how well units and spaces map onto each other.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

CLUSTER_DISTANCE = 0.5  # same cluster: the two directions retrieve the true partner half the time on average


def distance_matrix(models: Sequence[str], top1: Mapping[tuple[str, str], float]) -> np.ndarray:
    """(m, m) float64 symmetric distances in [0, 1], zero diagonal; ``top1[(a, b)]`` in [0, 1]
    (missing or NaN: 0)."""
    m = len(models)
    D = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            pair = [top1.get((models[i], models[j]), np.nan), top1.get((models[j], models[i]), np.nan)]
            score = float(np.mean([0.0 if not np.isfinite(v) else min(max(v, 0.0), 1.0) for v in pair]))
            D[i, j] = D[j, i] = 1.0 - score
    return D


def cluster(models: Sequence[str], top1: Mapping[tuple[str, str], float],
            cut: float = CLUSTER_DISTANCE) -> tuple[list[str], list[list[str]]]:
    """(the models in leaf order, the clusters at distance ``cut``, each in leaf order, the
    clusters ordered by their first leaf)."""
    names = list(models)
    if len(names) < 2:
        return names, [names] if names else []
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    Z = linkage(squareform(distance_matrix(names, top1), checks=False), method="average")
    order = [names[i] for i in leaves_list(Z)]
    labels = dict(zip(names, fcluster(Z, t=cut, criterion="distance")))
    groups: dict[int, list[str]] = {}
    for name in order:
        groups.setdefault(int(labels[name]), []).append(name)
    return order, list(groups.values())
