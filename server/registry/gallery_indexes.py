"""Where galleries' searchable indexes live, behind one interface (:class:`GalleryIndexes`).

The database is the source of truth; an index is a copy of a gallery's items that answers
top-k searches. :class:`LocalIndexes` keeps one in-memory index per gallery (exact or HNSW),
built lazily from the stored items and updated after each committed enroll or remove.
:class:`~convergent.server.registry.milvus_galleries.MilvusIndexes` keeps one Milvus collection
per gallery, changed *inside* the database's write transaction, so replicas sharing one Milvus
server see changes in commit order. A new
backend is one more class here and a name in ``settings.gallery_backend``.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any, ContextManager, Protocol

import numpy as np

from convergent.server.records import BeforeCommit, GalleryRecord, ModelRecord
from convergent.server.registry.routes import unit
from convergent.server.settings import ServerSettings
from convergent.server.storage.protocols import GalleryStorage

log = logging.getLogger("convergent.galleries")


class GalleryIndexes(Protocol):
    """The galleries' indexes, as the use cases see them.

    ``lock(tenant, name)`` serialises one gallery's writes (and, for in-process indexes, its
    searches); the use cases hold it around a write's transaction and its ``committed`` call.
    An index has ``search(Q (n, d), k) -> (ids, scores)`` (cosine, higher is more similar) and,
    if exact and in process, ``score_all(Q) -> (ids, (n, size) scores)``.
    """

    in_process: bool  # indexes live in this process and follow its commits (CSLS's corrected indexes need that)

    def lock(self, tenant: str, name: str) -> threading.Lock: ...
    def before_commit(self, tenant: str) -> BeforeCommit | None: ...
    def committed(self, tenant: str, name: str, version: int, *, added_ids: list[str] | None = None,
                  added: np.ndarray | None = None, removed_ids: list[str] | None = None) -> None: ...
    def deleted(self, tenant: str, name: str) -> None: ...
    def forget(self, tenant: str, names: builtins.list[str]) -> None: ...
    def searchable(self, tenant: str, gallery: GalleryRecord, model: ModelRecord) -> ContextManager[Any]: ...
    def size(self, index: Any, gallery: GalleryRecord) -> int: ...
    def index_sizes(self) -> dict[str, int]: ...
    def connect(self) -> None: ...
    def close(self) -> None: ...


class _Entry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.index: Any = None  # built on first use (local indexes only)
        self.version = -1       # the gallery version the index reflects


class _PerGallery:
    """One lock (and, for local indexes, one index) per gallery."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._entries_lock = threading.Lock()

    def _entry(self, tenant: str, name: str) -> _Entry:
        with self._entries_lock:
            return self._entries.setdefault((tenant, name), _Entry())

    def lock(self, tenant: str, name: str) -> threading.Lock:
        return self._entry(tenant, name).lock


class LocalIndexes(_PerGallery):
    """In-memory indexes, one per gallery, kept in step with this process's commits; a gallery
    another replica changed (its stored version is newer) is rebuilt from storage on next use."""

    in_process = True

    def __init__(self, galleries: GalleryStorage, device: str) -> None:
        super().__init__()
        self.galleries = galleries
        self.device = device

    def before_commit(self, tenant: str) -> BeforeCommit | None:
        return None

    def committed(self, tenant: str, name: str, version: int, *, added_ids: list[str] | None = None,
                  added: np.ndarray | None = None, removed_ids: list[str] | None = None) -> None:
        """Apply a committed change (the gallery is now at ``version``; the caller holds the
        lock) if the index held the version before; otherwise it missed another replica's
        change and is rebuilt on next use. A removal from an HNSW index drops it too (rebuilt on
        next use): its graph would keep the removed items as waypoints, which a rebuild from
        storage (a restart, another replica) lacks, and answer differently."""
        entry = self._entry(tenant, name)
        # by name: importing the inference package here would load torch on a first enrolment
        if removed_ids and type(entry.index).__name__ == "HnswIndex":
            entry.index = None  # rebuilt on next use, as a restart builds it
        if entry.index is not None and entry.version == version - 1:
            if added_ids:
                entry.index.add(added_ids, unit(added))
            if removed_ids:
                entry.index.remove(removed_ids)
            entry.version = version
        else:
            entry.index = None

    def deleted(self, tenant: str, name: str) -> None:
        self._entry(tenant, name).index = None

    def forget(self, tenant: str, names: builtins.list[str]) -> None:
        """Drop these galleries' indexes (rebuilt from storage on next use)."""
        for name in names:
            entry = self._entry(tenant, name)
            with entry.lock:
                entry.index = None

    @contextlib.contextmanager
    def searchable(self, tenant: str, gallery: GalleryRecord, model: ModelRecord) -> Iterator[Any]:
        """The gallery's index under its lock, built from storage on first use and rebuilt when
        the stored gallery is newer."""
        entry = self._entry(tenant, gallery.name)
        with entry.lock:
            if entry.index is None or entry.version < gallery.version:
                from convergent.server.inference import ExactIndex, HnswIndex

                version, ids, vectors = self.galleries.items(tenant, gallery.name, model.dim)
                if gallery.index_kind == "exact":
                    index = ExactIndex(model.dim, backend="cuda" if self.device == "cuda" else "auto")
                else:
                    index = HnswIndex(model.dim)
                if ids:
                    index.add(ids, unit(vectors))
                entry.index, entry.version = index, version
            yield entry.index

    def size(self, index: Any, gallery: GalleryRecord) -> int:
        return len(index)

    def index_sizes(self) -> dict[str, int]:
        """Vectors held by the in-memory indexes, by index kind (for metrics)."""
        kinds = {"ExactIndex": "exact", "HnswIndex": "hnsw"}
        sizes = {"exact": 0, "hnsw": 0}
        with self._entries_lock:
            entries = list(self._entries.values())
        for entry in entries:
            index = entry.index
            if index is not None:
                kind = kinds.get(type(index).__name__, "other")
                sizes[kind] = sizes.get(kind, 0) + len(index)
        return sizes

    def connect(self) -> None:
        return None

    def close(self) -> None:
        return None


def gallery_indexes(galleries: GalleryStorage, settings: ServerSettings, device: str) -> GalleryIndexes:
    """The backend ``settings.gallery_backend`` names ("local" or "milvus")."""
    if settings.gallery_backend == "milvus":
        from convergent.server.registry.milvus_galleries import MilvusIndexes

        return MilvusIndexes(galleries, settings)
    return LocalIndexes(galleries, device)
