"""An N-model shared space: MAXVAR generalised CCA over every model's embeddings of the same anchors.

Carroll, "Generalization of canonical correlation analysis to three or more sets of
variables", APA 1968, and Kettenring, "Canonical analysis of several sets of variables",
Biometrika 1971 (MAXVAR): find k consensus coordinates G (n, k), unit variance and
uncorrelated, that the models' affine projections predict best,
``min sum_m ||G - (X_m - mean_m) W_m||^2``. It is the least-squares relative of generalised
Procrustes analysis (Gower, Psychometrika 1975), which instead rotates every model onto the
consensus and so needs equal dimensions; MAXVAR takes any d_m.

Everything is computed from the joint covariance of the concatenated units, so cached
pairwise :class:`PairedStats` suffice (:meth:`SharedSpace.fit_stats`). Not a pairwise map and
not in the method table (methods.py); :meth:`SharedSpace.pair_map` exports the affine A -> B map
through the shared space in the usual {"W", "b"} form.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from convergent.server.align._validate import as_matrix, out_dtype
from convergent.server.align.maps import _inv_sqrt_psd, _jsonable
from convergent.server.align.stats import PairedStats
from convergent.server.errors import InvalidInput, NotFitted


class ModelSpace:
    """What every space of N models shares: looking a model up, checking its rows, and
    ``translate`` through the space. Subclasses set ``models_`` and ``dims_`` when fitted and
    define ``transform(model, X)`` and ``to_model(model, Z)``."""

    models_: list[str]
    dims_: list[int]

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFitted(f"{type(self).__name__} is not fitted yet; call fit first")

    def _model(self, model) -> int:
        self._check_fitted()
        if model not in self.models_:
            raise InvalidInput(f"unknown model {model!r}; the shared space has {self.models_}")
        return self.models_.index(model)

    def _rows(self, model: str, X) -> np.ndarray:
        """X (n, d_model) of ``model``, checked (finite, 2-D, the model's width)."""
        i = self._model(model)
        X = as_matrix(X, "X")
        if X.shape[1] != self.dims_[i]:
            raise InvalidInput(f"X has {X.shape[1]} columns, model {model!r} has {self.dims_[i]}", reason="DIMENSION_MISMATCH")
        return X

    def transform(self, model: str, X) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_model(self, model: str, Z) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def translate(self, source: str, target: str, X) -> np.ndarray:
        """source rows (n, d_source) -> target space (n, d_target) through the shared space."""
        return self.to_model(target, self.transform(source, X))


class SharedSpace(ModelSpace):
    """MAXVAR generalised CCA of M >= 2 models.

    With shrunk per-model covariances ``C~_mm = (1 - reg) C_mm + reg tr(C_mm)/d_m I``
    (reg in [0, 1)), the block-whitened joint covariance ``K`` (blocks
    ``C~_aa^-1/2 C_ab C~_bb^-1/2``, identity on the diagonal) has eigenpairs ``(lam, U)``
    with lam in [0, M]: lam = M is a direction every model shares perfectly, lam = 1 one
    model's private variance; ``(lam - 1) / (M - 1)`` is the variates' mean pairwise
    correlation when it is the same for all pairs (``shared_correlation_``). The top k give

    * ``projections_[m] = C~_mm^-1/2 U_m lam^1/2`` (d_m, k): the least-squares prediction of
      the unit-variance consensus coordinates from model m alone;
      ``transform(m, X) = (X - mean_m) W_m`` (n, k);
    * ``loadings_[m] = C~_mm^1/2 U_m lam^1/2`` (d_m, k): regression of model m's units on the
      consensus; ``to_model(m, Z) = Z L_m^T + mean_m`` (n, d_m). When model m's variance is
      all shared (lam = M, k = d_m) it is the exact inverse of ``transform``; otherwise the
      least-squares (pseudo-) inverse in model m's metric.

    So A -> B through the shared space is ``to_model(B, transform(A, X))`` =
    ``translate(A, B, X)``, an affine map (``pair_map``). For two models with reg = 0 and full
    k it is the CCA map with each canonical correlation rho replaced by (1 + rho) / 2 (the
    consensus is the two models' average), i.e. least squares of B on A when the shared part
    is noise-free and a little less shrunk than least squares otherwise.

    n_components: None -> k = min(min_m d_m, n - 1); an int in [1, min(sum_m d_m, n - 1)]
    (components beyond the smallest d_m are mostly private to the larger models).
    ``score(source, target, X, Y)``: uniform-average R^2 of ``translate`` vs Y, (-inf, 1],
    higher is better. Learned: ``models_`` (names in fit order), ``dims_``, ``means_``,
    ``projections_``, ``loadings_`` (dicts by model), ``eigenvalues_`` (k,),
    ``shared_correlation_`` (k,), ``n_components_``, ``n_anchors_``.
    """

    _hyper = ("n_components", "reg")

    def __init__(self, n_components: int | None = None, reg: float = 1e-3):
        self.n_components = n_components
        self.reg = reg

    # sklearn-style parameters -----------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._hyper}

    def set_params(self, **params) -> "SharedSpace":
        for k, v in params.items():
            if k not in self._hyper:
                raise InvalidInput(f"unknown parameter {k!r} for SharedSpace", reason="UNKNOWN_PARAMETER")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        return f"SharedSpace(n_components={self.n_components!r}, reg={self.reg!r})"

    # fitting ------------------------------------------------------------------------------
    def fit(self, views: Mapping[str, np.ndarray]) -> "SharedSpace":
        """views: model name -> (n, d_m) embeddings of the same n anchors, rows paired."""
        if not isinstance(views, Mapping) or len(views) < 2:
            raise InvalidInput("SharedSpace.fit needs a dict of at least two models -> (n, d_m) arrays")
        names = _names(views)
        arrays = [as_matrix(views[m], f"views[{m!r}]", min_rows=2).astype(np.float64) for m in names]
        n = arrays[0].shape[0]
        if any(a.shape[0] != n for a in arrays):
            raise InvalidInput(f"all models must embed the same anchors; got rows {[a.shape[0] for a in arrays]}")
        X = np.concatenate(arrays, axis=1)
        mean = X.mean(axis=0)
        Xc = X - mean
        C = Xc.T @ Xc / (n - 1)
        dims = [a.shape[1] for a in arrays]
        return self._fit_joint(names, dims, np.split(mean, np.cumsum(dims)[:-1]), C, n)

    def fit_stats(self, pair_stats: Mapping[tuple[str, str], PairedStats]) -> "SharedSpace":
        """pair_stats: (model_a, model_b) -> PairedStats of a's rows as X and b's as Y, one entry
        per unordered pair of M >= 2 models (all pairs). Exact when every pair's statistics
        cover the same anchors; with different anchor sets each block comes from its own pair
        (pairwise-complete covariance, an approximation; the diagonal blocks and means are
        the count-weighted averages over the pairs a model is in)."""
        if not isinstance(pair_stats, Mapping) or not pair_stats:
            raise InvalidInput("SharedSpace.fit_stats needs a dict (model_a, model_b) -> PairedStats")
        names: list[str] = []
        for key, st in pair_stats.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key) and key[0] != key[1]):
                raise InvalidInput(f"pair keys must be (model_a, model_b) with two different names, got {key!r}")
            if not isinstance(st, PairedStats) or st.n < 2:
                raise InvalidInput(f"pair {key!r} needs PairedStats of at least 2 anchors")
            names += [k for k in key if k not in names]
        pos = {m: i for i, m in enumerate(names)}
        M = len(names)
        seen: dict[frozenset, PairedStats] = {}
        dims: list[int | None] = [None] * M
        for (a, b), st in pair_stats.items():
            if frozenset((a, b)) in seen:
                raise InvalidInput(f"pair ({a!r}, {b!r}) is given twice")
            seen[frozenset((a, b))] = st
            for m, d in ((a, st.d_x), (b, st.d_y)):
                if dims[pos[m]] not in (None, d):
                    raise InvalidInput(f"model {m!r} has dimension {d} in one pair and {dims[pos[m]]} in another")
                dims[pos[m]] = d
        if len(seen) != M * (M - 1) // 2:
            raise InvalidInput(f"need statistics for every pair of the {M} models, got {len(seen)} of {M * (M - 1) // 2}")
        off = np.concatenate([[0], np.cumsum(dims)])
        C = np.zeros((off[-1], off[-1]))
        diag_w = np.zeros(M)
        sums = [np.zeros(d) for d in dims]
        counts = np.zeros(M)
        for (a, b), st in pair_stats.items():
            cxx, cxy, cyy = st.covariances()
            i, j = pos[a], pos[b]
            C[off[i] : off[i + 1], off[j] : off[j + 1]] = cxy
            C[off[j] : off[j + 1], off[i] : off[i + 1]] = cxy.T
            for idx, cov, s in ((i, cxx, st.sum_x), (j, cyy, st.sum_y)):
                C[off[idx] : off[idx + 1], off[idx] : off[idx + 1]] += (st.n - 1) * cov
                diag_w[idx] += st.n - 1
                sums[idx] += s
                counts[idx] += st.n
        for i in range(M):
            C[off[i] : off[i + 1], off[i] : off[i + 1]] /= diag_w[i]
        n = int(min(st.n for st in pair_stats.values()))
        return self._fit_joint(names, dims, [s / c for s, c in zip(sums, counts)], C, n)

    def _fit_joint(self, names, dims, means, C, n) -> "SharedSpace":
        r = float(self.reg) if isinstance(self.reg, (int, float, np.number)) else float("nan")
        if not 0.0 <= r < 1.0:
            raise InvalidInput(f"reg must be in [0, 1), got {self.reg}", reason="PARAMETER_OUT_OF_RANGE", field="params.reg")
        D = int(sum(dims))
        k_max = min(D, n - 1)
        if self.n_components is None:
            k = min(min(dims), n - 1)
        elif (
            not isinstance(self.n_components, (int, np.integer))
            or isinstance(self.n_components, bool)
            or not 1 <= self.n_components <= k_max
        ):
            raise InvalidInput(f"n_components must be an integer in [1, min(sum d_m, n - 1)] = [1, {k_max}], got {self.n_components}",
                               reason="PARAMETER_OUT_OF_RANGE", field="params.n_components")
        else:
            k = int(self.n_components)
        if k < 1:
            raise InvalidInput("SharedSpace needs at least 2 anchors")
        off = np.concatenate([[0], np.cumsum(dims)])
        blocks = [slice(off[i], off[i + 1]) for i in range(len(dims))]
        whiten, root = [], []
        for b, d in zip(blocks, dims):
            cmm = C[b, b]
            cmm = (1 - r) * cmm + r * np.trace(cmm) / d * np.eye(d)
            w = _inv_sqrt_psd(cmm)
            whiten.append(w)
            root.append(cmm @ w)  # C~^1/2 on its range
        K = np.empty_like(C)
        for i, bi in enumerate(blocks):
            for j, bj in enumerate(blocks):
                K[bi, bj] = np.eye(dims[i]) if i == j else whiten[i] @ C[bi, bj] @ whiten[j]
        lam, U = np.linalg.eigh((K + K.T) / 2)
        # [0, M] in exact arithmetic; shrinkage can push a fully shared direction a hair above M
        lam, U = np.clip(lam[::-1][:k], 0.0, float(len(dims))), U[:, ::-1][:, :k]
        U = U * np.where(U.sum(axis=0) < 0, -1.0, 1.0)  # deterministic sign
        half = np.sqrt(lam)
        self.models_ = list(names)
        self.dims_ = [int(d) for d in dims]
        self.means_ = {m: np.asarray(mu, dtype=np.float64) for m, mu in zip(names, means)}
        self.projections_ = {m: (whiten[i] @ U[blocks[i]]) * half for i, m in enumerate(names)}
        self.loadings_ = {m: (root[i] @ U[blocks[i]]) * half for i, m in enumerate(names)}
        self.eigenvalues_ = lam
        M = len(names)
        self.shared_correlation_ = (lam - 1.0) / (M - 1)
        self.n_components_, self.n_anchors_ = int(k), int(n)
        return self

    # using --------------------------------------------------------------------------------
    def transform(self, model: str, X) -> np.ndarray:
        """Model rows X (n, d_m) -> shared coordinates (n, k); float32 in -> float32 out, else float64."""
        X = self._rows(model, X)
        Z = (X.astype(np.float64, copy=False) - self.means_[model]) @ self.projections_[model]
        return Z.astype(out_dtype(X), copy=False)

    def to_model(self, model: str, Z) -> np.ndarray:
        """Shared coordinates Z (n, k) -> model m's space (n, d_m); dtype rule as ``transform``."""
        self._model(model)
        Z = as_matrix(Z, "Z")
        if Z.shape[1] != self.n_components_:
            raise InvalidInput(f"Z has {Z.shape[1]} columns, the shared space has {self.n_components_}", reason="DIMENSION_MISMATCH")
        X = Z.astype(np.float64, copy=False) @ self.loadings_[model].T + self.means_[model]
        return X.astype(out_dtype(Z), copy=False)

    def pair_map(self, source: str, target: str) -> dict[str, np.ndarray]:
        """The affine source -> target map of ``translate``: {"W" (d_t, d_s), "b" (d_t,)}, float64."""
        self._model(source), self._model(target)
        W = self.loadings_[target] @ self.projections_[source].T
        return {"W": W, "b": self.means_[target] - W @ self.means_[source]}

    def score(self, source: str, target: str, X, Y) -> float:
        """Uniform-average R^2 of ``translate(source, target, X)`` vs Y: (-inf, 1], higher is better."""
        from convergent.server.align.metrics import r2_score

        return r2_score(Y, self.translate(source, target, X))

    # persistence --------------------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(params, arrays): params JSON-able (class, hyper, models, dims, ...); arrays float64
        ``eigenvalues`` and per model index i ``W_i``, ``L_i``, ``mean_i``."""
        self._check_fitted()
        params = {
            "class": type(self).__name__,
            "hyper": {k: _jsonable(getattr(self, k)) for k in self._hyper},
            "models": list(self.models_),
            "dims": list(self.dims_),
            "n_components_": int(self.n_components_),
            "n_anchors_": int(self.n_anchors_),
        }
        arrays = {"eigenvalues": np.array(self.eigenvalues_, dtype=np.float64)}
        for i, m in enumerate(self.models_):
            arrays[f"W_{i}"] = np.array(self.projections_[m], dtype=np.float64)
            arrays[f"L_{i}"] = np.array(self.loadings_[m], dtype=np.float64)
            arrays[f"mean_{i}"] = np.array(self.means_[m], dtype=np.float64)
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "SharedSpace":
        if not isinstance(params, dict) or params.get("class") != cls.__name__:
            raise InvalidInput(f"state is for {params.get('class') if isinstance(params, dict) else params!r}, not SharedSpace")
        try:
            est = cls(**params["hyper"])
            est.models_, est.dims_ = [str(m) for m in params["models"]], [int(d) for d in params["dims"]]
            est.n_components_, est.n_anchors_ = int(params["n_components_"]), int(params["n_anchors_"])
            est.eigenvalues_ = np.asarray(arrays["eigenvalues"], dtype=np.float64).copy()
            get = lambda key: np.asarray(arrays[key], dtype=np.float64).copy()  # noqa: E731
            est.projections_ = {m: get(f"W_{i}") for i, m in enumerate(est.models_)}
            est.loadings_ = {m: get(f"L_{i}") for i, m in enumerate(est.models_)}
            est.means_ = {m: get(f"mean_{i}") for i, m in enumerate(est.models_)}
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"incomplete SharedSpace state: {exc}") from exc
        k = est.n_components_
        for m, d in zip(est.models_, est.dims_):
            if est.projections_[m].shape != (d, k) or est.loadings_[m].shape != (d, k) or est.means_[m].shape != (d,):
                raise InvalidInput("SharedSpace state arrays do not match its dimensions")
        M = len(est.models_)
        est.shared_correlation_ = (est.eigenvalues_ - 1.0) / (M - 1)
        return est


def _names(views: Mapping) -> list[str]:
    names = list(views)
    if not all(isinstance(m, str) and m for m in names):
        raise InvalidInput("model names must be non-empty strings")
    return names
