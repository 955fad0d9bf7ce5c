"""1:1 verification: accept a pair when its similarity reaches the threshold.

Rule everywhere in convergent: **accept iff score >= threshold** (scores: higher = more
similar), the same rule :func:`convergent.server.inference.calibration.calibrate_threshold`
calibrates for.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from convergent.server.errors import InvalidInput
from convergent.server.inference._validate import as_scores

__all__ = ["verify"]


def verify(scores: np.ndarray, threshold: float) -> np.ndarray:
    """scores (n,) -> accept (n,) bool, ``scores >= threshold`` (exact, in float64)."""
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(float(threshold)):
        raise InvalidInput(f"threshold must be a finite number, got {threshold!r}")
    s = as_scores(scores, "scores", allow_empty=True)
    # compare in float64 so a float32 score is never rounded against the threshold
    return s.astype(np.float64, copy=False) >= float(threshold)
