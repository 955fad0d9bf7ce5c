"""Linear maps from a source embedding space to a target space, fitted from :class:`PairedStats`.

Every map here is affine in the end, ``y = W x + b`` with ``W`` (d_y, d_x): that is what
``export()`` always returns under ``"W"`` and ``"b"``, next to the method's own keys.

Contract (scikit-learn's): ``__init__`` stores hyper-parameters only; ``fit(X, Y)`` =
``fit_stats(PairedStats.from_arrays(X, Y))`` and returns ``self``; learned attributes end in
``_``. ``transform(X)`` (n, d_x) -> (n, d_y) returns float32 for float32 input and float64
for anything else (computed in float64). ``score(X, Y)`` is the uniform-average R^2 of
``transform(X)`` against ``Y``: range (-inf, 1], higher is better, 0 = predicting the mean.
"""

from __future__ import annotations

import numpy as np

from convergent.server.align._validate import as_matrix, as_pair, out_dtype
from convergent.server.align.stats import PairedStats
from convergent.server.errors import InvalidInput, NotFitted


def _inv_sqrt_psd(C: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """Symmetric inverse square root of a PSD matrix (eigenvalues floored at floor * max)."""
    e, V = np.linalg.eigh((C + C.T) / 2)
    e = np.clip(e, max(e.max(), 0.0) * floor + 1e-300, None)
    return (V / np.sqrt(e)) @ V.T


class _AffineMap:
    """Shared plumbing: validation, transform/score, sklearn params, state round trip.

    Learned arrays (attributes ending in ``_``) are always stored C-contiguous, whether set
    by ``fit_stats`` or by ``from_state``. A transposed view (Fortran order) would make BLAS
    pick another kernel in ``transform`` than the row-major arrays ``from_state`` rebuilds,
    and the round trip would then differ in the last bit on some CPUs.
    """

    _hyper: tuple[str, ...] = ()
    _state_arrays: tuple[str, ...] = ()
    _state_scalars: tuple[str, ...] = ()

    def __setattr__(self, name: str, value) -> None:
        if name.endswith("_") and isinstance(value, np.ndarray) and not value.flags.c_contiguous:
            value = np.ascontiguousarray(value)
        super().__setattr__(name, value)

    # sklearn-style parameters -----------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._hyper}

    def set_params(self, **params) -> "_AffineMap":
        for k, v in params.items():
            if k not in self._hyper:
                raise InvalidInput(f"unknown parameter {k!r} for {type(self).__name__}", reason="UNKNOWN_PARAMETER")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({args})"

    # fitting ------------------------------------------------------------------------------
    def fit(self, X, Y) -> "_AffineMap":
        """Fit on paired rows X (n, d_x), Y (n, d_y); returns self."""
        return self.fit_stats(PairedStats.from_arrays(X, Y))

    def fit_stats(self, stats: PairedStats) -> "_AffineMap":  # pragma: no cover - abstract
        raise NotImplementedError

    def _start_fit(self, stats: PairedStats, n_min: int) -> None:
        if not isinstance(stats, PairedStats):
            raise InvalidInput("fit_stats expects PairedStats")
        if stats.n < n_min:
            raise InvalidInput(f"{type(self).__name__} needs at least {n_min} paired anchors, got {stats.n}")
        self.n_features_in_ = stats.d_x
        self.n_outputs_ = stats.d_y
        self.n_anchors_ = int(stats.n)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFitted(f"{type(self).__name__} is not fitted yet; call fit or fit_stats first")

    coef_: np.ndarray       # set by fit_stats / from_state of the affine subclasses
    intercept_: np.ndarray

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (d_y, d_x), b (d_y,)) of the fitted map."""
        return self.coef_, self.intercept_

    # using --------------------------------------------------------------------------------
    def _source(self, X) -> np.ndarray:
        self._check_fitted()
        X = as_matrix(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise InvalidInput(f"X has {X.shape[1]} columns, the map expects {self.n_features_in_}", reason="DIMENSION_MISMATCH")
        return X

    def transform(self, X) -> np.ndarray:
        """Map source rows X (n, d_x) to target space (n, d_y); float32 in -> float32 out, else float64."""
        return self._map(self._source(X))

    def transform_checked(self, X: np.ndarray) -> np.ndarray:
        """``transform`` of rows the caller has already checked (a finite float (n, d_x) array:
        the service's vector boundary); only the width is verified, nothing is scanned."""
        self._check_fitted()
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise InvalidInput(f"X has shape {X.shape}, the map expects (n, {self.n_features_in_})")
        return self._map(X)

    def _map(self, X: np.ndarray) -> np.ndarray:
        W, b = self._affine()
        return (X.astype(np.float64, copy=False) @ W.T + b).astype(out_dtype(X), copy=False)

    def score(self, X, Y) -> float:
        """Uniform-average R^2 of transform(X) vs Y: (-inf, 1], higher is better."""
        from convergent.server.align.metrics import r2_score

        X, Y = as_pair(X, Y)
        return r2_score(Y, self.transform(X))

    def export(self) -> dict[str, np.ndarray]:
        """Arrays a server needs to apply the map: always "W" (d_y, d_x) and "b" (d_y,), float64."""
        self._check_fitted()
        W, b = self._affine()
        return {"W": np.array(W, dtype=np.float64), "b": np.array(b, dtype=np.float64)}

    # persistence --------------------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(params, arrays): params are JSON-able (class, hyper-parameters, scalar fit results)."""
        self._check_fitted()
        params = {
            "class": type(self).__name__,
            "hyper": {k: _jsonable(getattr(self, k)) for k in self._hyper},
            "n_features_in_": int(self.n_features_in_),
            "n_outputs_": int(self.n_outputs_),
            "n_anchors_": int(self.n_anchors_),
        }
        params.update({k: _jsonable(getattr(self, k)) for k in self._state_scalars})
        arrays = {k: np.array(getattr(self, k), dtype=np.float64, order="C") for k in self._state_arrays}
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "_AffineMap":
        if params.get("class") != cls.__name__:
            raise InvalidInput(f"state is for {params.get('class')!r}, not {cls.__name__}")
        try:
            est = cls(**params["hyper"])
            for k in ("n_features_in_", "n_outputs_", "n_anchors_", *cls._state_scalars):
                setattr(est, k, params[k])
            for k in cls._state_arrays:
                setattr(est, k, np.array(arrays[k], dtype=np.float64, order="C"))
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"incomplete {cls.__name__} state: {exc}") from exc
        W, b = est._affine()
        if W.shape != (est.n_outputs_, est.n_features_in_) or b.shape != (est.n_outputs_,):
            raise InvalidInput(f"{cls.__name__} state arrays do not match its dimensions")
        return est


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


class RidgeMap(_AffineMap):
    """Multi-output ridge regression ``y = coef_ @ x + intercept_`` with lambda chosen by GCV.

    Minimises ``||Y - X W^T - b||^2 + alpha ||W||^2`` (the same objective and alpha scale as
    ``sklearn.linear_model.Ridge(alpha, fit_intercept=True)``; the intercept is not shrunk).
    The centred ``Sxx = Xc^T Xc`` is eigendecomposed once; then for every alpha the
    generalised cross-validation score (Golub, Heath & Wahba, Technometrics 1979),
    ``GCV(alpha) = RSS(alpha) / (n * d_y) / (1 - (df + 1) / n)^2`` with
    ``df = sum e / (e + alpha)`` (+1 for the intercept) and ``RSS`` taken from the statistics,
    costs O(d_x d_y). Because ``df -> n`` makes GCV blow up, small alphas are rejected exactly
    where least squares interpolates (n ~ d), so the fit does not collapse there.

    alphas: None -> 13 values ``logspace(-6, 6, 13) * trace(Sxx) / d_x`` (relative to the data's
    scale); otherwise absolute alphas (> 0) on sklearn's scale.
    Learned: ``coef_`` (d_y, d_x), ``intercept_`` (d_y,), ``alpha_``, ``alphas_`` and ``gcv_``
    (per alpha, lower is better). ``export()``: "W" (= coef_), "b" (= intercept_).
    """

    _hyper = ("alphas", "fit_intercept")
    _state_arrays = ("coef_", "intercept_", "alphas_", "gcv_")
    _state_scalars = ("alpha_",)

    def __init__(self, alphas=None, fit_intercept: bool = True):
        self.alphas = alphas
        self.fit_intercept = fit_intercept

    def fit_stats(self, stats: PairedStats) -> "RidgeMap":
        self._start_fit(stats, 2 if self.fit_intercept else 1)
        n, d_x, d_y = stats.n, stats.d_x, stats.d_y
        if self.fit_intercept:
            sxx, sxy, syy = stats.scatter()
        else:
            sxx, sxy, syy = stats.xtx, stats.xty, stats.yty
        e, V = np.linalg.eigh(sxx)
        e = np.clip(e, 0.0, None)
        if self.alphas is None:
            scale = float(np.trace(sxx)) / d_x
            alphas = np.logspace(-6, 6, 13) * (scale if scale > 0 else 1.0)
        else:
            alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
            if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
                raise InvalidInput("alphas must be a non-empty list of finite values > 0")
        P = V.T @ sxy  # (d_x, d_y) cross-products in the eigenbasis
        p2 = np.einsum("ij,ij->i", P, P)
        tr_syy = float(np.trace(syy))
        extra = 1.0 if self.fit_intercept else 0.0
        gcv = np.empty(alphas.size)
        for i, a in enumerate(alphas):
            df = float(np.sum(e / (e + a)))
            # RSS = tr(Syy) - 2 tr(W Sxy) + tr(W Sxx W^T), diagonal in the eigenbasis
            rss = max(tr_syy - float(np.sum(p2 * (e + 2 * a) / (e + a) ** 2)), 0.0)
            denom = 1.0 - (df + extra) / n
            gcv[i] = rss / (n * d_y) / denom**2 if denom > 1e-12 else np.inf
        best = int(np.argmin(gcv)) if np.isfinite(gcv).any() else int(np.argmax(alphas))
        self.alphas_, self.gcv_, self.alpha_ = alphas, gcv, float(alphas[best])
        self.coef_ = np.ascontiguousarray(((V / (e + self.alpha_)) @ P).T)  # row-major, as from_state
        self.intercept_ = stats.mean_y - self.coef_ @ stats.mean_x if self.fit_intercept else np.zeros(d_y)
        return self


class ProcrustesMap(_AffineMap):
    """(Scaled) orthogonal Procrustes ``y = scale_ * rotation_ @ x + intercept_``.

    Schönemann, Psychometrika 1966: with the centred cross-scatter ``Sxy = Xc^T Yc = U S V^T``
    the optimal ``rotation_ = V U^T`` (d_y, d_x), semi-orthogonal when d_x != d_y
    (``R R^T = I`` if d_y <= d_x, else ``R^T R = I``). ``scale=True`` adds the least-squares
    scale ``s = sum(S) / tr(R Sxx R^T)``. With ``fit_intercept=False`` nothing is centred.
    ``export()``: "R" (d_y, d_x), "s" (1,), "b" (d_y,), plus "W" = s R.
    """

    _hyper = ("scale", "fit_intercept")
    _state_arrays = ("rotation_", "intercept_", "singular_values_")
    _state_scalars = ("scale_",)

    def __init__(self, scale: bool = True, fit_intercept: bool = True):
        self.scale = scale
        self.fit_intercept = fit_intercept

    def fit_stats(self, stats: PairedStats) -> "ProcrustesMap":
        self._start_fit(stats, 2 if self.fit_intercept else 1)
        sxx, sxy, _ = stats.scatter() if self.fit_intercept else (stats.xtx, stats.xty, None)
        U, S, Vt = np.linalg.svd(sxy, full_matrices=False)
        R = np.ascontiguousarray((U @ Vt).T)  # row-major, as from_state rebuilds it
        s = 1.0
        if self.scale:
            denom = float(np.einsum("ij,ij->", R @ sxx, R))
            if denom <= 0:
                raise InvalidInput("the source anchors have no variance; cannot fit a scale")
            s = float(S.sum()) / denom
        self.rotation_, self.scale_, self.singular_values_ = R, s, S
        self.intercept_ = (
            stats.mean_y - s * (R @ stats.mean_x) if self.fit_intercept else np.zeros(stats.d_y)
        )
        return self

    def _affine(self):
        return self.scale_ * self.rotation_, self.intercept_

    def inverse_transform(self, Y) -> np.ndarray:
        """Target rows (n, d_y) -> source space (n, d_x): ``R^T (y - b) / s`` (exact inverse when
        d_x == d_y, else the least-squares pseudo-inverse); dtype rule as ``transform``."""
        self._check_fitted()
        Y = as_matrix(Y, "Y")
        if Y.shape[1] != self.n_outputs_:
            raise InvalidInput(f"Y has {Y.shape[1]} columns, the map expects {self.n_outputs_}", reason="DIMENSION_MISMATCH")
        if self.scale_ == 0:
            raise InvalidInput("the fitted scale is 0; the map has no inverse")
        X = (Y.astype(np.float64, copy=False) - self.intercept_) @ self.rotation_ / self.scale_
        return X.astype(out_dtype(Y), copy=False)

    def export(self) -> dict[str, np.ndarray]:
        out = super().export()
        out.update(R=self.rotation_.copy(), s=np.array([self.scale_], dtype=np.float64))
        return out


class CCAMap(_AffineMap):
    """Regularised canonical correlation analysis (Hotelling, Biometrika 1936) as a map.

    Shrunk covariances ``C~ = (1 - reg) C + reg * tr(C)/d * I`` (reg in [0, 1)) whiten each
    side; the SVD of ``Cxx~^-1/2 Cxy Cyy~^-1/2 = U diag(rho) V^T`` gives
    ``x_weights_ = Cxx~^-1/2 U_k`` (d_x, k) and ``y_weights_ = Cyy~^-1/2 V_k`` (d_y, k), so
    ``transform_source(X) = (X - mean_x) x_weights_`` and ``transform_target(Y)`` put both
    models into one k-dim space where unit j of the two sides correlates ``rho_j``.

    ``transform(X)`` (source -> target space) predicts the target canonical variates as
    ``rho * u`` (their conditional mean) and maps them back with
    ``y_loadings_ = Cyy~ y_weights_`` (d_y, k): the generalised (Cyy~-metric) pseudo-inverse of
    the target projection, ``y_weights_^T y_loadings_ = I``. With k = d and reg = 0 this is
    exactly least squares; truncating k gives a reduced-rank map.
    n_components None -> k = min(d_x, d_y, n - 1) (select.fit_auto tries smaller k on held-out
    anchors). ``export()``: "Wx", "Wy", "Ly", "mean_x", "mean_y", "canonical_correlations",
    plus "W", "b".
    """

    _hyper = ("n_components", "reg")
    _state_arrays = ("x_weights_", "y_weights_", "y_loadings_", "mean_x_", "mean_y_", "canonical_correlations_")

    def __init__(self, n_components: int | None = None, reg: float = 1e-3):
        self.n_components = n_components
        self.reg = reg

    def fit_stats(self, stats: PairedStats) -> "CCAMap":
        if not (0.0 <= float(self.reg) < 1.0):
            raise InvalidInput(f"reg must be in [0, 1), got {self.reg}", reason="PARAMETER_OUT_OF_RANGE", field="params.reg")
        self._start_fit(stats, 2)
        k_max = min(stats.d_x, stats.d_y)
        k = min(k_max, stats.n - 1) if self.n_components is None else int(self.n_components)
        if not 1 <= k <= k_max:
            raise InvalidInput(f"n_components must be in [1, {k_max}], got {self.n_components}", reason="PARAMETER_OUT_OF_RANGE",
                               field="params.n_components")
        cxx, cxy, cyy = stats.covariances()
        r = float(self.reg)
        cxx = (1 - r) * cxx + r * np.trace(cxx) / stats.d_x * np.eye(stats.d_x)
        cyy = (1 - r) * cyy + r * np.trace(cyy) / stats.d_y * np.eye(stats.d_y)
        wx, wy = _inv_sqrt_psd(cxx), _inv_sqrt_psd(cyy)
        U, S, Vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
        self.x_weights_ = wx @ U[:, :k]
        self.y_weights_ = wy @ Vt[:k].T
        self.y_loadings_ = cyy @ self.y_weights_
        self.canonical_correlations_ = np.clip(S[:k], 0.0, 1.0)
        self.mean_x_, self.mean_y_ = stats.mean_x, stats.mean_y
        return self

    def _affine(self):
        W = (self.y_loadings_ * self.canonical_correlations_) @ self.x_weights_.T
        return W, self.mean_y_ - W @ self.mean_x_

    def transform_source(self, X) -> np.ndarray:
        """Source rows (n, d_x) -> shared canonical space (n, k); dtype rule as ``transform``."""
        X = self._source(X)
        return ((X.astype(np.float64, copy=False) - self.mean_x_) @ self.x_weights_).astype(out_dtype(X), copy=False)

    def transform_target(self, Y) -> np.ndarray:
        """Target rows (n, d_y) -> shared canonical space (n, k); dtype rule as ``transform``."""
        self._check_fitted()
        Y = as_matrix(Y, "Y")
        if Y.shape[1] != self.n_outputs_:
            raise InvalidInput(f"Y has {Y.shape[1]} columns, the map expects {self.n_outputs_}", reason="DIMENSION_MISMATCH")
        return ((Y.astype(np.float64, copy=False) - self.mean_y_) @ self.y_weights_).astype(out_dtype(Y), copy=False)

    def export(self) -> dict[str, np.ndarray]:
        out = super().export()
        out.update(
            Wx=self.x_weights_.copy(), Wy=self.y_weights_.copy(), Ly=self.y_loadings_.copy(),
            mean_x=self.mean_x_.copy(), mean_y=self.mean_y_.copy(),
            canonical_correlations=self.canonical_correlations_.copy(),
        )
        return out
