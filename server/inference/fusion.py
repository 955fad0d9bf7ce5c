"""Score-level fusion of several parties' identification results (federated inference).

Each party scores the same probe against the same gallery identities with its own model.
Raw cosine scores of different models are not comparable (different spreads and offsets),
so each party's scores are z-normalised per query, then averaged with the party weights
(cf. Hashimoto et al., consensus embeddings for federated inference: combining several
parties' models beats each alone).

Direction: every input and output score is a similarity, **higher = better match**. Fused
scores are weighted means of z-scores (dimensionless, about N(0, 1) for non-matches).

Two entry points:

- :func:`fuse_dense` -- per party a dense (q, n) score matrix over one shared gallery order
  (what :meth:`ExactIndex.score_all` returns). z uses the full gallery row. Preferred when the
  gallery is small enough to score densely.
- :func:`fuse_scores` -- per party top-k candidate lists (ids, scores), as any
  :class:`VectorIndex` search returns. z uses that party's returned candidates of the query
  (or per-query gallery mean / std if ``stats`` supplies them); a candidate a party did not
  return counts with that party's lowest z of the query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Mapping, Sequence

import numpy as np

from convergent.server.errors import InvalidInput
from convergent.server.inference._validate import positive_int

__all__ = ["FusedResult", "combination_weights", "fuse_scores", "fuse_dense", "zscore_rows"]


@dataclass(frozen=True)
class FusedResult:
    """Fused top-k per query.

    ids: q lists of k ids, best first. scores: (q, k) float32 fused z (higher = better); where
    fewer than k candidates exist the tail is padded with id "" and score -inf. contributors:
    (q, k, len(parties)) bool, True where that party itself returned / scored the candidate.
    parties: party names in the order of the last axis of ``contributors``.
    """

    ids: list[list[str]]
    scores: np.ndarray
    contributors: np.ndarray
    parties: tuple[str, ...]


def combination_weights(residuals: Sequence[np.ndarray]) -> np.ndarray:
    """Weights of P predictors of one target, from their residuals on the same items: the
    non-negative weights summing to 1 that minimise ||sum_p w_p residuals[p]||^2 (forecast
    combination, Bates & Granger 1969; stacking with out-of-fold predictions, Wolpert 1992).

    residuals: P arrays of one shape (e.g. (n, d): a party's mapped anchors minus the gallery
    model's, each predicted by a map that never saw that anchor). Returns (P,) float64, >= 0,
    summing to 1. A predictor that only repeats another one's errors, plus noise of its own,
    gets little weight. Solved by non-negative least squares with the sum as a heavily weighted
    extra equation (then renormalised).
    """
    R = [np.asarray(r, dtype=np.float64).ravel() for r in residuals]
    if not R or len({r.size for r in R}) != 1 or R[0].size == 0:
        raise InvalidInput("give one or more residual arrays of one non-empty shape")
    from scipy.optimize import nnls

    A = np.stack(R, axis=1)  # (n * d, P)
    scale = float(np.sqrt((A**2).sum() / A.shape[1])) or 1.0
    penalty = 1e3 * scale
    w, _ = nnls(np.vstack([A, np.full((1, A.shape[1]), penalty)]), np.r_[np.zeros(A.shape[0]), penalty])
    total = float(w.sum())
    return w / total if total > 0 else np.full(len(R), 1.0 / len(R))


def zscore_rows(S: np.ndarray) -> np.ndarray:
    """Per-row z-score of S (q, n) -> float64 (q, n); a constant row becomes all zeros."""
    S = np.asarray(S, dtype=np.float64)
    mu = S.mean(axis=1, keepdims=True)
    sd = S.std(axis=1, keepdims=True)
    return np.divide(S - mu, sd, out=np.zeros_like(S), where=sd > 0)


def _weights(parties: Sequence[str], weights: Mapping[str, float] | None) -> np.ndarray:
    if not parties:
        raise InvalidInput("no parties to fuse")
    if weights is None:
        return np.ones(len(parties))
    unknown = set(weights) - set(parties)
    if unknown:
        raise InvalidInput(f"weights name parties without scores: {sorted(unknown)}")
    values: list[float] = []
    for p in parties:
        v = weights.get(p, 0.0)
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)) or v < 0:
            raise InvalidInput(f"weight of party {p!r} must be a finite number >= 0, got {v!r}")
        values.append(float(v))
    w = np.asarray(values)
    if w.sum() <= 0:
        raise InvalidInput("at least one party needs a positive weight")
    return w


def fuse_dense(per_party: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None,
               k: int = 10, ids: Sequence[str] | None = None) -> FusedResult:
    """Fuse dense score matrices.

    per_party: name -> (q, n) similarity scores, column j of every party = gallery item j.
    weights: name -> weight >= 0 (missing name = 0; None = equal weights).
    ids: the n gallery ids (default "0".."n-1"). Returns the fused top-min(k, n), ties broken
    by column order. fused = sum_p w_p z_p / sum_p w_p with z_p the per-row z-score over all n.
    """
    parties = tuple(per_party)
    w = _weights(parties, weights)
    k = positive_int(k, "k")
    mats: list[np.ndarray] = []
    for p in parties:
        S = np.asarray(per_party[p])
        if S.ndim != 2 or S.size == 0 or not np.issubdtype(S.dtype, np.number) or not np.all(np.isfinite(S)):
            raise InvalidInput(f"scores of party {p!r} must be a non-empty finite 2-D array")
        if mats and S.shape != mats[0].shape:
            raise InvalidInput(f"party {p!r} scores have shape {S.shape}, expected {mats[0].shape}")
        mats.append(S)
    q, n = mats[0].shape
    gallery = [str(j) for j in range(n)] if ids is None else list(ids)
    if len(gallery) != n:
        raise InvalidInput(f"{len(gallery)} ids for {n} gallery columns")
    fused = np.zeros((q, n))
    for wp, S in zip(w, mats):
        if wp > 0:
            fused += wp * zscore_rows(S)
    fused /= w.sum()
    kk = min(k, n)
    top = np.argsort(-fused, axis=1, kind="stable")[:, :kk]
    names = np.asarray(gallery, dtype=object)
    contributors = np.broadcast_to(w > 0, (q, kk, len(parties))).copy()
    return FusedResult(ids=names[top].tolist(),
                       scores=np.take_along_axis(fused, top, axis=1).astype(np.float32),
                       contributors=contributors, parties=parties)


def fuse_scores(per_party: Mapping[str, tuple[Sequence[Sequence[str]], np.ndarray]],
                weights: Mapping[str, float] | None = None, k: int | None = None, *,
                stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> FusedResult:
    """Fuse per-party top-k candidate lists.

    per_party: name -> (ids: q lists of candidate ids, scores (q, k_p) similarities), e.g. a
    ``VectorIndex.search`` result; id "" or a non-finite score marks padding and is ignored.
    weights: name -> weight >= 0 (missing = 0; None = equal). k: fused list length (default:
    the longest party list). stats: optional name -> (mean (q,), std (q,)) of that party's
    scores over its full gallery, used for the z-score instead of the returned candidates.

    For each query: z_p(c) = (s_p(c) - mean_p) / std_p (std 0 -> z 0); a candidate party p did
    not return gets min_c z_p(c), that party's lowest z for the query; fused(c) =
    sum_p w_p z_p(c) / sum_p w_p over the parties that returned anything for the query.
    Sorted by fused descending; ties keep first appearance (party order, then rank).
    """
    parties = tuple(per_party)
    w = _weights(parties, weights)
    lists: list = []
    mats: list[np.ndarray] = []
    for p in parties:
        try:
            ids_p, S = per_party[p]
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"party {p!r}: expected (ids, scores)") from exc
        S = np.asarray(S, dtype=np.float64)
        ids_p = [list(r) for r in ids_p]
        if S.ndim != 2 or len(ids_p) != S.shape[0] or any(len(r) != S.shape[1] for r in ids_p):
            raise InvalidInput(f"party {p!r}: ids and scores (q, k) do not match in shape")
        if np.isnan(S).any():
            raise InvalidInput(f"party {p!r}: scores contain NaN")
        if mats and S.shape[0] != mats[0].shape[0]:
            raise InvalidInput(f"party {p!r} has {S.shape[0]} queries, expected {mats[0].shape[0]}")
        lists.append(ids_p)
        mats.append(S)
    q = mats[0].shape[0]
    k = positive_int(k, "k") if k is not None else max(max(S.shape[1] for S in mats), 1)
    z_all = []
    for p, ids_p, S in zip(parties, lists, mats):
        valid = np.isfinite(S) & (np.asarray(ids_p, dtype=object).reshape(S.shape) != "")
        if stats is not None and p in stats:
            mu, sd = (np.asarray(a, dtype=np.float64).reshape(-1) for a in stats[p])
            if mu.shape != (q,) or sd.shape != (q,) or not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sd))):
                raise InvalidInput(f"stats of party {p!r} must be two finite (q,) arrays")
        else:
            cnt = valid.sum(axis=1)
            Sv = np.where(valid, S, 0.0)
            mu = np.divide(Sv.sum(axis=1), cnt, out=np.zeros(q), where=cnt > 0)
            var = np.divide((np.where(valid, S - mu[:, None], 0.0) ** 2).sum(axis=1), cnt, out=np.zeros(q), where=cnt > 0)
            sd = np.sqrt(var)
        z = np.divide(S - mu[:, None], sd[:, None], out=np.zeros_like(S), where=(sd[:, None] > 0) & valid)
        z_all.append(np.where(valid, z, np.nan))

    out_ids: list[list[str]] = []
    out_scores = np.full((q, k), -np.inf, dtype=np.float32)
    contributors = np.zeros((q, k, len(parties)), dtype=bool)
    for qi in range(q):
        col: dict[str, int] = {}
        for ids_p, z in zip(lists, z_all):
            for c, zc in zip(ids_p[qi], z[qi]):
                if not np.isnan(zc):
                    col.setdefault(c, len(col))
        table = np.full((len(parties), len(col)), np.nan)  # z of party p for candidate c
        for pi, (ids_p, z) in enumerate(zip(lists, z_all)):
            for c, zc in zip(ids_p[qi], z[qi]):
                if not np.isnan(zc):
                    table[pi, col[c]] = zc
        present = ~np.isnan(table)
        active = present.any(axis=1) & (w > 0)
        if not active.any():
            out_ids.append([""] * k)
            continue
        floor = np.where(active, np.min(np.where(present, table, np.inf), axis=1), 0.0)
        filled = np.where(present, table, floor[:, None])
        fused = (w[active, None] * filled[active]).sum(axis=0) / w[active].sum()
        order = np.argsort(-fused, kind="stable")[:k]
        names = list(col)
        out_ids.append([names[j] for j in order] + [""] * (k - len(order)))
        out_scores[qi, : len(order)] = fused[order]
        contributors[qi, : len(order)] = present[:, order].T & active
    return FusedResult(ids=out_ids, scores=out_scores, contributors=contributors, parties=parties)
