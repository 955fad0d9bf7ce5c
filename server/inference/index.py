"""Gallery indexes: top-k search by inner product (cosine on L2-normalised float32 rows).

Score direction everywhere: **higher = more similar**. The caller normalises rows (see
:func:`convergent.server.inference.identify.normalize_rows`); the indexes then return cosine
similarity in [-1, 1]. Rows that are not unit length are not an error: the score is then
simply the inner product.

Two implementations of :class:`VectorIndex`:

- :class:`ExactIndex` -- brute force, blocked matmul + partial selection; exact, with ties
  broken by insertion order (earlier insertion ranks first).
- :class:`HnswIndex` -- approximate (HNSW graph of faiss-cpu, inner-product metric).

Persistence follows the project's convention: ``get_state() -> (params, arrays)`` where params
is JSON-able and arrays is a ``dict[str, np.ndarray]`` of plain dtypes (float32, bool, uint8,
unicode), so storage never pickles; ``from_state(params, arrays)`` rebuilds.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from convergent.server.errors import InvalidInput
from convergent.server.inference.exact_index import ExactIndex, matmul_backend
from convergent.server.inference.hnsw_index import HnswIndex

__all__ = ["VectorIndex", "ExactIndex", "HnswIndex", "index_from_state", "matmul_backend"]


@runtime_checkable
class VectorIndex(Protocol):
    """A mutable gallery of string ids -> float32 vectors of one dimension, searchable by inner product."""

    dim: int

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert ``vectors`` (n, dim) under new, unique ``ids`` (n,); AlreadyExists if one is present."""

    def remove(self, ids: Iterable[str]) -> int:
        """Delete the given ids; unknown ids are ignored. Returns how many were removed."""

    def __len__(self) -> int: ...

    def __contains__(self, id_: object) -> bool: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k per query (q, dim) -> (ids (q lists), scores (q, columns) float32), best first."""

    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]: ...


_INDEX_CLASSES: dict[str, type[ExactIndex] | type[HnswIndex]] = {"ExactIndex": ExactIndex, "HnswIndex": HnswIndex}


def index_from_state(params: dict, arrays: dict[str, np.ndarray]) -> ExactIndex | HnswIndex:
    """Rebuild either index from ``get_state()`` output (dispatch on ``params["class"]``)."""
    cls = _INDEX_CLASSES.get(params.get("class")) if isinstance(params, dict) else None
    if cls is None:
        raise InvalidInput(f"unknown index class in state: {params.get('class') if isinstance(params, dict) else params!r}")
    return cls.from_state(params, arrays)
