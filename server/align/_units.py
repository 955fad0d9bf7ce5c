"""Unit-level statistics shared by the unit-matching estimators (matching, sparse, spectral).

All quantities come from :class:`PairedStats`, so they stream: centred scatter -> per-unit
standard deviations and the three correlation blocks of the joint (source + target) units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convergent.server.align.stats import PairedStats


@dataclass
class UnitStats:
    """Centred, standardised view of paired statistics.

    n; mean_x (d_x,), mean_y (d_y,); sd_x (d_x,), sd_y (d_y,): biased (divide by n) standard
    deviations, 0 for units with (numerically) no variance; sxx, sxy, syy: centred scatter;
    rxx (d_x, d_x), rxy (d_x, d_y), ryy (d_y, d_y): Pearson correlations, with every row and
    column of a zero-variance unit set to 0 (its diagonal too); dxx (d_x,): diagonal of sxx.
    From cross-product statistics (``products="cross"``) sxx, syy, rxx, ryy are None: only
    the matchers, which need rxy, sxy and the diagonals, take those.
    """

    n: int
    mean_x: np.ndarray
    mean_y: np.ndarray
    sd_x: np.ndarray
    sd_y: np.ndarray
    sxx: np.ndarray | None
    sxy: np.ndarray
    syy: np.ndarray | None
    rxx: np.ndarray | None
    rxy: np.ndarray
    ryy: np.ndarray | None
    dxx: np.ndarray


def _sd(diagonal: np.ndarray, n: int) -> np.ndarray:
    v = np.clip(diagonal, 0.0, None)
    sd = np.sqrt(v / n)
    sd[v <= 1e-12 * max(float(v.max()), 1e-300)] = 0.0
    return sd


def _inv(sd: np.ndarray) -> np.ndarray:
    return np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)


def unit_stats(stats: PairedStats, full: bool = True) -> UnitStats:
    """Standardised unit statistics of ``stats`` (needs n >= 1; callers check n >= 2).

    ``full=False``: from cross-product statistics, sxx, syy, rxx, ryy are None (full ones
    give everything); ``full=True`` with cross products raises :class:`InvalidInput`."""
    n = int(stats.n)
    if stats.products == "cross" and not full:
        dxx, sxy, dyy = stats.scatter_diagonals()
        sxx = syy = None
    else:
        sxx, sxy, syy = stats.scatter()
        dxx, dyy = np.diag(sxx), np.diag(syy)
    sd_x, sd_y = _sd(dxx, n), _sd(dyy, n)
    ix, iy = _inv(sd_x) / np.sqrt(n), _inv(sd_y) / np.sqrt(n)
    rxy = np.clip(sxy * ix[:, None] * iy[None, :], -1.0, 1.0)
    if sxx is None or syy is None:
        return UnitStats(n, stats.mean_x, stats.mean_y, sd_x, sd_y, None, sxy, None, None, rxy, None, dxx)
    rxx = np.clip(sxx * ix[:, None] * ix[None, :], -1.0, 1.0)
    ryy = np.clip(syy * iy[:, None] * iy[None, :], -1.0, 1.0)
    return UnitStats(n, stats.mean_x, stats.mean_y, sd_x, sd_y, sxx, sxy, syy, rxx, rxy, ryy, dxx)


def slopes(u: UnitStats, src: np.ndarray, tgt: np.ndarray, *, sign: bool, scale: bool) -> np.ndarray:
    """Per matched pair (src[k] -> tgt[k]) the coefficient a_k of ``y_tgt ~ a_k (x_src - mean)``.

    scale=True: least-squares slope cov(x, y) / var(x) (0 for a constant source unit);
    scale=False: unit slope, ``sign(corr)`` when sign else 1. sign=False clips negative slopes
    to 0 (a pair matched with negative correlation then predicts the target mean).
    """
    r = u.rxy[src, tgt]
    if scale:
        var = u.dxx[src]
        a = np.divide(u.sxy[src, tgt], var, out=np.zeros(len(src)), where=u.sd_x[src] > 0)
    else:
        a = np.where(r < 0, -1.0, 1.0) if sign else np.ones(len(src))
    return a if sign else np.clip(a, 0.0, None)


def restore_ints(est, names) -> None:
    """Cast index arrays back to int64 after ``from_state`` (state arrays are stored as float64)."""
    for k in names:
        setattr(est, k, np.rint(getattr(est, k)).astype(np.int64))
