"""One-to-many unit mapping: each target unit as a sparse (L1) combination of source units.

Li et al., "Convergent Learning", ICLR 2016, §4: predict one net's units from the other's
with an L1 penalty and trace held-out loss along the penalty path (they find the best
held-out loss at a small lambda > 0: a few source units explain each target unit). The
penalty is the Lasso's (Tibshirani, JRSS-B 1996), solved by scikit-learn's coordinate
descent (``lasso_path``) from the statistics alone.
"""

from __future__ import annotations

import warnings

import numpy as np

from convergent.server.align._units import unit_stats
from convergent.server.align._validate import as_pair
from convergent.server.align.maps import _AffineMap
from convergent.server.align.stats import PairedStats
from convergent.server.errors import InvalidInput


class SparseMap(_AffineMap):
    """Per target unit Lasso on standardised units, fitted from :class:`PairedStats`.

    For every target unit j (standardised, u_j) and standardised source units z (biased,
    divide-by-n standard deviations of the fitting anchors), minimise over b_j (d_x,)
    ``1/(2n) ||u_j - Z b_j||^2 + alpha ||b_j||_1`` (scikit-learn ``Lasso`` on standardised
    data; the intercept is implicit). That objective equals
    ``(1 - 2 b^T r_j + b^T Rxx b) / 2 + alpha ||b||_1`` with the correlations ``Rxx``,
    ``r_j = Rxy[:, j]``, so statistics suffice: ``lasso_path`` gets the Gram matrix and
    ``X^T y`` precomputed plus a (d_x + 1)-row pseudo-design with exactly the same Gram,
    ``X^T y`` and ``y^T y``, so its solution, dual gap and stopping rule are those of the
    full data. One alpha (on the correlation scale, in (0, max|Rxy|]) is shared by all target
    units. The map is ``W[j, i] = b_ij sd_y_j / sd_x_i``, ``b = mean_y - W mean_x``
    (zero-variance units get 0 weights).

    Choice of alpha (lower ``path_loss_`` is better):

    * ``heldout=(X_held, Y_held)`` given: mean squared error of the standardised held-out
      targets (standardised with the fitting anchors' mean/sd; ~ 1 - R^2), averaged over
      rows and target units. ``criterion_ = "heldout"``; coefficients stay those of the
      fitting anchors.
    * otherwise: generalised cross-validation from the statistics,
      ``mean_j (RSS_j / n) / (1 - (nnz_j + 1) / n)^2``, with the number of non-zeros as the
      Lasso's degrees of freedom (Zou, Hastie & Tibshirani, Ann. Statist. 2007); an estimate
      of the same held-out error (``criterion_ = "gcv"``), not a measurement.

    alphas: None -> ``n_alphas`` values geometric from ``max|Rxy|`` (all coefficients 0) down
    to ``eps`` times that; else explicit alphas > 0 on the correlation scale.
    Learned: ``coef_`` (d_y, d_x), ``intercept_`` (d_y,), ``alpha_``, ``alphas_``
    (descending), ``path_loss_`` and ``path_nnz_`` (mean non-zeros per target unit) per
    alpha, ``criterion_``, ``converged_`` (every coordinate descent reached ``tol``; a
    non-converged path is reported here, not raised), ``path_`` (dict view of the path).
    ``export()``: "W", "b", "alphas", "path_loss", "path_nnz".
    """

    _hyper = ("alphas", "n_alphas", "eps", "max_iter", "tol")
    _state_arrays = ("coef_", "intercept_", "alphas_", "path_loss_", "path_nnz_")
    _state_scalars = ("alpha_", "criterion_", "converged_")

    def __init__(self, alphas=None, n_alphas: int = 12, eps: float = 1e-3, max_iter: int = 1000, tol: float = 1e-4):
        self.alphas = alphas
        self.n_alphas = n_alphas
        self.eps = eps
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, Y, heldout=None) -> "SparseMap":
        """Fit on paired rows X (n, d_x), Y (n, d_y); ``heldout=(X_held, Y_held)`` picks alpha."""
        return self.fit_stats(PairedStats.from_arrays(X, Y), heldout=heldout)

    def _alpha_grid(self, rxy: np.ndarray) -> np.ndarray:
        if self.alphas is not None:
            alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
            if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
                raise InvalidInput("alphas must be a non-empty list of finite values > 0")
            return np.sort(alphas)[::-1]
        if int(self.n_alphas) < 1 or not 0.0 < float(self.eps) < 1.0:
            raise InvalidInput(f"need n_alphas >= 1 and 0 < eps < 1, got {self.n_alphas}, {self.eps}")
        top = float(np.abs(rxy).max()) if rxy.size else 0.0
        top = top if top > 0 else 1.0
        return top * np.logspace(0.0, np.log10(float(self.eps)), int(self.n_alphas))

    def fit_stats(self, stats: PairedStats, heldout=None) -> "SparseMap":
        self._start_fit(stats, 2)
        try:
            ok = int(self.max_iter) >= 1 and float(self.tol) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidInput(f"need max_iter >= 1 and tol > 0, got {self.max_iter}, {self.tol}")
        if heldout is not None:
            if not isinstance(heldout, (tuple, list)) or len(heldout) != 2:
                raise InvalidInput("heldout must be a pair (X_held, Y_held)")
            X_h, Y_h = as_pair(*heldout, min_rows=1, names=("X_held", "Y_held"))
            if (X_h.shape[1], Y_h.shape[1]) != (stats.d_x, stats.d_y):
                raise InvalidInput("held-out dims do not match the fitting statistics")
        from sklearn.exceptions import ConvergenceWarning  # lazy: keeps the package import light

        u = unit_stats(stats)
        assert u.rxx is not None and u.ryy is not None and u.sxx is not None  # full statistics
        n, d_x, d_y = u.n, stats.d_x, stats.d_y
        try:
            alphas = self._alpha_grid(u.rxy)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"bad alphas / n_alphas / eps: {exc}") from exc

        # pseudo-design: Xp^T Xp / m = Rxx, Xp^T yp / m = r_j, yp^T yp / m = 1 (m = d_x + 1)
        m = d_x + 1
        e, V = np.linalg.eigh(u.rxx)
        e = np.clip(e, 0.0, None)
        keep = e > 1e-10 * max(float(e.max()), 1e-300)
        Xp = np.zeros((m, d_x))
        Xp[:d_x] = np.sqrt(m) * (np.sqrt(e)[:, None] * V.T)
        Xp = np.asfortranarray(Xp)
        gram = m * u.rxx
        T = np.where(keep[:, None], (V.T @ u.rxy) / np.sqrt(np.where(keep, e, 1.0))[:, None], 0.0)
        live_y = u.sd_y > 0
        B = np.zeros((alphas.size, d_x, d_y))  # standardised coefficients along the path
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            for j in np.flatnonzero(live_y):
                self._path(Xp, gram, m, T[:, j], u.rxy[:, j], alphas, B[:, :, j])
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)

        nnz = (B != 0).sum(axis=1)  # (n_alphas, d_y)
        if heldout is not None:
            zx = (X_h.astype(np.float64) - u.mean_x) * np.divide(1.0, u.sd_x, out=np.zeros(d_x), where=u.sd_x > 0)
            zy = (Y_h.astype(np.float64) - u.mean_y) * np.divide(1.0, u.sd_y, out=np.zeros(d_y), where=live_y)
            loss = np.array([np.mean((zy - zx @ B[a]) ** 2) for a in range(alphas.size)])
            self.criterion_ = "heldout"
        else:
            # in-sample standardised RSS / n = 1 - 2 b^T r + b^T Rxx b, per alpha and target unit
            rss = np.stack([1.0 - 2.0 * (b * u.rxy).sum(0) + ((u.rxx @ b) * b).sum(0) for b in B])
            rss = np.clip(rss, 0.0, None)[:, live_y]
            denom = 1.0 - (nnz[:, live_y] + 1.0) / n
            gcv = np.where(denom > 1e-12, rss / np.where(denom > 1e-12, denom, 1.0) ** 2, np.inf)
            loss = gcv.mean(axis=1) if live_y.any() else np.zeros(alphas.size)
            self.criterion_ = "gcv"
        best = int(np.argmin(loss)) if np.isfinite(loss).any() else 0  # ties -> the larger alpha
        self.alphas_, self.path_loss_, self.path_nnz_ = alphas, loss, nnz.mean(axis=1).astype(np.float64)
        self.alpha_, self.converged_ = float(alphas[best]), converged
        scale = np.divide(1.0, u.sd_x, out=np.zeros(d_x), where=u.sd_x > 0)
        self.coef_ = (B[best] * scale[:, None] * u.sd_y[None, :]).T
        self.intercept_ = u.mean_y - self.coef_ @ u.mean_x
        return self

    def _path(self, Xp, gram, m, t, r, alphas, out) -> None:
        """Lasso path of one target unit into ``out`` (n_alphas, d_x), via its pseudo-rows."""
        from sklearn.linear_model import lasso_path

        d_x = Xp.shape[1]
        yp = np.empty(m)
        yp[:d_x] = np.sqrt(m) * t
        yp[d_x] = np.sqrt(m) * np.sqrt(max(1.0 - float(t @ t), 0.0))  # residual norm of y
        _, coefs, _ = lasso_path(
            Xp, yp, alphas=alphas, precompute=gram, Xy=m * r, max_iter=int(self.max_iter), tol=float(self.tol)
        )
        out[...] = coefs.T

    @property
    def path_(self) -> dict[str, np.ndarray]:
        """{"alphas", "loss", "nnz"}: the penalty path, descending alphas (lower loss is better)."""
        self._check_fitted()
        return {"alphas": self.alphas_.copy(), "loss": self.path_loss_.copy(), "nnz": self.path_nnz_.copy()}

    def export(self) -> dict[str, np.ndarray]:
        out = super().export()
        out.update(
            alphas=np.array(self.alphas_, dtype=np.float64),
            path_loss=np.array(self.path_loss_, dtype=np.float64),
            path_nnz=np.array(self.path_nnz_, dtype=np.float64),
        )
        return out
