"""Sufficient statistics of paired anchors: fit maps in O(d^2) memory however many anchors.

Row i of ``X`` (n, d_x) is anchor i embedded by the source model, row i of ``Y`` (n, d_y) the
same anchor embedded by the target model. Every estimator in this package fits from
:class:`PairedStats`; ``fit(X, Y)`` is ``fit_stats(PairedStats.from_arrays(X, Y))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convergent.server.align._validate import as_pair
from convergent.server.errors import InvalidInput

_ARRAY_KEYS = ("sum_x", "sum_y", "xtx", "xty", "yty")
_CROSS_KEYS = ("sum_x", "sum_y", "sq_x", "xty", "sq_y")
PRODUCTS = ("full", "cross")


@dataclass
class PairedStats:
    """Float64 count, sums and raw cross-products of paired rows.

    Attributes: ``n`` (int), ``sum_x`` (d_x,), ``sum_y`` (d_y,), ``xtx`` (d_x, d_x),
    ``xty`` (d_x, d_y), ``yty`` (d_y, d_y), all uncentred (``xtx = X^T X``).

    ``products="cross"`` keeps only what unit matching needs: the sums, ``xty`` and the sums of
    squares ``sq_x`` (d_x,), ``sq_y`` (d_y,) (the diagonals of ``xtx``, ``yty``, which are
    None). Its chunk products are float32 (one float32 gemm per chunk, the rate of the
    in-memory baseline) added to float64 totals; sums and squares are float32 over runs of 128
    rows, float64 across. Against the float64 products the correlations differ by ~1e-6
    (relative error of float32 dot products over a chunk of up to ~10^4 rows, amplified by
    centring when the means are large); tests hold them to 1e-5. :meth:`scatter` needs "full".

    Centred quantities are derived as ``xtx - n * mean_x mean_x^T``. That subtraction can
    cancel digits when the mean is large compared with the spread; in float64 and for
    embeddings (|mean| of order the spread) it keeps ~12+ significant digits, which is far
    below the noise of any fit here. Chunks are summed in float64 whatever their dtype.
    """

    n: int
    sum_x: np.ndarray
    sum_y: np.ndarray
    xtx: np.ndarray | None
    xty: np.ndarray
    yty: np.ndarray | None
    sq_x: np.ndarray | None = None
    sq_y: np.ndarray | None = None
    products: str = "full"

    # -- construction --------------------------------------------------------------------
    @classmethod
    def empty(cls, d_x: int, d_y: int, products: str = "full") -> "PairedStats":
        """Statistics of zero rows for a (d_x -> d_y) pair; ``products``: "full" or "cross"."""
        if int(d_x) < 1 or int(d_y) < 1:
            raise InvalidInput(f"dimensions must be >= 1, got d_x={d_x}, d_y={d_y}")
        if products not in PRODUCTS:
            raise InvalidInput(f"products must be one of {PRODUCTS}, got {products!r}")
        d_x, d_y = int(d_x), int(d_y)
        z = np.zeros
        if products == "cross":
            return cls(0, z(d_x), z(d_y), None, z((d_x, d_y)), None, z(d_x), z(d_y), "cross")
        return cls(0, z(d_x), z(d_y), z((d_x, d_x)), z((d_x, d_y)), z((d_y, d_y)))

    @classmethod
    def from_arrays(cls, X, Y, products: str = "full") -> "PairedStats":
        """Statistics of the paired rows (X (n, d_x), Y (n, d_y))."""
        X, Y = as_pair(X, Y)
        return cls.empty(X.shape[1], Y.shape[1], products).update(X, Y)

    @property
    def _keys(self) -> tuple[str, ...]:
        return _CROSS_KEYS if self.products == "cross" else _ARRAY_KEYS

    def copy(self) -> "PairedStats":
        out = PairedStats.empty(self.d_x, self.d_y, self.products)
        out.n = self.n
        for k in self._keys:
            setattr(out, k, getattr(self, k).copy())
        return out

    def covers(self, products: str) -> bool:
        """Whether these statistics serve a method that needs ``products``."""
        return self.products == "full" or products == "cross"

    def as_products(self, products: str) -> "PairedStats":
        """A copy holding ``products`` ("cross" from "full": the diagonals); needs :meth:`covers`."""
        if not self.covers(products):
            raise InvalidInput("statistics with cross products only cannot give the full ones")
        if products == self.products:
            return self.copy()
        assert self.xtx is not None and self.yty is not None
        return PairedStats(self.n, self.sum_x.copy(), self.sum_y.copy(), None, self.xty.copy(), None,
                           np.diag(self.xtx).copy(), np.diag(self.yty).copy(), "cross")

    @property
    def d_x(self) -> int:
        return self.sum_x.shape[0]

    @property
    def d_y(self) -> int:
        return self.sum_y.shape[0]

    # -- accumulation --------------------------------------------------------------------
    def _checked(self, X, Y) -> tuple[np.ndarray, np.ndarray]:
        # Finiteness is checked on the chunk's sums of squares (:meth:`_add`), not by a scan
        # of its rows: a NaN or Inf anywhere makes its column's sum of squares non-finite.
        X, Y = as_pair(X, Y, check_finite=False)
        if X.shape[1] != self.d_x or Y.shape[1] != self.d_y:
            raise InvalidInput(
                f"chunk dims ({X.shape[1]}, {Y.shape[1]}) do not match statistics ({self.d_x}, {self.d_y})"
            )
        if self.products == "cross":
            return X.astype(np.float32, copy=False), Y.astype(np.float32, copy=False)
        return X.astype(np.float64, copy=False), Y.astype(np.float64, copy=False)

    def _add(self, X: np.ndarray, Y: np.ndarray, sign: float, device: str = "cpu") -> None:
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite input: rejected just below
            parts = _cross_products(X, Y) if self.products == "cross" else _products(X, Y, device)
        squares = (parts[2], parts[4]) if self.products == "cross" else (np.diagonal(parts[2]), np.diagonal(parts[4]))
        for name, sq in zip(("X", "Y"), squares):
            if not np.all(np.isfinite(sq)):
                raise InvalidInput(f"{name} contains NaN or Inf (or values whose squares overflow)", reason="NON_FINITE_VALUE")
        self.n += int(sign) * X.shape[0]
        for k, part in zip(self._keys, parts):
            getattr(self, k).__iadd__(sign * part)

    def update(self, X, Y, device: str = "cpu") -> "PairedStats":
        """Add a chunk of paired rows in place; returns ``self``.

        ``device``: "cpu" (numpy) or "cuda" (torch, float64 on the GPU; the same sums to rounding).
        """
        self._add(*self._checked(X, Y), 1.0, device)
        return self

    def subtract(self, X, Y) -> "PairedStats":
        """Remove rows that were added before (e.g. a held-out split) in place; returns ``self``.

        The caller guarantees the rows were part of the statistics; only the count is checked.
        """
        X, Y = self._checked(X, Y)
        if X.shape[0] > self.n:
            raise InvalidInput(f"cannot remove {X.shape[0]} rows from statistics of {self.n}")
        self._add(X, Y, -1.0)
        return self

    def merge(self, other: "PairedStats") -> "PairedStats":
        """Add another set of statistics of the same pair in place; returns ``self``."""
        if not isinstance(other, PairedStats) or (other.d_x, other.d_y) != (self.d_x, self.d_y):
            raise InvalidInput("can only merge PairedStats of the same dimensions")
        if other.products != self.products:
            raise InvalidInput(f"cannot merge {other.products!r} statistics into {self.products!r} ones")
        self.n += other.n
        for k in self._keys:
            getattr(self, k).__iadd__(getattr(other, k))
        return self

    # -- derived quantities --------------------------------------------------------------
    def _need(self, n_min: int) -> None:
        if self.n < n_min:
            raise InvalidInput(f"need at least {n_min} paired anchors, have {self.n}")

    @property
    def mean_x(self) -> np.ndarray:
        self._need(1)
        return self.sum_x / self.n

    @property
    def mean_y(self) -> np.ndarray:
        self._need(1)
        return self.sum_y / self.n

    def scatter_diagonals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(diag Sxx (d_x,), Sxy (d_x, d_y), diag Syy (d_y,)) of either kind of statistics."""
        mx, my = self.mean_x, self.mean_y
        if self.products == "cross":
            assert self.sq_x is not None and self.sq_y is not None
            sq_x, sq_y = self.sq_x, self.sq_y
        else:
            assert self.xtx is not None and self.yty is not None
            sq_x, sq_y = np.diag(self.xtx), np.diag(self.yty)
        return sq_x - self.n * mx * mx, self.xty - self.n * np.outer(mx, my), sq_y - self.n * my * my

    def scatter(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centred scatter matrices (Sxx, Sxy, Syy) = n * covariance (biased); need n >= 1 and
        full products."""
        if self.xtx is None or self.yty is None:
            raise InvalidInput("these statistics hold cross products only (products='cross'); "
                               "the method needs the full ones")
        mx, my = self.mean_x, self.mean_y
        sxx = self.xtx - self.n * np.outer(mx, mx)
        sxy = self.xty - self.n * np.outer(mx, my)
        syy = self.yty - self.n * np.outer(my, my)
        return (sxx + sxx.T) / 2, sxy, (syy + syy.T) / 2

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unbiased centred covariances (cxx (d_x,d_x), cxy (d_x,d_y), cyy (d_y,d_y)); need n >= 2."""
        self._need(2)
        return tuple(s / (self.n - 1) for s in self.scatter())  # type: ignore[return-value]

    @property
    def cxx(self) -> np.ndarray:
        return self.covariances()[0]

    @property
    def cxy(self) -> np.ndarray:
        return self.covariances()[1]

    @property
    def cyy(self) -> np.ndarray:
        return self.covariances()[2]

    def correlation(self) -> np.ndarray:
        """Pearson cross-correlation of every source unit with every target unit, (d_x, d_y) in [-1, 1].

        Units with (numerically) zero variance get correlation 0. This is the unit-matching
        matrix of Li et al., "Convergent Learning", ICLR 2016.
        """
        dxx, sxy, dyy = self.scatter_diagonals()
        vx, vy = np.clip(dxx, 0, None), np.clip(dyy, 0, None)
        tiny_x = vx <= 1e-12 * max(vx.max(), 1e-300)
        tiny_y = vy <= 1e-12 * max(vy.max(), 1e-300)
        sx = np.where(tiny_x, np.inf, np.sqrt(vx))
        sy = np.where(tiny_y, np.inf, np.sqrt(vy))
        return np.clip(sxy / sx[:, None] / sy[None, :], -1.0, 1.0)

    # -- persistence (no pickle) ---------------------------------------------------------
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(params, arrays): params ``{"n", "d_x", "d_y"}`` are JSON-able ints; arrays are float64
        (``sq_x``, ``sq_y`` instead of ``xtx``, ``yty`` for cross products)."""
        return {"n": int(self.n), "d_x": self.d_x, "d_y": self.d_y}, {k: getattr(self, k).copy() for k in self._keys}

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "PairedStats":
        """Statistics from :meth:`get_state`'s output; cross products if the arrays hold ``sq_x``."""
        try:
            out = cls.empty(int(params["d_x"]), int(params["d_y"]), "cross" if "sq_x" in arrays else "full")
            out.n = int(params["n"])
            for k in out._keys:
                a = np.asarray(arrays[k], dtype=np.float64)
                if a.shape != getattr(out, k).shape:
                    raise InvalidInput(f"state array {k} has shape {a.shape}, expected {getattr(out, k).shape}")
                setattr(out, k, a.copy())
        except KeyError as exc:
            raise InvalidInput(f"statistics state lacks {exc}") from exc
        if out.n < 0:
            raise InvalidInput("statistics state has a negative count")
        return out


_RUN = 128  # rows summed in float32 before the float64 total (error ~ float32 epsilon)


def _column_sums(A: np.ndarray, square: bool = False) -> np.ndarray:
    """Column sums (of squares) of float32 A (n, d) as float64 (d,): float32 within runs of
    _RUN rows, float64 across them (4x faster than a float64 reduction, same digits as the gemm)."""
    m = A.shape[0] - A.shape[0] % _RUN
    total = np.zeros(A.shape[1])
    if m:
        B = A[:m].reshape(m // _RUN, _RUN, A.shape[1])
        total += (np.einsum("bij,bij->bj", B, B) if square else B.sum(axis=1)).sum(axis=0, dtype=np.float64)
    if m < A.shape[0]:
        T = A[m:]
        total += np.einsum("ij,ij->j", T, T) if square else T.sum(axis=0)
    return total


def _cross_products(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, ...]:
    """(sum X, sum Y, sum X^2, X^T Y, sum Y^2) of float32 rows: float32 products, float64 totals."""
    return (_column_sums(X), _column_sums(Y), _column_sums(X, square=True), (X.T @ Y).astype(np.float64),
            _column_sums(Y, square=True))


def _products(X: np.ndarray, Y: np.ndarray, device: str) -> tuple[np.ndarray, ...]:
    """(sum X, sum Y, X^T X, X^T Y, Y^T Y) of float64 rows, on the CPU or a CUDA device."""
    if device == "cpu":
        return X.sum(axis=0), Y.sum(axis=0), X.T @ X, X.T @ Y, Y.T @ Y
    import torch

    Xt = torch.as_tensor(X, dtype=torch.float64, device=device)
    Yt = torch.as_tensor(Y, dtype=torch.float64, device=device)
    parts = (Xt.sum(dim=0), Yt.sum(dim=0), Xt.T @ Xt, Xt.T @ Yt, Yt.T @ Yt)
    return tuple(p.cpu().numpy() for p in parts)
