"""Boundary validation shared by the align modules (raise ``InvalidInput``, never assert)."""

from __future__ import annotations

import numpy as np

from convergent.server.errors import InvalidInput


def as_matrix(a, name: str, *, min_rows: int = 1, check_finite: bool = True) -> np.ndarray:
    """Return ``a`` as a finite 2-D real array (dtype kept); raise ``InvalidInput`` otherwise.
    ``check_finite=False``: the caller checks finiteness itself (e.g. on sums it computes anyway)."""
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise InvalidInput(f"{name} is not an array") from exc
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be 2-D (rows, dims), got {arr.ndim}-D shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInput(f"{name} must be real numeric, got dtype {arr.dtype}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise InvalidInput(f"{name} needs at least {min_rows} row(s) and 1 column, got shape {arr.shape}")
    if check_finite and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{name} contains NaN or Inf", reason="NON_FINITE_VALUE")
    return arr


def as_pair(X, Y, *, min_rows: int = 1, names: tuple[str, str] = ("X", "Y"),
            check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate a paired (X, Y): both 2-D, finite (unless ``check_finite=False``), same number of rows."""
    X = as_matrix(X, names[0], min_rows=min_rows, check_finite=check_finite)
    Y = as_matrix(Y, names[1], min_rows=min_rows, check_finite=check_finite)
    if X.shape[0] != Y.shape[0]:
        raise InvalidInput(f"{names[0]} and {names[1]} must have the same rows, got {X.shape[0]} and {Y.shape[0]}")
    return X, Y


def out_dtype(X: np.ndarray) -> type:
    """Output dtype rule of every ``transform``: float32 in -> float32 out, anything else -> float64."""
    return np.float32 if X.dtype == np.float32 else np.float64
