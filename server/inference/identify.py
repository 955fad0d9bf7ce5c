"""Row-wise vector helpers for identification: normalisation and paired cosine scores.

Score direction: cosine similarity in [-1, 1], **higher = more similar**.
"""

from __future__ import annotations

import numpy as np

from convergent.server.errors import InvalidInput
from convergent.server.inference._validate import as_vectors

__all__ = ["normalize_rows", "cosine_scores"]


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """L2-normalise each row of X (n, d) -> float32 (n, d).

    A zero row stays zero (its cosine with anything is then 0), never NaN. Rows are scaled
    in float64 so tiny or huge finite values do not underflow / overflow.
    """
    X = as_vectors(X, "X", allow_empty=True)
    X64 = X.astype(np.float64)
    norms = np.linalg.norm(X64, axis=1, keepdims=True)
    out = np.divide(X64, norms, out=np.zeros_like(X64), where=norms > 0)
    return out.astype(np.float32)


def cosine_scores(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine similarity of paired rows: A (n, d), B (n, d) -> (n,) float32, row i = cos(A[i], B[i]).

    Rows are normalised here (a zero row scores 0). Higher = more similar.
    """
    A = normalize_rows(A)
    B = normalize_rows(B)
    if A.shape != B.shape:
        raise InvalidInput(f"A and B must have the same shape, got {A.shape} and {B.shape}")
    return np.einsum("ij,ij->i", A, B, dtype=np.float32)
