"""Alignment metrics. All vectorised; pools are capped so they stay cheap on small machines.

Rows are paired: row i of one argument and row i of the other describe the same item.
"""

from __future__ import annotations

import numpy as np

from convergent.server.align._validate import as_matrix, as_pair
from convergent.server.errors import InvalidInput


FLOAT_TYPES = (np.float64, np.float32)  # ``dtype`` of the similarity metrics: their products' precision


def _products_dtype(dtype) -> type:  # noqa: ANN001
    if dtype not in FLOAT_TYPES:
        raise InvalidInput(f"dtype must be float64 or float32, got {dtype!r}")
    return dtype


def _unit_rows(A: np.ndarray, dtype=np.float64) -> np.ndarray:  # noqa: ANN001
    A = A.astype(np.float64, copy=False)
    return (A / np.clip(np.linalg.norm(A, axis=1, keepdims=True), 1e-12, None)).astype(dtype, copy=False)


def _pool(n: int, pool: int | None, seed: int) -> np.ndarray | slice:
    """Deterministic row subsample of size ``pool`` (sorted), or all rows."""
    if pool is None or n <= pool:
        return slice(None)
    if pool < 2:
        raise InvalidInput(f"pool must be >= 2, got {pool}")
    return np.sort(np.random.default_rng(seed).choice(n, size=int(pool), replace=False))


def r2_score(Y_true, Y_pred, multioutput: str = "uniform_average") -> float:
    """Coefficient of determination, uniform average over outputs (as scikit-learn's default).

    Y_true, Y_pred: (n, d). Per output 1 - SS_res / SS_tot (an output with SS_tot = 0 scores 1
    if predicted exactly, else 0). Range (-inf, 1]; higher is better, 0 = predicting the mean.
    A near-constant output can drive the uniform average to huge negative values;
    ``multioutput="variance_weighted"`` gives 1 - sum(SS_res) / sum(SS_tot) instead.
    """
    Y, P = as_pair(Y_true, Y_pred, min_rows=2, names=("Y_true", "Y_pred"))
    if Y.shape[1] != P.shape[1]:
        raise InvalidInput(f"Y_true and Y_pred differ in columns: {Y.shape[1]} vs {P.shape[1]}")
    Y, P = Y.astype(np.float64), P.astype(np.float64)
    ss_res = ((Y - P) ** 2).sum(0)
    ss_tot = ((Y - Y.mean(0)) ** 2).sum(0)
    if multioutput == "variance_weighted":
        tot = float(ss_tot.sum())
        return 1.0 - float(ss_res.sum()) / tot if tot > 0 else float(ss_res.sum() == 0)
    if multioutput != "uniform_average":
        raise InvalidInput(f"multioutput must be 'uniform_average' or 'variance_weighted', got {multioutput!r}")
    ok = ss_tot > 0
    per = np.where(ok, 1.0 - ss_res / np.where(ok, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))
    return float(per.mean())


def _hsic(X: np.ndarray, Y: np.ndarray, debiased: bool) -> float:
    """HSIC of linear kernels K = X X^T, L = Y Y^T computed in feature space (never n x n).
    X, Y centred, float64 or float32 (products in that precision, every sum in float64)."""
    n = X.shape[0]
    cross = np.square((X.T @ Y).astype(np.float64)).sum()
    if not debiased:
        return float(cross) / (n - 1) ** 2  # inputs are centred
    # Song et al., JMLR 2012, unbiased estimator with K~, L~ = Gram matrices, zero diagonal
    kd = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    ld = np.einsum("ij,ij->i", Y, Y, dtype=np.float64)
    tr_kl = float(cross - kd @ ld)
    k1 = (X @ X.sum(0, dtype=np.float64).astype(X.dtype)).astype(np.float64) - kd  # K~ 1
    l1 = (Y @ Y.sum(0, dtype=np.float64).astype(Y.dtype)).astype(np.float64) - ld
    return (tr_kl + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(k1 @ l1)) / (n * (n - 3))


def _centred(A: np.ndarray, dtype) -> np.ndarray:  # noqa: ANN001
    return (A.astype(np.float64) - A.mean(0, dtype=np.float64)).astype(dtype, copy=False)


def linear_cka_to(Y, *Xs, debiased: bool = True, dtype=np.float64) -> list[float]:  # noqa: ANN001
    """``[linear_cka(X, Y) for X in Xs]``, computing Y's own HSIC once (diagnostics compare a
    map's output and its input with the same targets)."""
    dtype = _products_dtype(dtype)
    Yc = _centred(as_matrix(Y, "Y", min_rows=4 if debiased else 2), dtype)
    yy = _hsic(Yc, Yc, debiased)
    out = []
    for X in Xs:
        X, _ = as_pair(X, Yc, min_rows=4 if debiased else 2)
        Xc = _centred(X, dtype)
        xy, xx = _hsic(Xc, Yc, debiased), _hsic(Xc, Xc, debiased)
        out.append(0.0 if xx <= 0 or yy <= 0 else float(xy / np.sqrt(xx * yy)))
    return out


def linear_cka(X, Y, debiased: bool = True, dtype=np.float64) -> float:  # noqa: ANN001
    """Linear centred kernel alignment (Kornblith et al., ICML 2019).

    X (n, d_x), Y (n, d_y), same items in the same row order; d_x may differ from d_y.
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels. ``debiased=True`` uses
    the unbiased HSIC estimator (Song et al., JMLR 2012; needs n >= 4), which removes the
    upward bias of CKA when n is small against d. Range about [0, 1] (the debiased value can
    dip slightly below 0); higher = more similar; invariant to rotation and isotropic scale.
    ``dtype=np.float32``: the products in float32 (half the time; ~1e-6 relative), sums in float64.
    """
    return linear_cka_to(Y, X, debiased=debiased, dtype=dtype)[0]  # checks both, as as_pair does


def _knn(S: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each row's k largest similarities, the diagonal excluded."""
    S = S.copy()
    np.fill_diagonal(S, -np.inf)
    return np.argpartition(-S, k - 1, axis=1)[:, :k]


def mutual_knn(X, Y, k: int = 10, pool: int | None = 2000, seed: int = 0, dtype=np.float64) -> float:  # noqa: ANN001
    """Mutual k-nearest-neighbour alignment (Huh et al., ICML 2024, "The Platonic Representation Hypothesis").

    X (n, d_x), Y (n, d_y) paired rows. For every row i, the k nearest other rows by cosine in
    X and in Y; score = mean_i |kNN_X(i) ∩ kNN_Y(i)| / k. Range [0, 1], higher = more aligned;
    unrelated spaces score about ``mutual_knn_chance(n, k)``. At most ``pool`` rows are used
    (deterministic subsample by ``seed``). ``dtype``: precision of the cosine products.
    """
    X, Y = as_pair(X, Y, min_rows=2)
    idx = _pool(X.shape[0], pool, seed)
    dtype = _products_dtype(dtype)
    X, Y = _unit_rows(X[idx], dtype), _unit_rows(Y[idx], dtype)
    n = X.shape[0]
    if not 1 <= k <= n - 1:
        raise InvalidInput(f"k must be in [1, n-1] = [1, {n - 1}], got {k}")
    nx, ny = _knn(X @ X.T, k), _knn(Y @ Y.T, k)
    member = np.zeros((n, n), dtype=bool)
    member[np.arange(n)[:, None], nx] = True
    return float(member[np.arange(n)[:, None], ny].sum(1).mean() / k)


def mutual_knn_chance(n: int, k: int = 10) -> float:
    """Expected mutual_knn of two unrelated spaces over n rows: k / (n - 1)."""
    if n < 2 or not 1 <= k <= n - 1:
        raise InvalidInput(f"need n >= 2 and 1 <= k <= n-1, got n={n}, k={k}")
    return k / (n - 1)


def _paired_cos(pred, target, pool: int | None, seed: int, dtype=np.float64) -> np.ndarray:  # noqa: ANN001
    P, T = as_pair(pred, target, min_rows=2, names=("pred", "target"))
    if P.shape[1] != T.shape[1]:
        raise InvalidInput(f"pred and target differ in columns: {P.shape[1]} vs {T.shape[1]}")
    idx = _pool(P.shape[0], pool, seed)
    dtype = _products_dtype(dtype)
    return _unit_rows(P[idx], dtype) @ _unit_rows(T[idx], dtype).T


def retrieval_topk(pred, target, ks=(1, 5), pool: int | None = 2000, seed: int = 0) -> dict[str, float]:
    """Paired retrieval: row i of pred (n, d) should find row i of target (n, d) by cosine.

    Among at most ``pool`` rows (deterministic subsample), the fraction of rows whose own
    partner is among their k most similar targets (ties count against). Returns
    ``{"top1": ..., "top5": ...}`` for ks=(1, 5); each in [0, 1], higher is better, chance k/n.
    """
    return _topk_of(_paired_cos(pred, target, pool, seed), ks)


def _topk_of(S: np.ndarray, ks) -> dict[str, float]:  # noqa: ANN001
    rank = (S > np.diag(S)[:, None]).sum(1)  # number of targets beating the partner
    return {f"top{int(k)}": float(np.mean(rank < int(k))) for k in ks}


def _margin_of(S: np.ndarray) -> np.ndarray:
    """Per-row margins (m,) of a paired similarity matrix S (m, m); S is modified."""
    pos = np.diag(S).copy()
    np.fill_diagonal(S, -np.inf)
    return pos - S.max(1)


def retrieval_scores(pred, target, ks=(1, 5), pool: int | None = 2000, seed: int = 0,  # noqa: ANN001
                     dtype=np.float64) -> dict[str, float]:
    """``retrieval_topk`` and ``{"margin": retrieval_margin}`` (cosine) from one similarity
    matrix: the same values as the two calls, at half the cost. ``dtype``: precision of the
    cosine products."""
    S = _paired_cos(pred, target, pool, seed, dtype)
    out = _topk_of(S, ks)
    out["margin"] = float(np.mean(_margin_of(S)))
    return out


def retrieval_margin(pred, target, pool: int | None = 2000, seed: int = 0, per_row: bool = False, metric: str = "cosine"):
    """Margin of each row's partner over its hardest impostor, averaged over rows.

    pred, target (n, d), n >= 2, at most ``pool`` rows used (deterministic subsample).
    metric="cosine": cos(pred_i, target_i) - max_{j != i} cos(pred_i, target_j); range [-2, 2].
    metric="euclidean": (min_{j != i} |pred_i - target_j|^2 - |pred_i - target_i|^2) / s with
    s = mean_i |target_i - mean(target)|^2 (dimensionless, unbounded).
    Either way higher is better and > 0 means the partner is the row's best match. Unlike
    top-1 it is continuous and rewards a safe gap, which makes it a better model-selection
    criterion (see select.py). ``per_row=True`` returns the (m,) per-row margins instead.
    """
    if metric == "cosine":
        S = _paired_cos(pred, target, pool, seed)
    elif metric == "euclidean":
        P, T = as_pair(pred, target, min_rows=2, names=("pred", "target"))
        if P.shape[1] != T.shape[1]:
            raise InvalidInput(f"pred and target differ in columns: {P.shape[1]} vs {T.shape[1]}")
        idx = _pool(P.shape[0], pool, seed)
        P, T = P[idx].astype(np.float64), T[idx].astype(np.float64)
        spread = max(float(((T - T.mean(0)) ** 2).sum(1).mean()), 1e-300)
        S = -((P**2).sum(1)[:, None] + (T**2).sum(1)[None, :] - 2.0 * P @ T.T) / spread
    else:
        raise InvalidInput(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    rows = _margin_of(S)
    return rows if per_row else float(np.mean(rows))


def matched_correlation_stats(corr_values) -> dict[str, float]:
    """Summary of per-unit matched correlations (Li et al., ICLR 2016, "Convergent Learning").

    corr_values: 1-D (d,) correlation of each unit with its match, or a 2-D cross-correlation
    matrix (d_x, d_y), in which case each source unit is semi-matched to its most correlated
    target unit (row max). Returns mean/median/min/max, each in [-1, 1], higher = more convergent.
    """
    c = np.asarray(corr_values, dtype=np.float64)
    if c.ndim == 2:
        c = as_matrix(c, "corr_values").max(axis=1)
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)):
        raise InvalidInput("corr_values must be a non-empty finite 1-D array or 2-D matrix")
    return {"mean": float(c.mean()), "median": float(np.median(c)), "min": float(c.min()), "max": float(c.max())}
