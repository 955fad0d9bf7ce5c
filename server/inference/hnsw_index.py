"""The approximate gallery index: an HNSW graph of faiss-cpu with the inner-product metric.

Score direction: **higher = more similar** (cosine on unit rows)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Iterable, Sequence

import numpy as np

from convergent.server.errors import InvalidInput
from convergent.server.inference._validate import as_vectors, new_entries, positive_int, removal_ids
from convergent.server.inference._state import check_class as _check_class, state_ids as _state_ids


# --------------------------------------------------------------------------------------
# HNSW (faiss)
# --------------------------------------------------------------------------------------
_GENERATIONS = itertools.count()  # HnswIndex.generation: a fresh value per change, over all indexes


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a server dependency
        raise ImportError("HnswIndex needs faiss-cpu (pip install faiss-cpu)") from exc
    return faiss


class HnswIndex:
    """Approximate top-k by inner product: faiss ``IndexHNSWFlat`` with METRIC_INNER_PRODUCT.

    Vectors are inserted one at a time in the order given (faiss inserts a batch level by level,
    shuffled, on several threads), so the graph is a function of the sequence of vectors added:
    adding them in several calls or in one, on any number of threads, builds the same graph and
    gives the same answers (a rebuild from storage answers as the index it replaces).
    Removal marks a label deleted (searches skip it through a bitmap ``IDSelector``); when
    more than ``max_deleted_fraction`` of the graph is deleted the graph is rebuilt from the
    live vectors. A query with fewer hits than k is padded with id "" and score -inf.
    Equal scores in one result row are ordered by insertion (earlier first).

    Parameters: ``M`` graph degree, ``ef_construction`` build beam, ``ef_search`` search beam
    (raised to k when k is larger).
    """

    def __init__(self, dim: int, M: int = 32, ef_construction: int = 200, ef_search: int = 128, *,
                 max_deleted_fraction: float = 0.5):
        self.dim = positive_int(dim, "dim")
        self.M = positive_int(M, "M")
        self.ef_construction = positive_int(ef_construction, "ef_construction")
        self.ef_search = positive_int(ef_search, "ef_search")
        if not 0.0 < float(max_deleted_fraction) <= 1.0:
            raise InvalidInput(f"max_deleted_fraction must be in (0, 1], got {max_deleted_fraction!r}")
        self.max_deleted_fraction = float(max_deleted_fraction)
        self._reset()

    def _changed(self) -> None:
        """A new :attr:`generation`: unique over every index of the process and every change."""
        self.generation = next(_GENERATIONS)
        self._bitmap: np.ndarray | None = None  # packed live bits, made on the next search that needs them

    def _reset(self) -> None:
        faiss = _faiss()
        self._index = faiss.IndexHNSWFlat(self.dim, self.M, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = self.ef_construction
        self._index.hnsw.efSearch = self.ef_search
        self._labels: list[str] = []  # faiss label -> id (kept for deleted labels too)
        self._live = np.zeros(0, dtype=bool)
        self._pos: dict[str, int] = {}  # live id -> label
        self._changed()

    def __len__(self) -> int:
        return len(self._pos)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._pos

    @property
    def n_deleted(self) -> int:
        """Labels still in the graph but marked deleted."""
        return len(self._labels) - len(self._pos)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert ``vectors`` (n, dim) under new unique ``ids``; AlreadyExists if one is live."""
        ids, X = new_entries(ids, vectors, self.dim, lambda new: [i for i in new if i in self._pos])
        if not ids:
            return
        start = len(self._labels)
        X = np.ascontiguousarray(X, dtype=np.float32)
        for row in range(len(X)):  # one at a time: see the class docstring
            self._index.add(X[row : row + 1])
        self._labels.extend(ids)
        self._live = np.concatenate([self._live, np.ones(len(ids), dtype=bool)])
        self._pos.update(zip(ids, range(start, start + len(ids))))
        self._changed()

    def remove(self, ids: Iterable[str]) -> int:
        """Mark ``ids`` deleted (unknown ids ignored); returns the number removed."""
        gone = {i for i in removal_ids(ids) if i in self._pos}
        if not gone:
            return 0
        self._live[[self._pos.pop(i) for i in gone]] = False
        self._changed()
        if self.n_deleted > self.max_deleted_fraction * len(self._labels):
            self._rebuild()
        return len(gone)

    def _all_vectors(self) -> np.ndarray:
        n = len(self._labels)
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_n(0, n)

    def _rebuild(self) -> None:
        X = self._all_vectors()[self._live]
        ids = [self._labels[j] for j in np.flatnonzero(self._live)]
        self._reset()
        self.add(ids, X)

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Approximate top-k by inner product.

        queries (q, dim) -> (ids: q lists of exactly k strings, scores (q, k) float32), each row
        sorted by score descending (higher = more similar); missing hits are "" / -inf.
        """
        labels, D = self.search_labels(queries, k)
        return self.ids_of(labels), D

    def ids_of(self, labels: np.ndarray) -> list[list[str]]:
        """The ids of labels (q, k) from :meth:`search_labels` (-1 -> ""), as q lists."""
        names, width = self._labels, labels.shape[1]  # only the labels given (not an array of all ids per call)
        flat = [names[j] if j >= 0 else "" for j in labels.ravel().tolist()]
        return [flat[r * width : (r + 1) * width] for r in range(labels.shape[0])]

    def label_values(self, values: Mapping[str, float], missing: float = np.inf) -> np.ndarray:
        """(labels,) float32: ``values[id]`` of each label's id (``missing`` where absent), so a
        per-item table is read by label (``table[labels]``) instead of by id string. Valid
        while :attr:`generation` is unchanged."""
        get = values.get
        return np.fromiter((get(i, missing) for i in self._labels), np.float32, len(self._labels))

    def search_labels(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`search`, with the graph's labels (q, k) int64 (-1 for a missing hit) in
        place of ids (map them with :meth:`ids_of`)."""
        faiss = _faiss()
        Q = as_vectors(queries, "queries", dim=self.dim)
        k = positive_int(k, "k")
        q = Q.shape[0]
        if not self._pos:
            return np.full((q, k), -1, dtype=np.int64), np.full((q, k), -np.inf, dtype=np.float32)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        selector = None
        if self.n_deleted:
            if self._bitmap is None:
                self._bitmap = np.packbits(self._live, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self._labels), faiss.swig_ptr(self._bitmap))
            params.sel = selector
        D, labels = self._index.search(Q, k, params=params)
        del selector  # faiss holds a raw pointer only during the call
        valid = labels >= 0
        D = np.where(valid, D, -np.inf).astype(np.float32)
        tie_key = np.where(valid, labels, np.iinfo(np.int64).max)
        order = np.lexsort((tie_key, -D), axis=1)
        D = np.take_along_axis(D, order, axis=1)
        labels = np.take_along_axis(labels, order, axis=1)
        return labels, D

    # ---- persistence -----------------------------------------------------------------
    def get_state(self, include_graph: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
        """(params, arrays).

        arrays: "vectors" (labels, dim) float32 and "ids" (labels,) unicode for every label of
        the graph, "live" (labels,) bool; with ``include_graph`` also "graph" (bytes,) uint8,
        faiss's own ``serialize_index`` of the HNSW graph. ``from_state`` loads the graph when
        it was written by the same faiss version and otherwise rebuilds from the live vectors,
        so the vectors are the source of truth and the graph is a cache that saves the build.
        """
        faiss = _faiss()
        params = {
            "class": "HnswIndex",
            "dim": self.dim,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "max_deleted_fraction": self.max_deleted_fraction,
            "faiss_version": faiss.__version__,
        }
        arrays = {
            "vectors": self._all_vectors(),
            "ids": np.array(self._labels, dtype=np.str_) if self._labels else np.empty(0, "<U1"),
            "live": self._live.copy(),
        }
        if include_graph:
            arrays["graph"] = np.asarray(faiss.serialize_index(self._index), dtype=np.uint8)
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "HnswIndex":
        faiss = _faiss()
        _check_class(params, cls.__name__)
        try:
            index = cls(params["dim"], params["M"], params["ef_construction"], params["ef_search"],
                        max_deleted_fraction=params.get("max_deleted_fraction", 0.5))
            labels = _state_ids(arrays["ids"], unique=False)
            X = as_vectors(arrays["vectors"], "vectors", dim=index.dim, allow_empty=True)
            live = np.asarray(arrays.get("live", np.ones(len(labels), dtype=bool)), dtype=bool)
        except KeyError as exc:
            raise InvalidInput(f"incomplete HnswIndex state: missing {exc}") from exc
        if not (len(labels) == X.shape[0] == live.shape[0]):
            raise InvalidInput("HnswIndex state: ids, vectors and live differ in length")
        live_ids = [labels[j] for j in np.flatnonzero(live)]
        if len(set(live_ids)) != len(live_ids):
            raise InvalidInput("HnswIndex state: duplicate live ids")
        graph = _load_graph(faiss, params, arrays.get("graph"), len(labels), index.dim)
        if graph is None:
            index.add(live_ids, X[live])
            return index
        graph.hnsw.efSearch = index.ef_search
        index._index = graph
        index._labels = list(labels)
        index._live = live.copy()
        index._pos = {labels[j]: int(j) for j in np.flatnonzero(live)}
        index._changed()
        return index


def _load_graph(faiss, params: dict, blob, n_labels: int, dim: int):
    """The serialized faiss graph if usable (same faiss version, shape, metric), else None."""
    if blob is None or params.get("faiss_version") != faiss.__version__:
        return None
    try:
        graph = faiss.downcast_index(faiss.deserialize_index(np.asarray(blob, dtype=np.uint8)))
    except (RuntimeError, ValueError, TypeError):  # corrupt or foreign bytes (faiss raises RuntimeError): rebuild instead
        return None
    if (not isinstance(graph, faiss.IndexHNSWFlat) or graph.ntotal != n_labels or graph.d != dim
            or graph.metric_type != faiss.METRIC_INNER_PRODUCT):
        return None
    return graph
