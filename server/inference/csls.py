"""Hubness-corrected cross-model scores: CSLS (Conneau et al., "Word translation without
parallel data", ICLR 2018).

Mapped vectors crowd around a few "hub" gallery items that are the nearest neighbour of many
probes whatever they show. CSLS penalises both sides' crowding:

    csls(x, y) = 2 cos(x, y) - r_T(x) - r_S(y)

x a probe mapped into the gallery model's space, y a gallery item (both unit rows); r_T(x) the
mean cosine of x to its k nearest *target-side* reference vectors (the route's anchors as the
gallery model embedded them); r_S(y) the mean cosine of y to its k nearest *mapped source-side*
reference vectors (the route's anchors mapped through it). Higher = better match; range
[-4, 4]. For one probe the ranking depends only on 2 cos(x, y) - r_S(y) = 2 <[x, 1], [y, -r_S(y)/2]>:
one extra dimension lets any inner-product index rank by CSLS (:func:`augment_gallery`,
:func:`augment_queries`).
"""

from __future__ import annotations

import numpy as np

from convergent.server.inference._validate import as_vectors, positive_int

__all__ = ["CSLS_K", "augment_gallery", "augment_queries", "csls_from_augmented", "neighbourhood_mean"]

CSLS_K = 10


def neighbourhood_mean(V: np.ndarray, reference: np.ndarray, k: int = CSLS_K, *, block: int = 4096) -> np.ndarray:
    """Mean cosine of each row of V (m, d) to its k nearest rows of ``reference`` (r, d).

    Both are taken as unit rows (callers normalise). k is capped at r. (m,) float32, in [-1, 1];
    computed in blocks of ``block`` rows of V.
    """
    V = as_vectors(V, "V", allow_empty=True)
    R = as_vectors(reference, "reference", dim=V.shape[1])
    k = min(positive_int(k, "k"), R.shape[0])
    out = np.empty(V.shape[0], dtype=np.float32)
    for start in range(0, V.shape[0], block):
        S = V[start : start + block] @ R.T
        top = np.partition(S, S.shape[1] - k, axis=1)[:, S.shape[1] - k :]
        out[start : start + block] = top.mean(axis=1)
    return out


def augment_gallery(G: np.ndarray, r_S: np.ndarray) -> np.ndarray:
    """[y, -r_S(y) / 2] for unit gallery rows G (n, d) and their r_S (n,): (n, d + 1) float32."""
    return np.hstack([G, (-0.5 * np.asarray(r_S, dtype=np.float32))[:, None]]).astype(np.float32)


def augment_queries(Q: np.ndarray) -> np.ndarray:
    """[x, 1] for unit mapped probes Q (q, d): (q, d + 1) float32."""
    return np.hstack([Q, np.ones((Q.shape[0], 1), dtype=np.float32)]).astype(np.float32)


def csls_from_augmented(inner: np.ndarray, r_T: np.ndarray) -> np.ndarray:
    """CSLS scores from augmented inner products (q, k) = cos - r_S/2 and the probes' r_T (q,):
    2 * inner - r_T, float32 (padding -inf stays -inf)."""
    return (2.0 * np.asarray(inner, dtype=np.float32) - np.asarray(r_T, dtype=np.float32)[:, None]).astype(np.float32)
