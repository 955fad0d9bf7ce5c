"""Boundary validation of the inference modules: raise ``InvalidInput``, never assert."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from convergent.server.errors import InvalidInput


def _as_real_array(a, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise InvalidInput(f"{name} is not an array") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInput(f"{name} must be real numeric, got dtype {arr.dtype}")
    return arr


def as_vectors(a, name: str, *, dim: int | None = None, allow_empty: bool = False) -> np.ndarray:
    """Return ``a`` as a finite, C-contiguous float32 (n, d) array.

    A single vector (d,) is not accepted: callers pass (1, d) so shapes stay explicit.
    """
    arr = _as_real_array(a, name)
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be 2-D (rows, dims), got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise InvalidInput(f"{name} is empty", reason="EMPTY_INPUT")
    if dim is not None and arr.shape[1] != dim:
        raise InvalidInput(f"{name} has dimension {arr.shape[1]}, expected {dim}", reason="DIMENSION_MISMATCH",
                           metadata={"expected": dim, "got": arr.shape[1]})
    if arr.shape[1] < 1:
        raise InvalidInput(f"{name} needs at least one column, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{name} contains NaN or Inf", reason="NON_FINITE_VALUE")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise InvalidInput(f"{name} overflows float32", reason="NON_FINITE_VALUE")
    return out


def as_scores(a, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Return ``a`` as a finite 1-D float array (float32 kept, anything else -> float64)."""
    arr = _as_real_array(a, name)
    if arr.ndim != 1:
        raise InvalidInput(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise InvalidInput(f"{name} is empty", reason="EMPTY_INPUT")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{name} contains NaN or Inf", reason="NON_FINITE_VALUE")
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)


def positive_int(value, name: str) -> int:
    """An int > 0 (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}", reason="VALUE_OUT_OF_RANGE")
    return int(value)


def open_unit_float(value, name: str) -> float:
    """A finite real strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise InvalidInput(f"{name} must be a finite number in (0, 1), got {value!r}", reason="VALUE_OUT_OF_RANGE")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise InvalidInput(f"{name} must be in (0, 1), got {value!r}", reason="VALUE_OUT_OF_RANGE")
    return value


def as_ids(ids, name: str = "ids") -> list[str]:
    """A list of non-empty, unique strings."""
    if isinstance(ids, (str, bytes)):
        raise InvalidInput(f"{name} must be a sequence of strings, not a single string")
    try:
        out = list(ids)
    except TypeError as exc:
        raise InvalidInput(f"{name} must be a sequence of strings") from exc
    for i in out:
        if not isinstance(i, str) or not i:
            raise InvalidInput(f"{name} must contain non-empty strings, got {i!r}", reason="INVALID_ID")
    if len(set(out)) != len(out):
        raise InvalidInput(f"{name} contains duplicates", reason="DUPLICATE_ID")
    return out


def removal_ids(ids) -> list[str]:  # noqa: ANN001
    """The distinct string ids of a removal, in order (others are ignored, as unknown ids are);
    a bare string is refused: it would otherwise be read as one id per character."""
    if isinstance(ids, (str, bytes)):
        raise InvalidInput("ids must be a sequence of strings, not a single string")
    return [i for i in dict.fromkeys(ids) if isinstance(i, str)]


def new_entries(ids, vectors, dim: int, present) -> tuple[list[str], np.ndarray]:  # noqa: ANN001
    """Validated (ids, vectors (n, dim)) to add to an index; ``present(ids)`` -> the ids it holds
    already, which are :class:`AlreadyExists` (remove one first to replace its vector)."""
    from convergent.server.errors import AlreadyExists

    ids = as_ids(ids)
    X = as_vectors(vectors, "vectors", dim=dim, allow_empty=True)
    if len(ids) != X.shape[0]:
        raise InvalidInput(f"{len(ids)} ids for {X.shape[0]} vectors", reason="LENGTH_MISMATCH", field="ids")
    taken = present(ids)
    if taken:
        raise AlreadyExists(f"{len(taken)} id(s) already in the index, e.g. {taken[0]!r}", reason="ID_TAKEN", field="ids")
    return ids, X
