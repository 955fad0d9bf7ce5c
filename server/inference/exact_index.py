"""The exact gallery index: brute-force inner product, blocked matmul + partial selection, ties
broken by insertion order (earlier insertion ranks first); numpy, or torch on CUDA.

Score direction: **higher = more similar** (cosine on unit rows)."""

from __future__ import annotations

import time
from typing import Iterable, Sequence

import numpy as np

from convergent.server.errors import InvalidInput
from convergent.server.inference._validate import as_vectors, new_entries, positive_int, removal_ids
from convergent.server.inference._state import check_class as _check_class, state_ids as _state_ids

try:  # torch is a server dependency; keep the module importable without it
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None

_MIN_CAPACITY = 1024


# --------------------------------------------------------------------------------------
# matmul backend: measured, not assumed
# --------------------------------------------------------------------------------------
_MEASURED_BACKEND: str | None = None


def _matmul_numpy(Q: np.ndarray, G: np.ndarray) -> np.ndarray:
    return Q @ G.T


def _matmul_torch(Q: np.ndarray, G: np.ndarray) -> np.ndarray:
    return (torch.from_numpy(Q) @ torch.from_numpy(G).T).numpy()


_MATMULS = {"numpy": _matmul_numpy, "torch": _matmul_torch}


class _CudaGallery:
    """A device copy of an index's vectors, refreshed when the index changes ("cuda" backend)."""

    def __init__(self) -> None:
        self.tensor: object = None  # a torch tensor on the GPU once loaded
        self.version = -1

    def rows(self, vecs: np.ndarray, n: int, version: int):  # noqa: ANN201 - a torch tensor
        if self.tensor is None or self.version != version:
            self.tensor = torch.as_tensor(np.ascontiguousarray(vecs[:n]), device="cuda")
            self.version = version
        return self.tensor


def matmul_backend(requested: str = "auto") -> str:
    """Resolve ``"auto" | "numpy" | "torch"`` to a concrete backend.

    ``"auto"`` times one (256, 256) x (256, 16384) float32 product with numpy's BLAS and with
    torch's, once per process (~0.1 s), and keeps the faster: which library is fast depends
    on the CPU and on the BLAS each wheel bundles, so it is measured, never hard-coded.
    """
    global _MEASURED_BACKEND
    if requested not in ("auto", "numpy", "torch", "cuda"):
        raise InvalidInput(f"backend must be 'auto', 'numpy', 'torch' or 'cuda', got {requested!r}")
    if requested in ("torch", "cuda") and torch is None:
        raise InvalidInput(f"backend {requested!r} requested but torch is not installed")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("backend 'cuda' requested but no CUDA device is available")
    if requested != "auto":
        return requested
    if _MEASURED_BACKEND is None:
        if torch is None:
            _MEASURED_BACKEND = "numpy"
        else:
            rng = np.random.default_rng(0)
            Q = rng.standard_normal((256, 256), dtype=np.float32)
            G = rng.standard_normal((16384, 256), dtype=np.float32)
            best = {}
            for name, fn in _MATMULS.items():
                fn(Q, G)  # warm-up (thread pools, first-touch)
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn(Q, G)
                    times.append(time.perf_counter() - t0)
                best[name] = min(times)
            _MEASURED_BACKEND = min(best, key=best.get)
    return _MEASURED_BACKEND


def _select_block(S: np.ndarray, kk: int, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top ``kk`` columns of each row of ``S`` (q, b) under the order (score desc, seq asc).

    Returns (scores (q, min(kk, b)), columns (q, min(kk, b)) int64), each row sorted best first.
    ``seq`` (b,) is the insertion number of each column. Partial selection takes kk + 1
    candidates; a row whose kk-th and (kk+1)-th candidate scores are equal has a tie at the
    boundary and is resolved exactly over all its columns with score >= that value (rare:
    duplicate vectors).
    """
    q, b = S.shape
    if kk >= b:
        cols = np.broadcast_to(np.arange(b, dtype=np.int64), (q, b))
    else:
        m = kk + 1
        if torch is not None:  # measured ~3x faster than np.argpartition on 2 cores
            cols = torch.topk(torch.from_numpy(S), m, dim=1, sorted=False).indices.numpy()
        else:  # pragma: no cover
            cols = np.argpartition(S, b - m, axis=1)[:, b - m:]
    vals = np.take_along_axis(S, cols, axis=1)
    order = np.lexsort((seq[cols], -vals), axis=1)
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    if kk >= b:
        return vals, cols
    tied = np.flatnonzero(vals[:, kk - 1] == vals[:, kk])
    cols = np.ascontiguousarray(cols[:, :kk])
    vals = np.ascontiguousarray(vals[:, :kk])
    for r in tied:  # loop over tied query rows only, never over gallery vectors
        c = np.flatnonzero(S[r] >= vals[r, kk - 1])
        c = c[np.lexsort((seq[c], -S[r, c]))[:kk]]
        cols[r] = c
        vals[r] = S[r, c]
    return vals, cols


# --------------------------------------------------------------------------------------
# exact
# --------------------------------------------------------------------------------------
class ExactIndex:
    """Exact top-k by inner product over a contiguous float32 gallery.

    Storage: one (capacity, dim) float32 array grown by doubling; removal moves the last rows
    into the holes (vectorised), so row order is not insertion order -- an insertion number per
    row keeps tie-breaking deterministic (equal scores: earlier insertion first).
    Search multiplies query chunks with gallery blocks of at most ``block_bytes`` of scores
    (default 64 MiB, e.g. 256 queries x 65536 rows), keeping a running top-k, so memory stays
    bounded for a 1M-row gallery.

    Parameters: ``dim`` vector dimension; ``backend`` "auto" (measured, see
    :func:`matmul_backend`), "numpy", "torch" or "cuda" (gallery kept on the GPU, top-k there
    too; exact scores, but equal scores at the k-th place may come in any order);
    ``block_bytes`` score-block budget.
    """

    def __init__(self, dim: int, *, backend: str = "auto", block_bytes: int = 64 << 20):
        self.dim = positive_int(dim, "dim")
        self.block_bytes = positive_int(block_bytes, "block_bytes")
        self.backend_requested = backend
        self.backend = matmul_backend(backend)
        self._matmul = _MATMULS.get(self.backend, _matmul_torch)
        self._cuda = _CudaGallery() if self.backend == "cuda" else None
        self._changes = 0  # +1 per add/remove: tells the device copy when to refresh
        self._vecs = np.empty((0, self.dim), dtype=np.float32)
        self._ids = np.empty(0, dtype=object)
        self._seq = np.empty(0, dtype=np.int64)
        self._pos: dict[str, int] = {}
        self._n = 0
        self._next_seq = 0

    # ---- container -------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __contains__(self, id_: object) -> bool:
        return id_ in self._pos

    def ids(self) -> list[str]:
        """All ids in insertion order."""
        return self._ids[: self._n][np.argsort(self._seq[: self._n], kind="stable")].tolist()

    def vectors(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """Copy of stored vectors (n, dim) float32, for ``ids`` or all in insertion order."""
        if ids is None:
            order = np.argsort(self._seq[: self._n], kind="stable")
        else:
            ids = list(ids)
            missing = [i for i in ids if i not in self._pos]
            if missing:
                raise InvalidInput(f"{len(missing)} id(s) not in the index, e.g. {missing[0]!r}")
            order = np.fromiter((self._pos[i] for i in ids), dtype=np.int64, count=len(ids))
        return self._vecs[order]

    def _reserve(self, n: int) -> None:
        cap = self._vecs.shape[0]
        if n <= cap:
            return
        self._resize(max(n, 2 * cap, _MIN_CAPACITY))

    def _resize(self, cap: int) -> None:
        n = self._n
        vecs = np.empty((cap, self.dim), dtype=np.float32)
        vecs[:n] = self._vecs[:n]
        ids = np.empty(cap, dtype=object)
        ids[:n] = self._ids[:n]
        seq = np.empty(cap, dtype=np.int64)
        seq[:n] = self._seq[:n]
        self._vecs, self._ids, self._seq = vecs, ids, seq

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert ``vectors`` (n, dim) under ``ids`` (n unique non-empty strings).

        InvalidInput for bad shapes / NaN / duplicate ids in the call; AlreadyExists when an id
        is already in the index (remove it first to replace a vector).
        """
        ids, X = new_entries(ids, vectors, self.dim, lambda new: [i for i in new if i in self._pos])
        m, n = len(ids), self._n
        if m == 0:
            return
        self._reserve(n + m)
        self._vecs[n : n + m] = X
        self._ids[n : n + m] = ids
        self._seq[n : n + m] = np.arange(self._next_seq, self._next_seq + m)
        self._pos.update(zip(ids, range(n, n + m)))
        self._n += m
        self._changes += 1
        self._next_seq += m

    def remove(self, ids: Iterable[str]) -> int:
        """Delete ``ids`` (unknown ones ignored); returns the number removed."""
        gone = {i for i in removal_ids(ids) if i in self._pos}
        if not gone:
            return 0
        pos = np.sort(np.fromiter((self._pos.pop(i) for i in gone), dtype=np.int64, count=len(gone)))
        n, m = self._n, len(gone)
        n_new = n - m
        holes = pos[pos < n_new]
        tail = np.arange(n_new, n, dtype=np.int64)
        movers = tail[~np.isin(tail, pos)]  # same length as holes
        self._vecs[holes] = self._vecs[movers]
        self._ids[holes] = self._ids[movers]
        self._seq[holes] = self._seq[movers]
        self._pos.update(zip(self._ids[holes].tolist(), holes.tolist()))
        self._ids[n_new:n] = None
        self._n = n_new
        self._changes += 1
        cap = self._vecs.shape[0]
        if cap > _MIN_CAPACITY and n_new < cap // 4:  # give memory back after mass removal
            self._resize(max(2 * n_new, _MIN_CAPACITY))
        return m

    # ---- search ----------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Exact top-k by inner product.

        queries (q, dim) -> (ids: q lists of min(k, len) strings, scores (q, min(k, len)) float32),
        each row sorted by score descending (higher = more similar), ties by insertion order.
        """
        Q = as_vectors(queries, "queries", dim=self.dim)
        k = positive_int(k, "k")
        n, q = self._n, Q.shape[0]
        kk = min(k, n)
        if kk == 0:
            return [[] for _ in range(q)], np.empty((q, 0), dtype=np.float32)
        if self._cuda is not None:
            return self._search_cuda(Q, kk)
        out_pos = np.empty((q, kk), dtype=np.int64)
        out_val = np.empty((q, kk), dtype=np.float32)
        q_chunk = max(1, min(q, 1024))
        block = max(kk + 1, self.block_bytes // (4 * q_chunk))
        seq = self._seq[:n]
        for qs in range(0, q, q_chunk):
            Qc = Q[qs : qs + q_chunk]
            best_v = np.empty((Qc.shape[0], 0), dtype=np.float32)
            best_p = np.empty((Qc.shape[0], 0), dtype=np.int64)
            for gs in range(0, n, block):
                ge = min(n, gs + block)
                S = self._matmul(Qc, self._vecs[gs:ge])
                v, c = _select_block(S, kk, seq[gs:ge])
                best_v = np.concatenate([best_v, v], axis=1)
                best_p = np.concatenate([best_p, c + gs], axis=1)
                if best_v.shape[1] > kk:
                    order = np.lexsort((seq[best_p], -best_v), axis=1)[:, :kk]
                    best_v = np.take_along_axis(best_v, order, axis=1)
                    best_p = np.take_along_axis(best_p, order, axis=1)
            out_val[qs : qs + q_chunk] = best_v
            out_pos[qs : qs + q_chunk] = best_p
        return self._ids[out_pos].tolist(), out_val

    def _search_cuda(self, Q: np.ndarray, kk: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-kk on the GPU: the gallery stays on the device, queries go in chunks."""
        G = self._cuda.rows(self._vecs, self._n, self._changes)
        rows = max(1, self.block_bytes // (4 * self._n))
        values, positions = [], []
        for start in range(0, Q.shape[0], rows):
            S = torch.as_tensor(np.ascontiguousarray(Q[start : start + rows]), device="cuda") @ G.T
            top = torch.topk(S, kk, dim=1, largest=True, sorted=True)
            values.append(top.values.cpu().numpy())
            positions.append(top.indices.cpu().numpy())
        return self._ids[np.vstack(positions)].tolist(), np.vstack(values).astype(np.float32)

    def score_all(self, queries: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Dense scores of every query against the whole gallery.

        queries (q, dim) -> (ids (n,) in insertion order, scores (q, n) float32, higher = more
        similar). Memory is q * n * 4 bytes: meant for small galleries (fusion, evaluation).
        """
        Q = as_vectors(queries, "queries", dim=self.dim)
        order = np.argsort(self._seq[: self._n], kind="stable")
        S = self._matmul(Q, self._vecs[: self._n])
        return self._ids[order].tolist(), np.ascontiguousarray(S[:, order])

    # ---- persistence -----------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(params, arrays): arrays "vectors" (n, dim) float32 and "ids" (n,) unicode, insertion order."""
        order = np.argsort(self._seq[: self._n], kind="stable")
        params = {
            "class": "ExactIndex",
            "dim": self.dim,
            "backend": self.backend_requested,
            "block_bytes": self.block_bytes,
        }
        ids = self._ids[order].tolist()
        arrays = {"vectors": self._vecs[order], "ids": np.array(ids, dtype=np.str_) if ids else np.empty(0, "<U1")}
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "ExactIndex":
        _check_class(params, cls.__name__)
        try:
            index = cls(params["dim"], backend=params.get("backend", "auto"), block_bytes=params.get("block_bytes", 64 << 20))
            index.add(_state_ids(arrays["ids"]), arrays["vectors"])
        except KeyError as exc:
            raise InvalidInput(f"incomplete ExactIndex state: missing {exc}") from exc
        return index
